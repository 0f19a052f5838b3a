// The node's revision of its VM records (`nodes.vms_rev`, set anew by D1 triggers): the node's session
// keeps the records' digest at a revision and, while the agent's digest equals it and the revision
// has not moved, reads no VM row. A record changed behind the session's back (a Worker route, a
// statement straight into D1) moves the revision, so the next digest still sees the difference and
// asks for that bucket again.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { digestBucket, inventoryDigest } from "../../protocol/digest.ts";
import { WIRE_FEATURES, type VmInfo } from "../../protocol/wire.ts";
import type { RecordsDigest } from "../../worker/session/anti-entropy.ts";
import {
  agentsClosedAfterEach,
  api,
  createNode,
  enroll,
  eventually,
  json,
  session,
  TestAgent,
  unique,
  uuid,
  vmInfo,
  type Frame,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const inBucket = (b: string, name: string) => vmInfo(name, "running", b + uuid().slice(1));
const revOf = async (nodeId: string) =>
  (await env.DB.prepare("SELECT vms_rev AS rev FROM nodes WHERE id = ?").bind(nodeId).first<{ rev: number }>())!.rev;
/** What the session keeps in its own storage: the records' digest at a revision. */
const kept = (nodeId: string) =>
  runInDurableObject(session(nodeId), (_instance, state) => state.storage.kv.get<RecordsDigest>("recordsDigest"));

/** A node whose agent announced every feature (scoped resyncs among them), with these VMs. */
async function nodeWith(vms: VmInfo[]) {
  const { joinToken } = await createNode(unique("rev"));
  const { nodeId, credential } = await enroll(joinToken);
  const agent = await TestAgent.connect(credential);
  agents.push(agent);
  agent.hello("host.test", [...WIRE_FEATURES]);
  agent.inventory(vms);
  for (const vm of vms) await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { agent, nodeId };
}

let digests = 0;
/** Sends a digest of `vms` and waits until the session has handled it (its digest kept at the node's
 *  current revision); answers whether it asked for a resync, and which. */
async function digestOf(agent: TestAgent, nodeId: string, vms: VmInfo[]): Promise<Frame | null> {
  agent.send({ type: "inventory.digest", id: `digest-${++digests}`, payload: inventoryDigest(vms) });
  const rev = await revOf(nodeId);
  await eventually(async () => expect((await kept(nodeId))?.rev).toBe(rev));
  await sleep(200); // a resync, if any, is sent after the comparison
  const i = agent.frames.findIndex((f) => f.type === "resync");
  return i >= 0 ? agent.frames.splice(i, 1)[0] : null;
}

/** Answers a scoped resync with the host's VMs in its buckets, as the agent does. */
function answer(agent: TestAgent, resync: Frame, host: VmInfo[]) {
  const vms = host.filter((v) => resync.payload.buckets.includes(digestBucket(v.uuid)));
  agent.send({
    type: "inventory",
    id: `${resync.id}-0`,
    payload: { syncId: resync.id, seq: 0, done: true, vms, scope: resync.payload },
  });
}

describe("the node's revision of its VM records", () => {
  it("moves with each change the digest covers, by any writer, and with nothing else", async () => {
    const vm = inBucket("a", "rev-a");
    const { nodeId } = await nodeWith([vm]);
    const other = await nodeWith([]);
    const revs = async () => [await revOf(nodeId), await revOf(other.nodeId)];
    let last = await revs();
    /** Runs `sql` on the VM's row; answers which of the two nodes' revisions moved. */
    const moved = async (sql: string, ...args: unknown[]) => {
      await env.DB.prepare(sql)
        .bind(...args, vm.uuid)
        .run();
      const now = await revs();
      const which = now.map((r, i) => r !== last[i]);
      last = now;
      return which;
    };
    const set = (assignments: string) => `UPDATE vms SET ${assignments} WHERE id = ?`;
    expect(await moved(set("updated_at = ?, libvirt_state = ?, generation = generation + 1"), 1, "running")).toEqual([
      false,
      false,
    ]);
    expect(await moved(set("state = state, name = name, missing = missing"))).toEqual([false, false]);
    expect(await moved(set("name = ?"), "rev-a renamed")).toEqual([true, false]);
    expect(await moved(set("state = ?"), "STOPPED")).toEqual([true, false]);
    expect(await moved(set("vcpus = vcpus + 1"))).toEqual([true, false]);
    expect(await moved(set("memory_mib = memory_mib + 1"))).toEqual([true, false]);
    expect(await moved(set("missing = 1"))).toEqual([true, false]);
    // A VM moving from one node to another moves both revisions; a deleted one its last node's.
    expect(await moved(set("node_id = ?"), other.nodeId)).toEqual([true, true]);
    expect(await moved("DELETE FROM vms WHERE id = ?")).toEqual([false, true]);
  });
});

describe("a digest against records changed behind the session's back", () => {
  it("a statement straight into D1 (rename, insert, delete) is caught by the next digest and resynced", async () => {
    const a = inBucket("a", "behind-a");
    const b = inBucket("b", "behind-b");
    const c = inBucket("c", "behind-c");
    const host = [a, b, c];
    const { agent, nodeId } = await nodeWith(host);
    expect(await digestOf(agent, nodeId, host)).toBeNull();
    const first = await kept(nodeId);
    expect(first?.digest).toEqual(inventoryDigest(host));
    // Unchanged: the same digest again asks for nothing and keeps what was kept.
    expect(await digestOf(agent, nodeId, host)).toBeNull();
    expect(await kept(nodeId)).toEqual(first);

    // Renamed in D1: the agent's digest still equals the kept one, but the revision moved.
    await env.DB.prepare("UPDATE vms SET name = ? WHERE id = ?").bind("renamed in d1", a.uuid).run();
    const renamed = await digestOf(agent, nodeId, host);
    expect(renamed?.payload).toEqual({ buckets: ["a"] });
    answer(agent, renamed!, host);
    await eventually(async () => expect((await json(await api(`/api/vms/${a.uuid}`))).vm.name).toBe(a.name));

    // A row the host does not have, inserted into D1 for this node: asked about, then marked missing.
    const ghost = `d${uuid().slice(1)}`;
    await env.DB.prepare(
      `INSERT INTO vms (id, name, node_id, state, vcpus, memory_mib, state_updated_at, created_at, updated_at)
       VALUES (?, 'ghost', ?, 'RUNNING', 1, 512, 0, 0, 0)`,
    )
      .bind(ghost, nodeId)
      .run();
    const inserted = await digestOf(agent, nodeId, host);
    expect(inserted?.payload).toEqual({ buckets: ["d"] });
    answer(agent, inserted!, host);
    await eventually(async () => expect((await json(await api(`/api/vms/${ghost}`))).vm.missing).toBe(true));

    // A row deleted from D1: the host's VM is reported again.
    await env.DB.prepare("DELETE FROM vms WHERE id = ?").bind(b.uuid).run();
    const deleted = await digestOf(agent, nodeId, host);
    expect(deleted?.payload).toEqual({ buckets: ["b"] });
    answer(agent, deleted!, host);
    await eventually(async () => expect((await api(`/api/vms/${b.uuid}`)).status).toBe(200));

    // Settled: equal again, and nothing asked.
    expect(await digestOf(agent, nodeId, host)).toBeNull();
  });

  it("a forced reset_state through the REST API (written by the Worker, not the session) is caught too", async () => {
    const vm = inBucket("e", "behind-rest");
    const host = [vm];
    const { agent, nodeId } = await nodeWith(host);
    expect(await digestOf(agent, nodeId, host)).toBeNull();

    const body = await json(await api(`/api/vms/${vm.uuid}/reset_state?force=true`, { method: "POST" }));
    expect(body.vm.state).toBe("STOPPED");
    // The Worker asks the host about the state it forced: left unanswered here (a lost answer), so
    // only the digest can notice that the host still runs it.
    await agent.next("vm.state", 5000);
    await eventually(async () => expect((await session(nodeId).stats()).inFlight).toBe(0), 10_000);
    const resync = await digestOf(agent, nodeId, host);
    expect(resync?.payload).toEqual({ buckets: ["e"] });
    answer(agent, resync!, host);
    await eventually(async () => expect((await json(await api(`/api/vms/${vm.uuid}`))).vm.state).toBe("RUNNING"));
  });
});
