// Protocol faults against the real control plane (wrangler dev, real WebSockets), injected by the
// simulated agent (bench/fleet-agent.ts, a named fake host on the real agent link) or a bare socket:
// answers twice, after their deadline, a reset racing a late stop answer, frames out of order,
// malformed, oversized or binary frames, and an agent flooding messages. Nothing is applied twice,
// nothing late overwrites a newer state, and a misbehaving agent only ever loses its own link.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOSE, MAX_FRAME_BYTES, type Command } from "../../protocol/wire.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import {
  createNode,
  eventually,
  getNode,
  getVm,
  json,
  listVms,
  startControlPlane,
  waitConnected,
  waitRequestSettled,
} from "../e2e/journey.ts";
import { enroll, rawSocket, SimAgent, simVms, type SimVm } from "../../bench/fleet-agent.ts";

let cp: ControlPlane;
const agents: SimAgent[] = [];

beforeAll(async () => {
  cp = await startControlPlane();
});
afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop()));
  await cp?.dispose();
});

async function simNode(name: string, vms: SimVm[], hold = false) {
  const { node, joinToken } = await createNode(cp, `${name}-${Date.now()}`);
  const { credential } = await enroll(cp.url, joinToken, name);
  const agent = new SimAgent(cp.url, credential, vms, { backoffBaseMs: 100, backoffCapMs: 500 });
  if (hold) agent.policy = () => "hold";
  agents.push(agent);
  await agent.start();
  await eventually(`${name} inventory`, async () => (await listVms(cp, node.id)).length === vms.length);
  return { nodeId: node.id, credential, agent };
}

const command = (agent: SimAgent, type: Command["type"], vmId: string) =>
  eventually(`${type} received`, async () => agent.received.find((c) => c.type === type && c.payload.vmId === vmId));
const post = (path: string) => cp.api(path, { method: "POST" });
const requestOf = async (res: Response) => (await json<{ request: { id: string } }>(res)).request.id;
const running = (name: string): SimVm => ({ uuid: crypto.randomUUID(), name, libvirtState: "running" });

describe("answers", () => {
  it("an answer sent twice (and a contradicting third) counts once", async () => {
    const vm = running("twice");
    const { agent } = await simNode("twice", [vm], true);
    const id = await requestOf(await post(`/api/vms/${vm.uuid}/stop`));
    const cmd = await command(agent, "vm.stop", vm.uuid);
    agent.answer(cmd); // ack + result: shutoff
    agent.answer(cmd);
    agent.send({ type: "result", id: cmd.id, payload: { state: "RUNNING", libvirtState: "running", timedOut: false } });
    expect((await waitRequestSettled(cp, id)).status).toBe("done");
    await new Promise((r) => setTimeout(r, 500));
    expect((await getVm(cp, vm.uuid)).state).toBe("STOPPED");
    const events = (await json(await cp.api(`/api/vms/${vm.uuid}/events`))).events as { toState: string }[];
    expect(events[0]?.toState).toBe("STOPPED"); // the newest is the stop, not the bogus RUNNING
  });

  it("an answer after its deadline changes nothing: the request stays failed, the VM stuck until a reset", async () => {
    const vm = running("late");
    const { agent } = await simNode("late", [vm], true);
    const id = await requestOf(await post(`/api/vms/${vm.uuid}/stop`));
    const cmd = await command(agent, "vm.stop", vm.uuid);
    const failed = await waitRequestSettled(cp, id, 10_000);
    expect(failed).toMatchObject({ status: "failed", error: { code: "agent_timeout" } });
    agent.send({ type: "ack", id: cmd.id, payload: {} });
    agent.send({ type: "result", id: cmd.id, payload: { state: "STOPPED", libvirtState: "shutoff", timedOut: false } });
    await new Promise((r) => setTimeout(r, 500));
    expect((await json(await cp.api(`/api/requests/${id}`))).request.status).toBe("failed");
    expect((await getVm(cp, vm.uuid)).state).toBe("STOPPING");
    agent.policy = () => "answer";
    expect(await json(await post(`/api/vms/${vm.uuid}/reset_state`))).toMatchObject({
      source: "hypervisor",
      vm: { state: "RUNNING" },
    });
  });

  it("a reset racing a late stop answer: the reset's hypervisor state stands", async () => {
    const vm = running("race");
    const { agent } = await simNode("race", [vm]);
    agent.policy = (c) => (c.type === "vm.stop" ? "hold" : "answer");
    const id = await requestOf(await post(`/api/vms/${vm.uuid}/stop`));
    const cmd = await command(agent, "vm.stop", vm.uuid);
    agent.send({ type: "ack", id: cmd.id, payload: {} }); // acknowledged: a graceful stop in progress
    const reset = await json(await post(`/api/vms/${vm.uuid}/reset_state`));
    expect(reset).toMatchObject({ source: "hypervisor", previousState: "STOPPING", vm: { state: "RUNNING" } });
    // The stop's answer now arrives, claiming shutoff: older than the reset, it must not apply.
    agent.send({ type: "result", id: cmd.id, payload: { state: "STOPPED", libvirtState: "shutoff", timedOut: false } });
    await waitRequestSettled(cp, id);
    await new Promise((r) => setTimeout(r, 500));
    expect((await getVm(cp, vm.uuid)).state).toBe("RUNNING");
  });
});

