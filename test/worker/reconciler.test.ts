// The self-healing reconciler in NodeSession: VMs stuck in a transition (request no longer in
// flight, older than STUCK_AFTER_MS = 120 s by default) are checked with the hypervisor after a
// completed inventory sync and periodically on the alarm; each repair is an `auto_repair` event.
// "Old" is made by moving state_updated_at back in D1, "periodically" by running the alarm.
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { agentsClosedAfterEach, api, eventually, json, TestAgent, vmInfo, session } from "./support.ts";

const agents = agentsClosedAfterEach();
const getVm = async (id: string) => (await json(await api(`/api/vms/${id}`))).vm;
const events = async (id: string) => (await json(await api(`/api/vms/${id}/events`))).events as any[];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A node whose VM is left STOPPING by a stop that was sent and never acknowledged. */
async function stuckVm() {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  const vm = vmInfo(`rc-${s.name}`, "running");
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
  const stop = await s.agent.next("vm.stop");
  return { ...s, vm, stop };
}

/** Makes the VM's last state change `ms` old. */
const age = (vmId: string, ms: number) =>
  env.DB.prepare("UPDATE vms SET state_updated_at = ? WHERE id = ?")
    .bind(Date.now() - ms, vmId)
    .run();

/** A reconnect: the new connection fails what the old one carried, then syncs. */
async function reconnect(credential: string, vms: ReturnType<typeof vmInfo>[]) {
  const agent = await TestAgent.connect(credential);
  agents.push(agent);
  agent.hello();
  agent.inventory(vms);
  return agent;
}

