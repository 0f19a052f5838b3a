// The NodeSession Durable Object with a protocol-speaking agent on a real WebSocket: command and
// result routing, deadlines through alarms, eviction / hibernation mid-session, late and duplicate
// answers, replacement by a second connection, liveness, and refusal of bad frames.
import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CLOSE, MAX_FRAME_BYTES, PING_FRAME } from "../../protocol/wire.ts";
import { agentsClosedAfterEach, api, eventually, expectError, json, TestAgent, vmInfo, session } from "./support.ts";

const agents = agentsClosedAfterEach();

/** A connected node with one VM in `state`. */
async function nodeWithVm(libvirtState: "running" | "shutoff" | "paused" = "running") {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  const vm = vmInfo(`vm-${s.name}`, libvirtState);
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { ...s, vm };
}
const getVm = async (id: string) => (await json(await api(`/api/vms/${id}`))).vm;
const getRequest = async (id: string) => (await json(await api(`/api/requests/${id}`))).request;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("power actions through the session", () => {
  it("start: 202 with STARTING, the command carries id and deadline, ack + result finish it", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("shutoff");
    const res = await json(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 202);
    expect(res).toMatchObject({ success: true, vm: { id: vm.uuid, state: "STARTING" }, request: { status: "sent" } });
    const cmd = await agent.next("vm.start");
    expect(cmd.id).toBe(res.request.id);
    expect(cmd.payload).toMatchObject({ vmId: vm.uuid, name: vm.name });
    expect(cmd.payload.deadline).toBeGreaterThan(Date.now());
    expect(await getRequest(cmd.id)).toMatchObject({
      id: cmd.id,
      kind: "vm.start",
      vm_id: vm.uuid,
      node_id: nodeId,
      status: "sent",
      error: null,
      finishedAt: null,
    });
    agent.reply(cmd, "ack");
    agent.reply(cmd, "result", { state: "RUNNING", libvirtState: "running" });
    await eventually(async () => expect((await getRequest(cmd.id)).status).toBe("done"));
    expect(await getVm(vm.uuid)).toMatchObject({ state: "RUNNING", libvirtState: "running" });
    const events = (await json(await api(`/api/vms/${vm.uuid}/events`))).events;
    expect(events[0]).toMatchObject({ action: "start_done", fromState: "STARTING", toState: "RUNNING" });
    expect(events[1]).toMatchObject({ action: "start", actor: "admin", fromState: "STOPPED", toState: "STARTING" });
  });

  it("stop?force=true sends vm.forceStop; stop sends vm.stop with the grace period", async () => {
    const { agent, vm } = await nodeWithVm("running");
    const p = api(`/api/vms/${vm.uuid}/stop?force=true&wait=true`, { method: "POST" });
    const cmd = await agent.next("vm.forceStop");
    agent.reply(cmd, "ack");
    agent.reply(cmd, "result", { state: "STOPPED", libvirtState: "shutoff" });
    expect((await json(await p)).vm.state).toBe("STOPPED");
  });

  it("graceful stop whose guest stays up reports the real state (timedOut)", async () => {
    const { agent, vm } = await nodeWithVm("running");
    const p = api(`/api/vms/${vm.uuid}/stop?wait=true`, { method: "POST" });
    const cmd = await agent.next("vm.stop");
    expect(cmd.payload.graceMs).toBe(1500);
    agent.reply(cmd, "ack");
    agent.reply(cmd, "result", { state: "RUNNING", libvirtState: "running", timedOut: true });
    const body = await json(await p);
    expect(body.vm.state).toBe("RUNNING");
    expect(body.request.status).toBe("done");
  });

  it("409 naming the state when not allowed, with the reset_state hint; nothing is sent", async () => {
    const { agent, vm } = await nodeWithVm("running");
    const err = await expectError(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 409, "invalid_state");
    expect(err.message).toContain("RUNNING");
    expect(err.message).toContain("reset_state");
    await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" });
    await agent.next("vm.stop");
    const again = await expectError(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 409, "invalid_state");
    expect(again.message).toContain("STOPPING");
    expect(agent.frames.filter((f) => f.type.startsWith("vm."))).toHaveLength(0);
  });

  it("no ack by the deadline: request failed agent_timeout by the alarm, VM left STOPPING (the stuck case); wait=true gets 504", async () => {
    const { agent, vm } = await nodeWithVm("running");
    const started = Date.now();
    const res = await api(`/api/vms/${vm.uuid}/stop?wait=true`, { method: "POST" });
    const err = await expectError(res, 504, "agent_timeout");
    expect(err.message).toMatch(/acknowledge/);
    expect(Date.now() - started).toBeLessThan(4000); // ACK_TIMEOUT_MS is 1 s in tests
    const cmd = await agent.next("vm.stop");
    expect(await getRequest(cmd.id)).toMatchObject({ status: "failed", error: { code: "agent_timeout" } });
    expect((await getRequest(cmd.id)).finishedAt).not.toBeNull();
    expect((await getVm(vm.uuid)).state).toBe("STOPPING");
    // A late answer to the timed-out request changes nothing and is counted as ignored.
    const before = (await session((await getVm(vm.uuid)).node_id).stats()).ignoredAnswers;
    agent.reply(cmd, "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () =>
      expect((await session((await getVm(vm.uuid)).node_id).stats()).ignoredAnswers).toBe(before + 1),
    );
    expect((await getVm(vm.uuid)).state).toBe("STOPPING");
  });

  it("acknowledged but no outcome in time: failed agent_timeout after the outcome deadline", async () => {
    const { agent, vm } = await nodeWithVm("shutoff");
    const res = await json(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 202);
    const cmd = await agent.next("vm.start");
    agent.reply(cmd, "ack");
    await sleep(1200); // past the ack deadline: the ack moved the deadline on
    expect((await getRequest(res.request.id)).status).toBe("sent");
    await eventually(
      async () =>
        expect(await getRequest(res.request.id)).toMatchObject({ status: "failed", error: { code: "agent_timeout" } }),
      5000,
    );
    expect((await getVm(vm.uuid)).state).toBe("STARTING");
  });

  it("an agent error undoes the transition; expired maps to status expired", async () => {
    const { agent, vm } = await nodeWithVm("shutoff");
    const p = api(`/api/vms/${vm.uuid}/start?wait=true`, { method: "POST" });
    const cmd = await agent.next("vm.start");
    agent.reply(cmd, "error", { code: "libvirt_error", message: "boom" });
    await expectError(await p, 502, "agent_error");
    expect((await getVm(vm.uuid)).state).toBe("STOPPED");
    expect((await getRequest(cmd.id)).status).toBe("failed");

    const p2 = api(`/api/vms/${vm.uuid}/start?wait=true`, { method: "POST" });
    const cmd2 = await agent.next("vm.start");
    agent.reply(cmd2, "error", { code: "expired", message: "deadline passed" });
    await expectError(await p2, 504, "agent_timeout");
    expect(await getRequest(cmd2.id)).toMatchObject({ status: "expired", error: { code: "expired" } });
    expect((await getVm(vm.uuid)).state).toBe("STOPPED");
  });

  it("a result counts once: duplicates and unknown ids are ignored and counted", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("running");
    const res = await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
    const cmd = await agent.next("vm.stop");
    agent.reply(cmd, "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () => expect((await getRequest(res.request.id)).status).toBe("done"));
    const gen = (await env.DB.prepare("SELECT generation FROM vms WHERE id = ?")
      .bind(vm.uuid)
      .first<{ generation: number }>())!.generation;
    agent.reply(cmd, "result", { state: "RUNNING", libvirtState: "running" });
    agent.reply(cmd, "ack");
    agent.send({ type: "result", id: "no-such-request", payload: { state: "RUNNING", libvirtState: "running" } });
    await eventually(async () => expect((await session(nodeId).stats()).ignoredAnswers).toBe(3));
    expect((await getVm(vm.uuid)).state).toBe("STOPPED");
    const after = (await env.DB.prepare("SELECT generation FROM vms WHERE id = ?")
      .bind(vm.uuid)
      .first<{ generation: number }>())!.generation;
    expect(after).toBe(gen);
  });

  it("generation guard: a stop answer arriving after a reset changes nothing", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("running");
    await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
    const stop = await agent.next("vm.stop");
    agent.reply(stop, "ack");
    await json(await api(`/api/vms/${vm.uuid}/reset_state?force=true`, { method: "POST" }));
    expect((await getVm(vm.uuid)).state).toBe("STOPPED");
    // The reset reads the log excerpt for its event after answering: no log here. Its forced STOPPED
    // is checked with the hypervisor at once: the domain is off.
    agent.reply(await agent.next("vm.logs"), "error", { code: "log_not_found", message: "no log" });
    agent.reply(await agent.next("vm.state"), "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () => expect((await session(nodeId).stats()).inFlight).toBe(1)); // the stop alone
    await json(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 202);
    const start = await agent.next("vm.start");
    // The old stop's answer (it is still in flight) must not touch the VM now STARTING under a newer generation.
    agent.reply(stop, "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () => expect((await getRequest(stop.id)).status).toBe("done"));
    expect((await getVm(vm.uuid)).state).toBe("STARTING");
    agent.reply(start, "result", { state: "RUNNING", libvirtState: "running" });
    await eventually(async () => expect((await getVm(vm.uuid)).state).toBe("RUNNING"));
    expect((await session(nodeId).stats()).inFlight).toBe(0);
  });

  it("the agent dropping mid-request fails the request at once and answers 503, VM left transitional", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("running");
    const p = api(`/api/vms/${vm.uuid}/stop?wait=true`, { method: "POST" });
    const cmd = await agent.next("vm.stop");
    agent.reply(cmd, "ack");
    await sleep(50);
    agent.ws.close(1000, "bye");
    const err = await expectError(await p, 503, "node_offline");
    expect(err.message).toMatch(/disconnect/);
    expect(await getRequest(cmd.id)).toMatchObject({ status: "failed", error: { code: "agent_disconnected" } });
    expect((await getVm(vm.uuid)).state).toBe("STOPPING");
    await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
  });

  it("node offline at dispatch: 503 node_offline and the VM is not changed", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("running");
    agent.ws.close(1000, "bye");
    await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
    await expectError(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 503, "node_offline");
    expect((await getVm(vm.uuid)).state).toBe("RUNNING");
  });

  it("socket gone while D1 still says connected: the session's refusal restores the VM and closes the request", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("running");
    agent.ws.close(1000, "bye");
    await eventually(async () => expect((await session(nodeId).stats()).connected).toBe(false));
    await env.DB.prepare("UPDATE nodes SET connected = 1, last_seen_at = ? WHERE id = ?")
      .bind(Date.now(), nodeId)
      .run();
    await expectError(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 503, "node_offline");
    expect((await getVm(vm.uuid)).state).toBe("RUNNING");
    const failed = await env.DB.prepare("SELECT status, error FROM requests WHERE vm_id = ? ORDER BY created_at DESC")
      .bind(vm.uuid)
      .first<{ status: string; error: string }>();
    expect(failed?.status).toBe("failed");
    expect(JSON.parse(failed!.error).code).toBe("node_offline");
  });
});

