// On the Worker: the record tells the truth. Features in the welcome; long operations kept `sent`
// while the agent reports progress (and failed when it goes silent or at the cap); an agent error's
// state adopted; states written by the control plane on its own checked with the hypervisor at once;
// reset_state answering with what the hypervisor said; a force stop overriding a graceful stop;
// anti-entropy digests answered with scoped resyncs. The test agent speaks the protocol on a real
// WebSocket into the node's Durable Object.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { inventoryDigest, digestBucket } from "../../protocol/digest.ts";
import { PROTOCOL_VERSION, WIRE_FEATURES, type VmInfo } from "../../protocol/wire.ts";
import {
  agentsClosedAfterEach,
  api,
  createNode,
  enroll,
  eventually,
  expectError,
  json,
  TestAgent,
  unique,
  uuid,
  vmInfo,
  type Frame,
  session,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const getVm = async (id: string) => (await json(await api(`/api/vms/${id}`))).vm;
const getRequest = async (id: string) => (await json(await api(`/api/requests/${id}`))).request;
const events = async (id: string) => (await json(await api(`/api/vms/${id}/events`))).events as any[];

/** A node whose agent announced `features` in its hello (all of them unless told), with these VMs. */
async function nodeWith(vms: VmInfo[], features: readonly string[] = WIRE_FEATURES) {
  const name = unique("truth");
  const { joinToken } = await createNode(name);
  const { nodeId, credential } = await enroll(joinToken);
  const agent = await TestAgent.connect(credential);
  agents.push(agent);
  agent.send({
    type: "hello",
    id: "h1",
    payload: {
      agentVersion: "0.2.0-test",
      hostname: "h",
      libvirtVersion: "10.0.0",
      protocolVersion: PROTOCOL_VERSION,
      features,
    },
  });
  agent.inventory(vms);
  for (const vm of vms) await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { agent, nodeId, credential, name };
}

const progress = (agent: TestAgent, cmd: Frame, nextWithinMs: number, elapsedMs = 0) =>
  agent.send({ type: "progress", id: cmd.id, payload: { phase: "working", elapsedMs, nextWithinMs } });

describe("features and long operations", () => {
  it("the welcome lists every feature the control plane handles", async () => {
    const { joinToken } = await createNode(unique("feat"));
    const { credential } = await enroll(joinToken);
    const res = await (await import("cloudflare:test")).SELF.fetch("http://cp.test/agent/connect", {
      headers: { upgrade: "websocket", authorization: `Bearer ${credential}` },
    });
    const ws = res.webSocket!;
    ws.accept();
    const welcome = await new Promise<any>((resolve) =>
      ws.addEventListener("message", (e) => resolve(JSON.parse(e.data as string)), { once: true }),
    );
    ws.close(1000, "done");
    expect(welcome.type).toBe("welcome");
    expect(welcome.payload.features).toEqual([...WIRE_FEATURES]);
  });

  it("a start reported in progress stays sent past ack + query deadline, and ?wait=true answers 200 RUNNING when it ends", async () => {
    const vm = vmInfo("slow-start", "shutoff");
    const { agent } = await nodeWith([vm]);
    const waiting = api(`/api/vms/${vm.uuid}/start?wait=true`, { method: "POST" });
    const start = await agent.next("vm.start");
    agent.reply(start, "ack");
    const rowDeadline = async () =>
      (await env.DB.prepare("SELECT deadline_at, acked_at FROM requests WHERE id = ?")
        .bind(start.id)
        .first<{ deadline_at: number; acked_at: number | null }>())!;
    // The ack's deadline (the operation cap here, 5 s from the request) is what the row holds first.
    const acked = await eventually(async () => {
      const row = await rowDeadline();
      expect(row.acked_at).not.toBeNull();
      return row.deadline_at;
    });
    // ACK 1 s + QUERY 1 s in this suite: progress every 400 ms carries it for 3 s. Each report
    // announces the next within 1.5 s, so a slow machine's late report still comes in time.
    for (let t = 0; t < 3000; t += 400) {
      progress(agent, start, 1500, t);
      // The row's deadline moves with the first report, to twice the announced interval after it:
      // earlier than the ack's, which it would have kept had the reports not reached it.
      if (t === 0) await eventually(async () => expect((await rowDeadline()).deadline_at).toBeLessThan(acked));
      await sleep(400);
    }
    expect(await getRequest(start.id)).toMatchObject({ status: "sent" });
    expect((await getVm(vm.uuid)).state).toBe("STARTING");
    agent.reply(start, "result", { state: "RUNNING", libvirtState: "running" });
    const body = await json(await waiting);
    expect(body.vm.state).toBe("RUNNING");
    expect(await getRequest(start.id)).toMatchObject({ status: "done" });
  });

  it("an agent that stops reporting progress fails the request once the next report is overdue; the VM is asked about at once", async () => {
    const vm = vmInfo("silent-start", "shutoff");
    const { agent } = await nodeWith([vm]);
    await json(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 202);
    const start = await agent.next("vm.start");
    agent.reply(start, "ack");
    progress(agent, start, 1500);
    await sleep(2000); // past ack + query (2 s from the ack), within 2 x 1.5 s of the report
    expect((await getRequest(start.id)).status).toBe("sent");
    const failed = await eventually(async () => {
      const r = await getRequest(start.id);
      expect(r.status).toBe("failed");
      return r;
    }, 6000);
    expect(failed.error).toMatchObject({ code: "agent_timeout" });
    expect(failed.error.message).toMatch(/stopped reporting/);
    // Left STARTING with no request in flight: the hypervisor is asked now, and its answer taken.
    const q = await agent.next("vm.state", 5000);
    agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" });
    await eventually(async () => expect((await getVm(vm.uuid)).state).toBe("RUNNING"));
  });

  it("progress never carries a request past the operation cap (OPERATION_CAP_MS from its creation)", async () => {
    const vm = vmInfo("capped-start", "shutoff");
    const { agent } = await nodeWith([vm]);
    const t0 = Date.now();
    await json(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 202);
    const start = await agent.next("vm.start");
    agent.reply(start, "ack");
    let status = "sent";
    while (status === "sent" && Date.now() - t0 < 12_000) {
      progress(agent, start, 1500, Date.now() - t0); // overdue only after 3 s: the cap (5 s) ends it first
      await sleep(400);
      status = (await getRequest(start.id)).status;
    }
    const r = await getRequest(start.id);
    expect(r.status).toBe("failed");
    expect(r.error.message).toMatch(/operation cap/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(5000); // not before the cap of this suite (5 s)
  }, 20_000);
});

describe("agent errors and verified writes", () => {
  it("an error on a power action carrying the domain's state: the VM takes that state, not the one before", async () => {
    const vm = vmInfo("err-state", "shutoff");
    const { agent } = await nodeWith([vm]);
    await json(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 202);
    const start = await agent.next("vm.start");
    agent.reply(start, "error", {
      code: "libvirt_error",
      message: "internal error: qemu unexpectedly closed the monitor",
      state: "ERROR",
      libvirtState: "crashed",
    });
    await eventually(async () =>
      expect(await getVm(vm.uuid)).toMatchObject({ state: "ERROR", libvirtState: "crashed" }),
    );
    const [ev] = await events(vm.uuid);
    expect(ev).toMatchObject({ action: "power_failed", fromState: "STARTING", toState: "ERROR", source: "hypervisor" });
    expect(await getRequest(start.id)).toMatchObject({ status: "failed", error: { code: "libvirt_error" } });
  });

  it("an error without a state: the VM goes back to its state before, which is then checked with the hypervisor at once", async () => {
    const vm = vmInfo("err-nostate", "shutoff");
    const { agent } = await nodeWith([vm]);
    await json(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 202);
    const start = await agent.next("vm.start");
    agent.reply(start, "error", { code: "internal", message: "boom" });
    const q = await agent.next("vm.state");
    expect((await getVm(vm.uuid)).state).toBe("STOPPED"); // the undo
    agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" }); // it did start after all
    await eventually(async () => expect((await getVm(vm.uuid)).state).toBe("RUNNING"));
  });

  it("a force reset of a running VM on a connected node: checked at once, shown RUNNING with running_after_forced_reset, never stopped", async () => {
    const vm = vmInfo("forced-live", "running");
    const { agent } = await nodeWith([vm]);
    const body = await json(await api(`/api/vms/${vm.uuid}/reset_state?force=true`, { method: "POST" }));
    expect(body).toMatchObject({ source: "forced", vm: { state: "STOPPED" } });
    const q = await agent.next("vm.state");
    expect(q.payload.vmId).toBe(vm.uuid);
    agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" });
    const after = await eventually(async () => {
      const v = await getVm(vm.uuid);
      expect(v.state).toBe("RUNNING");
      return v;
    });
    expect(after.flag).toMatchObject({ code: "running_after_forced_reset" });
    await sleep(300);
    expect(agent.frames.filter((f) => f.type === "vm.stop" || f.type === "vm.forceStop")).toHaveLength(0);
  });
});

describe("reset_state when the agent answers with an error", () => {
  it("vm_not_found: 404 vm_not_found, the VM marked missing, nothing forced", async () => {
    const vm = vmInfo("gone-dom", "running");
    const { agent } = await nodeWith([vm]);
    const p = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    agent.reply(await agent.next("vm.state"), "error", {
      code: "vm_not_found",
      message: "Domain not found: no domain with matching uuid",
    });
    await expectError(await p, 404, "vm_not_found");
    const v = await getVm(vm.uuid);
    expect(v).toMatchObject({ state: "RUNNING", missing: true });
  });

  it("libvirt failing: 502 hypervisor_error with libvirt's message, nothing forced; force=true still sets STOPPED", async () => {
    const vm = vmInfo("lv-down", "running");
    const { agent } = await nodeWith([vm]);
    const p = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    agent.reply(await agent.next("vm.state"), "error", {
      code: "libvirt_error",
      message: "Failed to connect socket to '/var/run/libvirt/libvirt-sock'",
    });
    const err = await expectError(await p, 502, "hypervisor_error");
    expect(err.message).toContain("libvirt-sock");
    expect((await getVm(vm.uuid)).state).toBe("RUNNING");
    const forced = await json(await api(`/api/vms/${vm.uuid}/reset_state?force=true`, { method: "POST" }));
    expect(forced).toMatchObject({ source: "forced", vm: { state: "STOPPED" } });
    expect(forced.message).toMatch(/forced by request/);
  });

  it("no answer in time: forced STOPPED, the message says why", async () => {
    const vm = vmInfo("silent-node", "running");
    const { agent } = await nodeWith([vm]);
    const body = await json(await api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" }));
    expect(body).toMatchObject({ source: "forced", vm: { state: "STOPPED" } });
    expect(body.message).toMatch(/did not answer within/);
    expect(agent.frames.some((f) => f.type === "vm.state")).toBe(true);
  });

  it("the VM changed while the hypervisor was asked: asked again once; changed again: 409 conflict naming the change", async () => {
    const vm = vmInfo("racing", "running");
    const { agent } = await nodeWith([vm]);
    // First round: a report changes the VM while the question is out; the answer is asked for again.
    const p = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    const q1 = await agent.next("vm.state");
    await sleep(5);
    agent.send({
      type: "vm.changed",
      id: "c1",
      payload: { vms: [{ ...vm, state: "PAUSED", libvirtState: "paused" }], removed: [] },
    });
    await eventually(async () => expect((await getVm(vm.uuid)).state).toBe("PAUSED"));
    agent.reply(q1, "result", { state: "RUNNING", libvirtState: "running" });
    const q2 = await agent.next("vm.state");
    agent.reply(q2, "result", { state: "PAUSED", libvirtState: "paused" });
    expect(await json(await p)).toMatchObject({ source: "hypervisor", vm: { state: "PAUSED" } });

    // Second: it changes under both questions.
    const p2 = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    const states = [
      ["RUNNING", "running"],
      ["PAUSED", "paused"],
    ] as const;
    for (const [state, libvirtState] of states) {
      const q = await agent.next("vm.state");
      await sleep(5);
      agent.send({
        type: "vm.changed",
        id: `c-${state}`,
        payload: { vms: [{ ...vm, state, libvirtState }], removed: [] },
      });
      await eventually(async () => expect((await getVm(vm.uuid)).state).toBe(state));
      agent.reply(q, "result", { state: "STOPPED", libvirtState: "shutoff" });
    }
    const err = await expectError(await p2, 409, "conflict");
    expect(err.message).toMatch(/changed while the hypervisor was being asked/);
    expect((await getVm(vm.uuid)).state).toBe("PAUSED"); // the newer state stands
  });

  it("resets racing each other that find the same state all succeed: writing a state the VM already has changes nothing a guard waits on", async () => {
    const vm = vmInfo("twin-resets", "running");
    const { agent } = await nodeWith([vm]);
    const before = (await getVm(vm.uuid)).stateUpdatedAt;
    const resets = [0, 1, 2].map(() => api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" }));
    const questions = [await agent.next("vm.state"), await agent.next("vm.state"), await agent.next("vm.state")];
    for (const q of questions) agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" });
    // All three answer from their one question (one asked again would wait for an answer never sent).
    for (const res of await Promise.all(resets))
      expect(await json(res)).toMatchObject({ success: true, source: "hypervisor", vm: { state: "RUNNING" } });
    expect((await getVm(vm.uuid)).stateUpdatedAt).toBe(before); // RUNNING since it was first reported
  });
});

describe("force stop over a graceful stop", () => {
  it("allowed while STOPPING when the agent announced override: the graceful request fails 'overridden by force stop', the force stop's outcome sets the state", async () => {
    const vm = vmInfo("acpi-deaf", "running");
    const { agent } = await nodeWith([vm]);
    const graceful = api(`/api/vms/${vm.uuid}/stop?wait=true`, { method: "POST" });
    const stop = await agent.next("vm.stop");
    agent.reply(stop, "ack");
    progress(agent, stop, 1000);
    const force = api(`/api/vms/${vm.uuid}/stop?force=true&wait=true`, { method: "POST" });
    const forceStop = await agent.next("vm.forceStop");
    agent.reply(forceStop, "ack");
    agent.reply(stop, "error", {
      code: "overridden",
      message: "overridden by force stop",
      state: "STOPPED",
      libvirtState: "shutoff",
    });
    agent.reply(forceStop, "result", { state: "STOPPED", libvirtState: "shutoff" });
    expect((await json(await force)).vm.state).toBe("STOPPED");
    await expectError(await graceful, 409, "overridden");
    expect(await getRequest(stop.id)).toMatchObject({
      status: "failed",
      error: { code: "overridden", message: "overridden by force stop" },
    });
    expect(await getRequest(forceStop.id)).toMatchObject({ status: "done" });
    expect((await events(vm.uuid))[0]).toMatchObject({ action: "force_stop_done", toState: "STOPPED" });
  });

  it("refused 409 while STOPPING when the agent did not announce override", async () => {
    const vm = vmInfo("old-agent", "running");
    const { agent } = await nodeWith([vm], ["progress", "digest"]);
    await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
    agent.reply(await agent.next("vm.stop"), "ack");
    const err = await expectError(
      await api(`/api/vms/${vm.uuid}/stop?force=true`, { method: "POST" }),
      409,
      "invalid_state",
    );
    expect(err.message).toMatch(/STOPPING/);
  });
});

describe("anti-entropy", () => {
  /** VMs with UUIDs in chosen buckets (first hex digit). */
  const inBucket = (b: string, name: string, st: "running" | "shutoff" = "running") =>
    vmInfo(name, st, b + uuid().slice(1));

  it("a digest equal to the records asks for nothing; a differing one gets a scoped resync of just those buckets, and its answer settles them", async () => {
    const a = inBucket("a", "anti-a");
    const b = inBucket("b", "anti-b");
    const gone = inBucket("b", "anti-b-gone");
    const c = inBucket("c", "anti-c");
    const { agent } = await nodeWith([a, b, gone, c]);
    agent.send({
      type: "inventory.digest",
      id: "d1",
      payload: inventoryDigest([a, b, gone, c].map((v) => ({ ...v }))),
    });
    await sleep(300);
    expect(agent.frames.filter((f) => f.type === "resync")).toHaveLength(0);

    // The host changed behind the reports: b stopped, `gone` undefined (and nothing said about it).
    const bNow = { ...b, state: "STOPPED" as const, libvirtState: "shutoff" as const };
    agent.send({ type: "inventory.digest", id: "d2", payload: inventoryDigest([a, bNow, c]) });
    const resync = await agent.next("resync");
    expect(resync.payload).toEqual({ buckets: ["b"] });
    agent.send({
      type: "inventory",
      id: `${resync.id}-0`,
      payload: { syncId: resync.id, seq: 0, done: true, vms: [bNow], scope: resync.payload },
    });
    await eventually(async () => expect((await getVm(b.uuid)).state).toBe("STOPPED"));
    await eventually(async () => expect((await getVm(gone.uuid)).missing).toBe(true));
    // Outside the scope nothing is marked missing, even though the scoped answer did not list them.
    expect((await getVm(a.uuid)).missing).toBe(false);
    expect((await getVm(c.uuid)).missing).toBe(false);
    expect(digestBucket(gone.uuid)).toBe("b");
  });

  it("a bucket whose VM has a power action in flight is held back; a STARTING VM with no request in flight is asked about at once", async () => {
    const busy = inBucket("d", "anti-busy");
    const left = inBucket("e", "anti-left", "shutoff");
    const { agent, nodeId } = await nodeWith([busy, left]);
    await json(await api(`/api/vms/${busy.uuid}/stop`, { method: "POST" }), 202);
    const stop = await agent.next("vm.stop");
    agent.reply(stop, "ack"); // in flight for STOP_GRACE_MS
    agent.send({ type: "inventory.digest", id: "d1", payload: inventoryDigest([busy, left]) });
    await sleep(300);
    expect(agent.frames.filter((f) => f.type === "resync")).toHaveLength(0);
    agent.reply(stop, "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () => expect((await getVm(busy.uuid)).state).toBe("STOPPED"));

    // A start never acknowledged leaves `left` STARTING; its request fails at the deadline and the
    // VM is asked about then; here the answer is lost, and the next digest asks again.
    await json(await api(`/api/vms/${left.uuid}/start`, { method: "POST" }), 202);
    await agent.next("vm.start");
    await agent.next("vm.state", 5000); // asked as the start failed; left unanswered
    await eventually(async () =>
      expect((await json(await api(`/api/nodes/${(await getVm(left.uuid)).node_id}`))).node.connected).toBe(true),
    );
    // That question times out too (QUERY_TIMEOUT_MS, 1 s here): nothing is in flight any more.
    await eventually(async () => expect((await session(nodeId).stats()).inFlight).toBe(0), 10_000);
    const busyNow = { ...busy, state: "STOPPED" as const, libvirtState: "shutoff" as const };
    agent.send({ type: "inventory.digest", id: "d2", payload: inventoryDigest([busyNow, left]) });
    const q = await agent.next("vm.state", 5000);
    expect(q.payload.vmId).toBe(left.uuid);
    agent.reply(q, "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () => expect((await getVm(left.uuid)).state).toBe("STOPPED"));
  });
});