describe("reconciler", () => {
  it("after a reconnect's completed sync, asks the hypervisor about a VM stuck past the threshold and repairs it (auto_repair event)", async () => {
    const s = await stuckVm();
    await age(s.vm.uuid, 200_000);
    // The host stopped it after all; the inventory does not override a transition, the reconciler does.
    const off = { ...s.vm, state: "STOPPED" as const, libvirtState: "shutoff" as const };
    const agent = await reconnect(s.credential, [off]);
    const q = await agent.next("vm.state");
    expect(q.payload).toMatchObject({ vmId: s.vm.uuid, name: s.vm.name });
    agent.reply(q, "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () =>
      expect(await getVm(s.vm.uuid)).toMatchObject({ state: "STOPPED", libvirtState: "shutoff" }),
    );
    const [ev] = await events(s.vm.uuid);
    expect(ev).toMatchObject({
      action: "auto_repair",
      actor: "reconciler",
      source: "hypervisor",
      fromState: "STOPPING",
      toState: "STOPPED",
      expectedState: "STOPPING",
      observedState: "STOPPED",
    });
    expect(ev.message).toMatch(/stuck in STOPPING for \d+ s/);
    const req = (await json(await api(`/api/requests/${q.id}`))).request;
    expect(req).toMatchObject({ kind: "vm.state", status: "done", vm_id: s.vm.uuid });
    // Released: start is allowed again.
    expect((await api(`/api/vms/${s.vm.uuid}/start`, { method: "POST" })).status).toBe(202);
  });

  it("a VM left STOPPING with no request in flight is asked about as soon as the agent is back, however recent (STUCK_AFTER_MS only decides whether it is told as stuck)", async () => {
    const s = await stuckVm();
    await age(s.vm.uuid, 60_000); // under the 120 s threshold
    const agent = await reconnect(s.credential, [s.vm]);
    const q = await agent.next("vm.state");
    expect(q.payload).toMatchObject({ vmId: s.vm.uuid });
    agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" });
    await eventually(async () => expect((await getVm(s.vm.uuid)).state).toBe("RUNNING"));
    expect((await events(s.vm.uuid))[0]).toMatchObject({
      action: "auto_repair",
      expectedState: "STOPPING",
      observedState: "RUNNING",
    });
  });

  it("periodically on the alarm while connected; a transition whose request is still in flight is not touched", async () => {
    const s = await stuckVm();
    s.agent.reply(s.stop, "ack"); // in flight: the guest has STOP_GRACE_MS to shut down
    await eventually(async () =>
      expect((await json(await api(`/api/requests/${s.stop.id}`))).request.status).toBe("sent"),
    );
    await age(s.vm.uuid, 200_000);
    const due = () =>
      runInDurableObject(session(s.nodeId), async (_o, state) => state.storage.kv.put("reconcileAt", 0));
    await due();
    await runDurableObjectAlarm(session(s.nodeId));
    await sleep(100);
    expect(s.agent.frames.filter((f) => f.type === "vm.state")).toHaveLength(0);

    // The stop's outcome never comes: once its deadline has failed it, the next pass asks.
    await eventually(
      async () => expect((await json(await api(`/api/requests/${s.stop.id}`))).request.status).toBe("failed"),
      6000,
    );
    await age(s.vm.uuid, 200_000);
    expect(
      await runInDurableObject(session(s.nodeId), async (_o, state) => state.storage.kv.get<number>("reconcileAt")),
    ).toBeGreaterThan(Date.now());
    await due();
    await runDurableObjectAlarm(session(s.nodeId));
    const q = await s.agent.next("vm.state");
    s.agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" });
    await eventually(async () => expect((await getVm(s.vm.uuid)).state).toBe("RUNNING"));
    expect((await events(s.vm.uuid))[0]).toMatchObject({
      action: "auto_repair",
      expectedState: "STOPPING",
      observedState: "RUNNING",
    });
    // The pass scheduled the next one RECONCILE_INTERVAL_MS (60 s) later.
    const next = await runInDurableObject(session(s.nodeId), async (_o, state) =>
      state.storage.kv.get<number>("reconcileAt"),
    );
    expect(next! - Date.now()).toBeGreaterThan(50_000);
  });

  it("an idle node's periodic pass remembers there is no open transition and skips D1; a power action never acknowledged is checked at once when its deadline fails it", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vm = vmInfo(`rc-idle-${s.name}`, "running");
    s.agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    const kv = <T>(key: string) =>
      runInDurableObject(session(s.nodeId), async (_o, state) => state.storage.kv.get<T>(key));
    const due = () =>
      runInDurableObject(session(s.nodeId), async (_o, state) => state.storage.kv.put("reconcileAt", 0));
    await eventually(async () => expect(await kv<boolean>("transitionsOpen")).toBe(false)); // the sync's pass found none
    await due();
    await runDurableObjectAlarm(session(s.nodeId));
    expect(await kv<boolean>("transitionsOpen")).toBe(false);

    await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
    const stop = await s.agent.next("vm.stop"); // never acknowledged: failed by its deadline, the VM left STOPPING
    expect(await kv<boolean>("transitionsOpen")).toBe(true);
    // No waiting for STUCK_AFTER_MS: the VM is in a transition no request holds any more, asked about now.
    const q = await s.agent.next("vm.state", 6000);
    expect((await json(await api(`/api/requests/${stop.id}`))).request.status).toBe("failed");
    expect((await getVm(vm.uuid)).state).toBe("STOPPING");
    s.agent.reply(q, "result", { state: "STOPPED", libvirtState: "shutoff" });
    await eventually(async () => expect((await getVm(vm.uuid)).state).toBe("STOPPED"));
    expect((await events(vm.uuid))[0]).toMatchObject({
      action: "auto_repair",
      actor: "reconciler",
      observedState: "STOPPED",
    });
    // That pass saw the transition open; the next one sees it closed.
    await due();
    await runDurableObjectAlarm(session(s.nodeId));
    expect(await kv<boolean>("transitionsOpen")).toBe(false);
  });

  it("an answer that arrives after an operator's reset changes nothing (the generation moved on)", async () => {
    const s = await stuckVm();
    await age(s.vm.uuid, 200_000);
    const agent = await reconnect(s.credential, [s.vm]);
    const q = await agent.next("vm.state");
    await json(await api(`/api/vms/${s.vm.uuid}/reset_state?force=true`, { method: "POST" }));
    agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" });
    await eventually(async () => expect((await json(await api(`/api/requests/${q.id}`))).request.status).toBe("done"));
    expect((await getVm(s.vm.uuid)).state).toBe("STOPPED");
    expect((await events(s.vm.uuid)).some((e) => e.action === "auto_repair")).toBe(false);
  });

  it("a missing VM or one with no transition request is not asked about", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const a = vmInfo(`rc-a-${s.name}`, "shutdown"); // STOPPING as the host reports it: no control-plane transition
    const b = vmInfo(`rc-b-${s.name}`, "running");
    s.agent.inventory([a, b]);
    await eventually(async () => expect((await api(`/api/vms/${b.uuid}`)).status).toBe(200));
    await json(await api(`/api/vms/${b.uuid}/stop`, { method: "POST" }), 202);
    await s.agent.next("vm.stop");
    const agent = await reconnect(s.credential, [a]); // b gone from the host: missing
    await eventually(async () => expect((await getVm(b.uuid)).missing).toBe(true));
    await age(a.uuid, 200_000);
    await age(b.uuid, 200_000);
    await runInDurableObject(session(s.nodeId), async (_o, state) => state.storage.kv.put("reconcileAt", 0));
    await runDurableObjectAlarm(session(s.nodeId));
    await sleep(100);
    expect(agent.frames.filter((f) => f.type === "vm.state")).toHaveLength(0);
  });
});