describe("session lifecycle", () => {
  it("a second connection replaces the first (CLOSE.replaced) and fails what was sent on it", async () => {
    const { agent, vm, nodeId, credential } = await nodeWithVm("running");
    const res = await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
    await agent.next("vm.stop");
    const second = await TestAgent.connect(credential);
    agents.push(second);
    expect((await agent.waitClosed()).code).toBe(CLOSE.replaced);
    expect(await getRequest(res.request.id)).toMatchObject({ status: "failed", error: { code: "agent_disconnected" } });
    // The node stays online through the new connection, which gets the next command.
    expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(true);
    const logs = api(`/api/vms/${vm.uuid}/logs?lines=1`);
    const cmd = await second.next("vm.logs");
    second.reply(cmd, "result", {
      logPath: "/l",
      logSizeBytes: 0,
      linesReturned: 0,
      truncated: false,
      lastModified: null,
      chunks: 0,
    });
    expect((await json(await logs)).qemuLog).toBe("");
  });

  it("racing connections for one node: exactly one stays open and gets commands", async () => {
    const { agent, vm, credential } = await nodeWithVm("running");
    const racers = await Promise.all([
      TestAgent.connect(credential),
      TestAgent.connect(credential),
      TestAgent.connect(credential),
    ]);
    agents.push(...racers);
    expect((await agent.waitClosed()).code).toBe(CLOSE.replaced);
    // The replaced racers' closes come on their own sockets, in no order with the others.
    await eventually(async () => expect(racers.filter((r) => r.closed)).toHaveLength(2));
    const open = racers.filter((r) => !r.closed);
    expect(open).toHaveLength(1);
    for (const r of racers.filter((x) => x.closed)) expect(r.closed!.code).toBe(CLOSE.replaced);
    const logs = api(`/api/vms/${vm.uuid}/logs?lines=1`);
    const cmd = await open[0].next("vm.logs");
    open[0].reply(cmd, "result", {
      logPath: "/l",
      logSizeBytes: 0,
      linesReturned: 0,
      truncated: false,
      lastModified: null,
      chunks: 0,
    });
    expect((await json(await logs)).linesReturned).toBe(0);
  });

  it("eviction (hibernation) mid-request loses nothing: the answer after wake still applies once", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("running");
    const res = await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
    const cmd = await agent.next("vm.stop");
    await evictDurableObject(session(nodeId));
    agent.reply(cmd, "ack");
    agent.reply(cmd, "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () => expect((await getRequest(res.request.id)).status).toBe("done"));
    expect((await getVm(vm.uuid)).state).toBe("STOPPED");
    // The socket survived hibernation: pings are still answered and commands still flow.
    agent.send(PING_FRAME);
    expect((await agent.next("pong")).type).toBe("pong");
    expect((await session(nodeId).stats()).connected).toBe(true);
  });

  it("a route's query is held in memory while its caller waits: an object reset answers the caller and its row is still closed (session_lost)", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("running");
    const logs = api(`/api/vms/${vm.uuid}/logs?lines=1`);
    const first = await agent.next("vm.logs");
    // The object is reset (as a deploy or a crash would) while its caller waits: its memory and the
    // agent's socket go with it.
    await runInDurableObject(session(nodeId), (_instance, state) => state.abort("reset by the test")).catch(() => {});
    await expectError(await logs, 503, "node_offline");
    expect((await agent.waitClosed()).code).toBeGreaterThan(0);
    await eventually(async () =>
      expect(await getRequest(first.id)).toMatchObject({ status: "failed", error: { code: "session_lost" } }),
    );
  });

  it("a route's query whose agent stays silent fails at its deadline without an alarm (agent_timeout)", async () => {
    const { agent, vm } = await nodeWithVm("running");
    const logs = api(`/api/vms/${vm.uuid}/logs?lines=1`);
    const cmd = await agent.next("vm.logs");
    await expectError(await logs, 504, "agent_timeout");
    expect(Date.now()).toBeGreaterThanOrEqual(cmd.payload.deadline - 50); // not before its deadline
    await eventually(async () =>
      expect(await getRequest(cmd.id)).toMatchObject({ status: "failed", error: { code: "agent_timeout" } }),
    );
  });

  it("a deadline survives eviction: the stored in-flight request expires through the alarm", async () => {
    const { agent, vm, nodeId } = await nodeWithVm("running");
    const res = await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
    await agent.next("vm.stop");
    await evictDurableObject(session(nodeId));
    await sleep(1100);
    // Run the alarm now rather than waiting for the scheduler.
    await runDurableObjectAlarm(session(nodeId));
    expect(await getRequest(res.request.id)).toMatchObject({ status: "failed", error: { code: "agent_timeout" } });
    expect((await getVm(vm.uuid)).state).toBe("STOPPING");
  });

  it("a silent agent is declared dead by the alarm (CLOSE.dead) and the node shown offline", async () => {
    const { agent, nodeId } = await nodeWithVm("running");
    expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(true);
    const closed = await agent.waitClosed(10_000); // OFFLINE_AFTER_MS is 4 s in tests
    expect(closed.code).toBe(CLOSE.dead);
    const node = (await json(await api(`/api/nodes/${nodeId}`))).node;
    expect(node.connected).toBe(false);
  }, 15_000);

  it("pings keep a node alive without D1 writes per ping; the sweep refreshes lastSeenAt", async () => {
    const { agent, nodeId } = await nodeWithVm("running");
    const first = (await json(await api(`/api/nodes/${nodeId}`))).node.lastSeenAt;
    for (let i = 0; i < 10; i++) {
      agent.send(PING_FRAME);
      await agent.next("pong");
      await sleep(500);
    }
    // Past OFFLINE_AFTER_MS (4 s here): a real liveness check has come and found the pings.
    expect(agent.closed).toBeNull();
    expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(true);
    // The real check may have come too soon after the hello to be due a write (LAST_SEEN_WRITE_MS,
    // 2 s here); the next one, run now, comes more than 2 s of pings after it.
    await runDurableObjectAlarm(session(nodeId));
    const node = (await json(await api(`/api/nodes/${nodeId}`))).node;
    expect(node.connected).toBe(true);
    expect(Date.parse(node.lastSeenAt)).toBeGreaterThan(Date.parse(first));
  }, 15_000);

  it("a connected node's lastSeenAt reaches D1 at most every LAST_SEEN_WRITE_MS (2 s here); going offline writes its true last sign", async () => {
    const { agent, nodeId } = await nodeWithVm("running");
    const node = async () => (await json(await api(`/api/nodes/${nodeId}`))).node;
    const first = Date.parse((await node()).lastSeenAt);
    for (let i = 0; i < 4; i++) {
      agent.send(PING_FRAME);
      await agent.next("pong");
      await runDurableObjectAlarm(session(nodeId)); // a liveness sweep, with a fresher sign each time
      await sleep(100);
    }
    expect(Date.parse((await node()).lastSeenAt)).toBe(first); // swept, alive, not written
    await sleep(2_100 - (Date.now() - first));
    agent.send(PING_FRAME);
    await agent.next("pong");
    await runDurableObjectAlarm(session(nodeId));
    const written = Date.parse((await node()).lastSeenAt);
    expect(written - first).toBeGreaterThanOrEqual(2_000);
    // Gone: offline at once, with the last sign of life the session had.
    await sleep(300);
    agent.send(PING_FRAME);
    await agent.next("pong");
    const lastPing = Date.now();
    agent.ws.close(1000, "bye");
    const offline = await eventually(async () => {
      const n = await node();
      expect(n.connected).toBe(false);
      return n;
    });
    expect(Date.parse(offline.lastSeenAt)).toBeGreaterThanOrEqual(lastPing - 50);
  });

  it("a live node's session wakes when the node would turn offline as of its last sign of life, not on a fixed beat", async () => {
    const connecting = Date.now();
    const { agent, nodeId } = await nodeWithVm("running");
    const connected = Date.now();
    const alarmAt = () => runInDurableObject(session(nodeId), async (_o, state) => state.storage.getAlarm());
    // OFFLINE_AFTER_MS is 4 s here; the first check is jittered into its second half of the time
    // the node connected, which lies between `connecting` and `connected`.
    expect((await alarmAt())!).toBeGreaterThanOrEqual(connecting + 2_000);
    expect((await alarmAt())!).toBeLessThanOrEqual(connected + 4_000);
    await sleep(1_000);
    const pinging = Date.now();
    agent.send(PING_FRAME);
    await agent.next("pong"); // answered by the runtime: the object is not woken
    await runDurableObjectAlarm(session(nodeId));
    // The next check is due OFFLINE_AFTER_MS after the ping, which the runtime took after `pinging`.
    const next = (await alarmAt())!;
    expect(next).toBeGreaterThanOrEqual(pinging + 4_000);
    expect(next).toBeLessThanOrEqual(Date.now() + 4_000 + 1);
    expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(true);
  });

  it("a liveness check that finds the agent alive stores nothing: every row an object writes is billed", async () => {
    const { agent, nodeId } = await nodeWithVm("running");
    const stored = () =>
      runInDurableObject(session(nodeId), async (_o, state) => ({
        kv: JSON.stringify([...state.storage.kv.list()]),
        alarm: await state.storage.getAlarm(),
      }));
    agent.send(PING_FRAME);
    await agent.next("pong");
    await runDurableObjectAlarm(session(nodeId)); // the first check: from here on, checks follow the pings
    const before = await stored();
    for (let i = 0; i < 3; i++) {
      agent.send(PING_FRAME);
      await agent.next("pong");
      await runDurableObjectAlarm(session(nodeId));
    }
    const after = await stored();
    // Within LAST_SEEN_WRITE_MS (2 s here): no stored key changed, only the alarm moved on with the pings.
    expect(after.kv).toBe(before.kv);
    expect(after.alarm!).toBeGreaterThan(before.alarm!);
    expect(agent.closed).toBeNull();
  });

  it("the node view is offline when lastSeenAt is stale, even if the session has not swept", async () => {
    const { nodeId } = await nodeWithVm("running");
    // Staler than OFFLINE_AFTER_MS + LAST_SEEN_WRITE_MS (4 s + 2 s here).
    await env.DB.prepare("UPDATE nodes SET last_seen_at = ? WHERE id = ?")
      .bind(Date.now() - 60_000, nodeId)
      .run();
    const node = (await json(await api(`/api/nodes/${nodeId}`))).node;
    expect(node.connected).toBe(false);
  });
});

