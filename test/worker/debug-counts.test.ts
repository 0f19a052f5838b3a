// The debug counts a local soak run reads (GET /api/debug/counts) do not exist in a normal
// deployment, and the node session's in-memory maps give back what a request held once the request
// is over: answered, or cut off by its agent's link going away.
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
const held = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);

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

  it("an answered logs query leaves nothing behind (waiter, chunks, byte count, sent write)", async () => {
    const { agent, vm, nodeId } = await vmOnline();
    const answered = api(`/api/vms/${vm.uuid}/logs?lines=2`);
    const cmd = await agent.next("vm.logs");
    agent.reply(cmd, "log.chunk", { seq: 0, text: "line 1\nline 2\n" });
    expect(held(await ledgerCounts(nodeId))).toBeGreaterThan(0); // mid-answer: the chunk is held
    agent.reply(cmd, "result", {
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: 14,
      linesReturned: 2,
      truncated: false,
      lastModified: "2026-01-01T00:00:00.000Z",
      chunks: 1,
    });
    expect((await answered).status).toBe(200);
    await eventually(async () => expect(held(await ledgerCounts(nodeId))).toBe(0));
  });

  it("a query cut off by its agent's link going away leaves nothing behind", async () => {
    const { agent, vm, nodeId } = await vmOnline();
    const cut = api(`/api/vms/${vm.uuid}/logs?lines=2`);
    const cmd = await agent.next("vm.logs");
    agent.reply(cmd, "log.chunk", { seq: 0, text: "half an answer\n" });
    expect(held(await ledgerCounts(nodeId))).toBeGreaterThan(0);
    agent.close();
    expect((await cut).status).toBeGreaterThanOrEqual(400);
    await eventually(async () => expect(held(await ledgerCounts(nodeId))).toBe(0));
  });
});
