// Inventory from the agent into D1: chunked syncs, a 5,000-domain host within D1's bound-parameter
// limit, missing / reappearing VMs, transitions not overridden by polling, and node isolation
// (UUID conflicts and deleted nodes' VMs: vm-ownership.test.ts).
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { agentsClosedAfterEach, api, eventually, json, TestAgent, uuid, vmInfo } from "./support.ts";

const agents = agentsClosedAfterEach();
async function newAgent() {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  return s;
}
const vmRow = (id: string) => env.DB.prepare("SELECT * FROM vms WHERE id = ?").bind(id).first<Record<string, any>>();
const eventsOf = async (id: string) => (await json<{ events: any[] }>(await api(`/api/vms/${id}/events`))).events;

describe("inventory", () => {
  it("upserts a chunked full sync and fills node details from hello", async () => {
    const { agent, nodeId } = await newAgent();
    const list = Array.from({ length: 23 }, (_, i) =>
      vmInfo(`chunked-${String(i).padStart(2, "0")}`, i % 2 ? "running" : "shutoff"),
    );
    agent.inventory(list, "s1", 5);
    await eventually(async () => expect((await json(await api(`/api/vms?node_id=${nodeId}`))).vms).toHaveLength(23));
    const node = (await json(await api(`/api/nodes/${nodeId}`))).node;
    expect(node).toMatchObject({
      connected: true,
      hostname: "host.test",
      agentVersion: "0.1.0-test",
      libvirtVersion: "9.0.0",
      vmCount: 23,
    });
    const one = (await json(await api(`/api/vms/${list[1].uuid}`))).vm;
    expect(one).toMatchObject({
      name: "chunked-01",
      state: "RUNNING",
      node_id: nodeId,
      vcpus: 2,
      memoryMiB: 2048,
      missing: false,
    });
    expect((await eventsOf(list[1].uuid))[0]).toMatchObject({
      action: "discovered",
      toState: "RUNNING",
      source: "agent",
    });
  });

  it("syncs 5,000 domains with every statement under 100 bound parameters", async () => {
    // The Durable Object runs in this isolate, so wrapping D1's bind() sees every statement it prepares.
    const proto = Object.getPrototypeOf(env.DB.prepare("SELECT 1")) as { bind: (...a: unknown[]) => unknown };
    const original = proto.bind;
    let maxParams = 0;
    let statements = 0;
    proto.bind = function (this: unknown, ...args: unknown[]) {
      maxParams = Math.max(maxParams, args.length);
      statements++;
      return original.apply(this, args);
    };
    try {
      const { agent, nodeId } = await newAgent();
      const list = Array.from({ length: 5000 }, (_, i) => vmInfo(`bulk-${String(i).padStart(5, "0")}`));
      const started = Date.now();
      agent.inventory(list, "big");
      await eventually(async () => {
        const n = await env.DB.prepare("SELECT count(*) AS n FROM vms WHERE node_id = ?")
          .bind(nodeId)
          .first<{ n: number }>();
        expect(n?.n).toBe(5000);
      }, 30_000);
      const elapsed = Date.now() - started;
      expect(maxParams).toBeGreaterThan(0);
      expect(maxParams).toBeLessThanOrEqual(100);
      expect(statements).toBeLessThan(200); // ~3 per 500-VM chunk, not one per VM
      expect(elapsed).toBeLessThan(20_000);
      // Keyset pages over them: every VM once, in name order, each page an index range scan.
      const pageStart = Date.now();
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { vms: { name: string }[]; nextCursor: string | null } = await json(
          await api(`/api/vms?node_id=${nodeId}&limit=500${cursor ? `&cursor=${cursor}` : ""}`),
        );
        seen.push(...page.vms.map((v) => v.name));
        cursor = page.nextCursor;
      } while (cursor);
      expect(seen).toEqual(list.map((v) => v.name));
      expect(Date.now() - pageStart).toBeLessThan(10_000);
      for (const where of ["node_id = ?1", "state = ?1", "1 = 1"]) {
        const plan = await env.DB.prepare(
          `EXPLAIN QUERY PLAN SELECT * FROM vms WHERE ${where} AND (name, id) > (?2, ?3) ORDER BY name, id LIMIT 501`,
        )
          .bind(nodeId, "bulk-02500", "x")
          .all<{ detail: string }>();
        const detail = plan.results.map((r) => r.detail).join(" | ");
        expect(detail, where).toMatch(/USING INDEX/);
        expect(detail, where).not.toMatch(/TEMP B-TREE/);
      }
      // A resync of the same 5,000 changes nothing and marks nothing missing.
      agent.inventory(list, "big2");
      await new Promise((r) => setTimeout(r, 300));
      const missing = await env.DB.prepare("SELECT count(*) AS n FROM vms WHERE node_id = ? AND missing = 1")
        .bind(nodeId)
        .first<{ n: number }>();
      expect(missing?.n).toBe(0);
    } finally {
      proto.bind = original;
    }
  }, 60_000);

  it("marks VMs absent from a completed sync missing (not deleted) and unmarks them when they return", async () => {
    const { agent } = await newAgent();
    const a = vmInfo("stay-a");
    const b = vmInfo("gone-b");
    agent.inventory([a, b], "first");
    await eventually(async () => expect((await vmRow(b.uuid))?.name).toBe("gone-b"));
    agent.inventory([a], "second");
    await eventually(async () => expect((await json(await api(`/api/vms/${b.uuid}`))).vm.missing).toBe(true));
    expect((await json(await api(`/api/vms/${a.uuid}`))).vm.missing).toBe(false);
    expect((await eventsOf(b.uuid))[0]).toMatchObject({ action: "missing" });
    agent.inventory([a, b], "third");
    await eventually(async () => expect((await json(await api(`/api/vms/${b.uuid}`))).vm.missing).toBe(false));
    expect((await eventsOf(b.uuid))[0]).toMatchObject({ action: "reappeared" });
  });

  it("chunks sent back to back are applied in order: a resync marks nothing missing, not even for a moment", async () => {
    const { agent } = await newAgent();
    const list = Array.from({ length: 40 }, (_, i) => vmInfo(`order-${i}`));
    agent.inventory(list, "one", 4);
    await eventually(async () => expect(await vmRow(list[39].uuid)).toBeTruthy());
    agent.inventory(list, "two", 4);
    agent.inventory(list, "three", 4);
    await new Promise((r) => setTimeout(r, 400));
    const missing = await env.DB.prepare(
      `SELECT count(*) AS n FROM vm_events WHERE action IN ('missing', 'reappeared') AND vm_id IN (SELECT value FROM json_each(?))`,
    )
      .bind(JSON.stringify(list.map((v) => v.uuid)))
      .first<{ n: number }>();
    expect(missing?.n).toBe(0);
  });

  it("does not mark anything missing for a sync that never completes", async () => {
    const { agent } = await newAgent();
    const a = vmInfo("partial-a");
    const b = vmInfo("partial-b");
    agent.inventory([a, b], "full");
    await eventually(async () => expect(await vmRow(b.uuid)).toBeTruthy());
    agent.send({ type: "inventory", id: "p0", payload: { syncId: "partial", seq: 0, done: false, vms: [a] } });
    await new Promise((r) => setTimeout(r, 200));
    expect((await vmRow(b.uuid))?.missing).toBe(0);
  });

  it("applies vm.changed: state changes with an event, removed domains marked missing", async () => {
    const { agent } = await newAgent();
    const a = vmInfo("changed-a", "running");
    const b = vmInfo("changed-b", "running");
    agent.inventory([a, b]);
    await eventually(async () => expect(await vmRow(b.uuid)).toBeTruthy());
    agent.send({
      type: "vm.changed",
      id: "c1",
      payload: { vms: [{ ...a, state: "PAUSED", libvirtState: "paused" }], removed: [b.uuid] },
    });
    await eventually(async () => expect((await json(await api(`/api/vms/${a.uuid}`))).vm.state).toBe("PAUSED"));
    expect((await json(await api(`/api/vms/${b.uuid}`))).vm.missing).toBe(true);
    expect((await eventsOf(a.uuid))[0]).toMatchObject({
      action: "state_changed",
      fromState: "RUNNING",
      toState: "PAUSED",
      source: "agent",
    });
  });

  it("records libvirt_state but keeps the state of a VM in a control-plane transition", async () => {
    const { agent } = await newAgent();
    const a = vmInfo("transit-a", "running");
    agent.inventory([a]);
    await eventually(async () => expect(await vmRow(a.uuid)).toBeTruthy());
    const res = await json(await api(`/api/vms/${a.uuid}/stop`, { method: "POST" }), 202);
    expect(res.vm.state).toBe("STOPPING");
    await agent.next("vm.stop"); // never answered
    agent.send({
      type: "vm.changed",
      id: "c2",
      payload: { vms: [{ ...a, state: "STOPPED", libvirtState: "shutoff" }], removed: [] },
    });
    await eventually(async () => expect((await vmRow(a.uuid))?.libvirt_state).toBe("shutoff"));
    expect((await vmRow(a.uuid))?.state).toBe("STOPPING");
  });

  it("isolation: another node's UUIDs in an inventory are ignored, never moved or overwritten", async () => {
    const owner = await newAgent();
    const intruder = await newAgent();
    const theirs = vmInfo("owned-by-a", "running");
    owner.agent.inventory([theirs]);
    await eventually(async () => expect((await vmRow(theirs.uuid))?.node_id).toBe(owner.nodeId));
    const mine = vmInfo("intruder-own");
    intruder.agent.inventory([{ ...theirs, name: "hijacked", state: "STOPPED", libvirtState: "shutoff" }, mine]);
    intruder.agent.send({
      type: "vm.changed",
      id: "x",
      payload: {
        vms: [{ ...theirs, name: "hijacked2", state: "PAUSED", libvirtState: "paused" }],
        removed: [theirs.uuid],
      },
    });
    await eventually(async () => expect(await vmRow(mine.uuid)).toBeTruthy());
    await new Promise((r) => setTimeout(r, 200));
    const row = await vmRow(theirs.uuid);
    expect(row).toMatchObject({ node_id: owner.nodeId, name: "owned-by-a", state: "RUNNING", missing: 0 });
    // The intruder's only trace is the conflict it raised, for an admin to look at.
    const events = await eventsOf(theirs.uuid);
    expect(events.filter((e) => e.actor === `agent:${intruder.nodeId}`).map((e) => e.action)).toEqual([
      "uuid_conflict",
    ]);
    // The intruder's completed sync does not mark the owner's VM missing either.
    expect((await json(await api(`/api/vms/${theirs.uuid}`))).vm.missing).toBe(false);
  });

  it("a uuid in upper case is the same VM", async () => {
    const { agent } = await newAgent();
    const id = uuid();
    agent.inventory([vmInfo("case-vm", "running", id.toUpperCase())]);
    await eventually(async () => expect((await json(await api(`/api/vms/${id}`))).vm.name).toBe("case-vm"));
  });
});