describe("bad frames", () => {
  const cases: [string, () => string | ArrayBuffer, number][] = [
    ["not JSON", () => "{nope", CLOSE.protocolError],
    ["unknown type", () => JSON.stringify({ type: "rm -rf", id: "1", payload: {} }), CLOSE.protocolError],
    [
      "wrong payload",
      () => JSON.stringify({ type: "hello", id: "1", payload: { agentVersion: 5 } }),
      CLOSE.protocolError,
    ],
    ["binary", () => new Uint8Array([1, 2, 3]).buffer, CLOSE.protocolError],
    [
      "oversized",
      () => JSON.stringify({ type: "log.chunk", id: "x", payload: { seq: 0, text: "a".repeat(MAX_FRAME_BYTES + 10) } }),
      CLOSE.tooLarge,
    ],
    [
      "inventory with a path-like name",
      () =>
        JSON.stringify({
          type: "inventory",
          id: "1",
          payload: { syncId: "s", seq: 0, done: true, vms: [{ ...vmInfo("x"), name: "../../etc/passwd" }] },
        }),
      CLOSE.protocolError,
    ],
  ];
  for (const [name, frame, code] of cases) {
    it(`${name} -> close ${code}, node offline, no crash`, async () => {
      const { agent, nodeId } = await TestAgent.forNewNode();
      agents.push(agent);
      agent.send(frame());
      expect((await agent.waitClosed()).code).toBe(code);
      await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
    });
  }

  it("a flood of frames is cut off with CLOSE.flood", async () => {
    const { agent } = await TestAgent.forNewNode();
    agents.push(agent);
    const frame = JSON.stringify({ type: "ack", id: "flood", payload: {} });
    for (let i = 0; i < 1500 && !agent.closed; i++) agent.send(frame);
    expect((await agent.waitClosed()).code).toBe(CLOSE.flood);
  });
});