describe("frames out of order", () => {
  it("a result before its ack, an inventory's last chunk before its first, a log chunk after its result", async () => {
    const vms = simVms(700, "ooo").map((v) => ({ ...v, libvirtState: "shutoff" as const }));
    const { nodeId, agent } = await simNode("ooo", vms.slice(0, 1), true);
    const target = vms[0];
    const id = await requestOf(await post(`/api/vms/${target.uuid}/start`));
    const cmd = await command(agent, "vm.start", target.uuid);
    agent.send({ type: "result", id: cmd.id, payload: { state: "RUNNING", libvirtState: "running", timedOut: false } });
    agent.send({ type: "ack", id: cmd.id, payload: {} });
    expect((await waitRequestSettled(cp, id)).status).toBe("done");
    expect((await getVm(cp, target.uuid)).state).toBe("RUNNING");

    const info = vms.map((v) => agent.info({ ...v, libvirtState: v === target ? "running" : v.libvirtState }));
    agent.send({ type: "inventory", id: "i1", payload: { syncId: "ooo", seq: 1, done: true, vms: info.slice(500) } });
    agent.send({
      type: "inventory",
      id: "i0",
      payload: { syncId: "ooo", seq: 0, done: false, vms: info.slice(0, 500) },
    });
    await eventually("700 VMs, none missing", async () => {
      const all = await json(await cp.api(`/api/vms?node_id=${nodeId}&limit=500`));
      const rest = all.nextCursor
        ? await json(await cp.api(`/api/vms?node_id=${nodeId}&limit=500&cursor=${all.nextCursor}`))
        : { vms: [] };
      const list = [...all.vms, ...rest.vms] as { missing: boolean }[];
      return list.length === 700 && list.every((v) => !v.missing);
    });

    agent.policy = (c) => (c.type === "vm.logs" ? "hold" : "answer");
    const logs = cp.api(`/api/vms/${target.uuid}/logs?lines=5`);
    const logCmd = await command(agent, "vm.logs", target.uuid);
    agent.send({
      type: "result",
      id: logCmd.id,
      payload: {
        logPath: "/x.log",
        logSizeBytes: 10,
        linesReturned: 1,
        truncated: false,
        lastModified: null,
        chunks: 1,
      },
    });
    agent.send({ type: "log.chunk", id: logCmd.id, payload: { seq: 0, text: "too late\n" } });
    const res = await logs;
    expect(res.status).toBe(502); // a clear error, never a silently short log
    expect(await json(res)).toMatchObject({ success: false, error: { code: "agent_error" } });
    expect((await getNode(cp, nodeId)).connected).toBe(true);
  });
});

describe("bad frames and floods", () => {
  const cases: [string, (ws: import("ws").WebSocket) => void, number][] = [
    ["not JSON", (ws) => ws.send("{nope"), CLOSE.protocolError],
    [
      "an unknown type",
      (ws) => ws.send(JSON.stringify({ type: "vm.delete", id: "x", payload: {} })),
      CLOSE.protocolError,
    ],
    ["a binary frame", (ws) => ws.send(Buffer.from([1, 2, 3])), CLOSE.protocolError],
    ["a frame over MAX_FRAME_BYTES", (ws) => ws.send("x".repeat(MAX_FRAME_BYTES + 10)), CLOSE.tooLarge],
    [
      "a VM name that walks out of the log directory",
      (ws) =>
        ws.send(
          JSON.stringify({
            type: "vm.changed",
            id: "x",
            payload: {
              removed: [],
              vms: [
                {
                  uuid: crypto.randomUUID(),
                  name: "../../etc/passwd",
                  state: "RUNNING",
                  libvirtState: "running",
                  vcpus: 1,
                  memoryMiB: 1,
                },
              ],
            },
          }),
        ),
      CLOSE.protocolError,
    ],
  ];
  let victim: Awaited<ReturnType<typeof simNode>>;
  let bystander: { nodeId: string; vm: SimVm };
  beforeAll(async () => {
    victim = await simNode("bad-frames", simVms(3, "bf"));
    await victim.agent.stop();
    const vm = running("bystander");
    bystander = { nodeId: (await simNode("bystander", [vm])).nodeId, vm };
  });

  for (const [name, send, code] of cases) {
    it(`${name} → close ${code}; the node's records stay, others unaffected`, async () => {
      const { ws, closed } = await rawSocket(cp.url, victim.credential);
      send(ws);
      expect((await closed).code).toBe(code);
      await waitConnected(cp, victim.nodeId, false, 10_000);
      expect(await listVms(cp, victim.nodeId)).toHaveLength(3);
      expect((await json(await cp.api(`/api/vms?q=passwd`))).vms).toEqual([]);
      expect((await getNode(cp, bystander.nodeId)).connected).toBe(true);
    });
  }

  it("a flood of frames is cut off on arrival (CLOSE.flood, or CLOSE.overloaded for a full backlog); the control plane and other nodes carry on", async () => {
    const { ws, closed } = await rawSocket(cp.url, victim.credential);
    const frame = JSON.stringify({ type: "vm.changed", id: "f", payload: { vms: [], removed: [] } });
    let sent = 0;
    while (ws.readyState === ws.OPEN && sent < 5_000) {
      ws.send(frame);
      sent++;
    }
    // Refused on arrival either way: the frame rate's bucket runs dry, or (when frames arrive faster
    // than a loaded runtime handles them) the inbox's bounded backlog fills first.
    expect([CLOSE.flood, CLOSE.overloaded]).toContain((await closed).code);
    expect((await fetch(`${cp.url}/api/health`)).status).toBe(200);
    const reset = await json(await post(`/api/vms/${bystander.vm.uuid}/reset_state`));
    expect(reset).toMatchObject({ source: "hypervisor", vm: { state: "RUNNING" } });
    expect(await listVms(cp, victim.nodeId)).toHaveLength(3);
  });
});
