// The debug counts a local soak run reads (GET /api/debug/counts) do not exist in a normal
// deployment, and the node session's in-memory maps give back what a request held once the request
// is over: answered, cut off by its agent's link going away, or past its deadline.
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { RequestLedger } from "../../worker/session/ledger.ts";
import type { NodeSession } from "../../worker/session/node-session.ts";
import { agentsClosedAfterEach, api, eventually, expectError, TestAgent, session, vmInfo } from "./support.ts";

const agents = agentsClosedAfterEach();

/** The session's request ledger, read inside the object (its maps are the object's memory). */
const ledgerCounts = (nodeId: string) =>
  runInDurableObject(session(nodeId), (instance: NodeSession) =>
    (instance as unknown as { ledger: RequestLedger }).ledger.counts(),
  );
/** What a route's logs query holds once its agent's first chunk is read: the caller's waiter, the
 *  query itself with its deadline timer (in memory, not storage), the chunk and its byte count. A
 *  route's query writes no `sent` row, so it holds no sent write. */
const MID_ANSWER = { ledgerWaiters: 1, ledgerWaited: 1, ledgerLogChunks: 1, ledgerLogBytes: 1, ledgerSentWrites: 0 };
const NOTHING_HELD = { ledgerWaiters: 0, ledgerWaited: 0, ledgerLogChunks: 0, ledgerLogBytes: 0, ledgerSentWrites: 0 };

describe("debug counts in a normal deployment", () => {
  it("GET /api/debug/counts answers 404 like any unknown route, even to the admin", async () => {
    const err = await expectError(await api("/api/debug/counts"), 404, "not_found");
    expect(err.message).toBe("no route GET /api/debug/counts");
    await expectError(await api("/api/debug/nothing-here"), 404, "not_found");
  });

  it("the node session gives no debug or cost counts over RPC", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    expect(await session(s.nodeId).debugCounts()).toBeNull();
    expect(await session(s.nodeId).costCounts()).toBeNull();
  });
});

describe("the session's in-memory maps are pruned when their request ends", () => {
  async function vmOnline() {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vm = vmInfo(`vm-${s.name}`, "running");
    s.agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    return { ...s, vm };
  }

  it("an answered logs query leaves nothing behind (waiter, deadline timer, chunks, byte count)", async () => {
    const { agent, vm, nodeId } = await vmOnline();
    const answered = api(`/api/vms/${vm.uuid}/logs?lines=2`);
    const cmd = await agent.next("vm.logs");
    expect(await ledgerCounts(nodeId)).toMatchObject({ ledgerWaiters: 1, ledgerWaited: 1, ledgerLogChunks: 0 });
    agent.reply(cmd, "log.chunk", { seq: 0, text: "line 1\nline 2\n" });
    // The chunk reaches the session on its own time: wait until it is read and held.
    await eventually(async () => expect(await ledgerCounts(nodeId)).toEqual(MID_ANSWER));
    agent.reply(cmd, "result", {
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: 14,
      linesReturned: 2,
      truncated: false,
      lastModified: "2026-01-01T00:00:00.000Z",
      chunks: 1,
    });
    const res = await answered;
    expect(res.status).toBe(200);
    expect((await res.json<{ qemuLog: string }>()).qemuLog).toBe("line 1\nline 2\n");
    await eventually(async () => expect(await ledgerCounts(nodeId)).toEqual(NOTHING_HELD));
  });

  it("a query cut off by its agent's link going away leaves nothing behind", async () => {
    const { agent, vm, nodeId } = await vmOnline();
    const cut = api(`/api/vms/${vm.uuid}/logs?lines=2`);
    const cmd = await agent.next("vm.logs");
    agent.reply(cmd, "log.chunk", { seq: 0, text: "half an answer\n" });
    await eventually(async () => expect(await ledgerCounts(nodeId)).toEqual(MID_ANSWER));
    agent.close();
    expect((await cut).status).toBeGreaterThanOrEqual(400);
    await eventually(async () => expect(await ledgerCounts(nodeId)).toEqual(NOTHING_HELD));
  });

  it("a query whose agent stops answering mid-answer leaves nothing behind once its deadline passes", async () => {
    const { agent, vm, nodeId } = await vmOnline();
    const late = api(`/api/vms/${vm.uuid}/logs?lines=2`);
    const cmd = await agent.next("vm.logs");
    agent.reply(cmd, "log.chunk", { seq: 0, text: "the rest never comes\n" });
    await eventually(async () => expect(await ledgerCounts(nodeId)).toEqual(MID_ANSWER));
    const err = await expectError(await late, 504, "agent_timeout");
    expect(err.message).toMatch(/vm\.logs/);
    await eventually(async () => expect(await ledgerCounts(nodeId)).toEqual(NOTHING_HELD));
  });
});
