// On the Worker: verified resets (expected / observed state, reason, log excerpt on the
// event), the last-known log kept from every successful logs answer, and the
// `running_after_forced_reset` flag raised when a force-reset VM turns out to be alive.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  agentsClosedAfterEach,
  api,
  createToken,
  eventually,
  expectError,
  json,
  TestAgent,
  uuid,
  vmInfo,
  type Frame,
} from "./support.ts";

const agents = agentsClosedAfterEach();

async function nodeWithVm(libvirtState: "running" | "shutoff" = "running") {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  const vm = vmInfo(`vr-${s.name}`, libvirtState);
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { ...s, vm };
}

/** Leaves the VM STOPPING with its stop never acknowledged. */
async function stuck(s: { agent: TestAgent; vm: { uuid: string } }) {
  await json(await api(`/api/vms/${s.vm.uuid}/stop`, { method: "POST" }), 202);
  return s.agent.next("vm.stop");
}

const lines = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => `line ${from + i}`).join("\n") + "\n";

/** Answers a vm.logs command with `text` in one chunk. */
function answerLogs(agent: TestAgent, cmd: Frame, text: string, extra: Record<string, unknown> = {}) {
  agent.reply(cmd, "log.chunk", { seq: 0, text });
  const n = text.split("\n").filter(Boolean).length;
  agent.reply(cmd, "result", {
    logPath: `/var/log/libvirt/qemu/${cmd.payload.name}.log`,
    logSizeBytes: 10_000,
    linesReturned: n,
    truncated: true,
    lastModified: "2026-02-03T04:05:06.000Z",
    chunks: 1,
    ...extra,
  });
}

const events = async (id: string) => (await json(await api(`/api/vms/${id}/events`))).events as any[];
const getVm = async (id: string) => (await json(await api(`/api/vms/${id}`))).vm;
async function goOffline(agent: TestAgent, nodeId: string) {
  agent.ws.close(1000, "gone");
  await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
}

describe("logs answer and the last-known log", () => {
  it("passes the files the agent read through, stamps capturedAt, and keeps the answer as the last-known log", async () => {
    const { agent, vm, nodeId } = await nodeWithVm();
    await expectError(await api(`/api/vms/${vm.uuid}/logs/last_known`), 404, "no_snapshot");
    const before = Date.now();
    const p = api(`/api/vms/${vm.uuid}/logs?lines=5`);
    const cmd = await agent.next("vm.logs");
    answerLogs(agent, cmd, lines(1, 5), { files: [`${vm.name}.log`, `${vm.name}.log.1`] });
    const body = await json(await p);
    expect(body.files).toEqual([`${vm.name}.log`, `${vm.name}.log.1`]);
    expect(Date.parse(body.capturedAt)).toBeGreaterThanOrEqual(before - 1000);
    const kept = await eventually(async () => json(await api(`/api/vms/${vm.uuid}/logs/last_known`)));
    expect(kept).toEqual({
      qemuLog: lines(1, 5),
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: 10_000,
      linesReturned: 5,
      truncated: true,
      lastModified: "2026-02-03T04:05:06.000Z",
      files: [`${vm.name}.log`, `${vm.name}.log.1`],
      capturedAt: body.capturedAt,
    });
    // The node goes away: the live route still answers 503 node_offline, the last-known log is still there.
    await goOffline(agent, nodeId);
    await expectError(await api(`/api/vms/${vm.uuid}/logs`), 503, "node_offline");
    expect((await json(await api(`/api/vms/${vm.uuid}/logs/last_known`))).qemuLog).toBe(lines(1, 5));
  });

  it("a newer answer replaces the snapshot; its text is capped at 256 KiB of the newest whole lines", async () => {
    const { agent, vm } = await nodeWithVm();
    let p = api(`/api/vms/${vm.uuid}/logs`);
    answerLogs(agent, await agent.next("vm.logs"), lines(1, 3));
    await json(await p);
    const long =
      Array.from({ length: 4000 }, (_, i) => `${String(i).padStart(5, "0")} ${"é".repeat(40)}`).join("\n") + "\n"; // ~330 KiB
    p = api(`/api/vms/${vm.uuid}/logs?lines=4000`);
    answerLogs(agent, await agent.next("vm.logs"), long);
    expect((await json(await p)).qemuLog).toBe(long); // the answer itself is whole
    const kept = await eventually(async () => {
      const k = await json(await api(`/api/vms/${vm.uuid}/logs/last_known`));
      expect(k.qemuLog).not.toBe(lines(1, 3));
      return k;
    });
    expect(new TextEncoder().encode(kept.qemuLog).byteLength).toBeLessThanOrEqual(256 * 1024);
    expect(long.endsWith(kept.qemuLog)).toBe(true);
    expect(kept.qemuLog).toMatch(/^\d{5} é/); // starts at a line
    expect(kept.truncated).toBe(true);
    expect(kept.linesReturned).toBe(kept.qemuLog.split("\n").length - 1);
    expect(kept.linesReturned).toBeLessThan(4000);
  });

  it("a log read just before the node goes away is its last-known log by the time the node shows offline", async () => {
    const { agent, vm, nodeId } = await nodeWithVm();
    const p = api(`/api/vms/${vm.uuid}/logs?lines=3`);
    answerLogs(agent, await agent.next("vm.logs"), lines(7, 9));
    await json(await p);
    // No waiting for the session's batched write: going offline writes what it kept first.
    await goOffline(agent, nodeId);
    expect((await json(await api(`/api/vms/${vm.uuid}/logs/last_known`))).qemuLog).toBe(lines(7, 9));
  });

  it("last_known: operator role, 404 for an unknown VM", async () => {
    const { vm } = await nodeWithVm();
    await expectError(
      await api(`/api/vms/${vm.uuid}/logs/last_known`, { token: await createToken("viewer") }),
      403,
      "forbidden",
    );
    await expectError(await api(`/api/vms/${vm.uuid}/logs/last_known`, { token: null }), 401);
    await expectError(await api(`/api/vms/${uuid()}/logs/last_known`), 404, "not_found");
  });
});

describe("verified resets", () => {
  it("hypervisor reset: the event keeps expected and observed state, the reason, and the log's last 20 lines sent with the agent's answer", async () => {
    const s = await nodeWithVm();
    await stuck(s);
    const p = api(`/api/vms/${s.vm.uuid}/reset_state`, {
      method: "POST",
      json: { reason: "stop hung after kernel update" },
    });
    // One round trip: the state query itself asks for the excerpt.
    const q = await s.agent.next("vm.state");
    expect(q.payload.excerptLines).toBe(20);
    s.agent.reply(q, "result", { state: "RUNNING", libvirtState: "running", logExcerpt: lines(11, 30).trimEnd() });
    expect(await json(await p)).toMatchObject({
      source: "hypervisor",
      previousState: "STOPPING",
      vm: { state: "RUNNING" },
    });
    // Written with the reset itself: there when the answer is.
    const [ev] = await events(s.vm.uuid);
    expect(ev).toMatchObject({
      action: "reset_state",
      actor: "admin",
      fromState: "STOPPING",
      toState: "RUNNING",
      source: "hypervisor",
      expectedState: "STOPPING",
      observedState: "RUNNING",
      reason: "stop hung after kernel update",
      logExcerpt: lines(11, 30).trimEnd(),
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(s.agent.frames.filter((f) => f.type === "vm.logs")).toHaveLength(0);
  });

  it("an agent that answers without an excerpt (older agent) is asked for the log after the reset has answered", async () => {
    const s = await nodeWithVm();
    await stuck(s);
    const started = Date.now();
    const p = api(`/api/vms/${s.vm.uuid}/reset_state`, { method: "POST" });
    s.agent.reply(await s.agent.next("vm.state"), "result", { state: "RUNNING", libvirtState: "running" });
    expect(await json(await p)).toMatchObject({ source: "hypervisor", vm: { state: "RUNNING" } });
    // The answer came before the excerpt was read: its vm.logs command arrives only now.
    const read = await s.agent.next("vm.logs");
    expect(read.payload.lines).toBe(20);
    answerLogs(s.agent, read, lines(1, 30));
    const ev = await eventually(async () => {
      const [e] = await events(s.vm.uuid);
      expect(e.logExcerpt).toBeTruthy();
      return e;
    });
    expect(ev.logExcerpt).toBe(lines(11, 30).trimEnd());
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("an agent with no log to read (excerpt null): the excerpt comes from the last-known log, and the node is not asked again", async () => {
    const s = await nodeWithVm();
    const p0 = api(`/api/vms/${s.vm.uuid}/logs`);
    answerLogs(s.agent, await s.agent.next("vm.logs"), lines(1, 8));
    await json(await p0);
    await eventually(async () => json(await api(`/api/vms/${s.vm.uuid}/logs/last_known`)));
    const p = api(`/api/vms/${s.vm.uuid}/reset_state`, { method: "POST" });
    s.agent.reply(await s.agent.next("vm.state"), "result", {
      state: "RUNNING",
      libvirtState: "running",
      logExcerpt: null,
    });
    expect(await json(await p)).toMatchObject({ source: "hypervisor" });
    const ev = await eventually(async () => {
      const [e] = await events(s.vm.uuid);
      expect(e.logExcerpt).toBeTruthy();
      return e;
    });
    expect(ev.logExcerpt).toBe(lines(1, 8).trimEnd());
    expect(s.agent.frames.filter((f) => f.type === "vm.logs")).toHaveLength(0); // none after the first read (taken by next())
  });

  it("an excerpt over 4 KiB in the agent's answer is refused as malformed: 502 agent_error, nothing forced", async () => {
    const s = await nodeWithVm();
    const before = (await json(await api(`/api/vms/${s.vm.uuid}`))).vm.state;
    const p = api(`/api/vms/${s.vm.uuid}/reset_state`, { method: "POST" });
    s.agent.reply(await s.agent.next("vm.state"), "result", {
      state: "RUNNING",
      libvirtState: "running",
      logExcerpt: "x".repeat(5000),
    });
    const err = await expectError(await p, 502, "agent_error");
    expect(err.message).toContain("malformed");
    expect((await json(await api(`/api/vms/${s.vm.uuid}`))).vm.state).toBe(before);
  });

  it("forced reset with the node offline: observed null, reason from the query, excerpt from the last-known log (capped 4 KiB)", async () => {
    const s = await nodeWithVm();
    const p = api(`/api/vms/${s.vm.uuid}/logs`);
    const wide = Array.from({ length: 40 }, (_, i) => `${i} ${"x".repeat(300)}`).join("\n") + "\n";
    answerLogs(s.agent, await s.agent.next("vm.logs"), wide);
    await json(await p);
    await eventually(async () => json(await api(`/api/vms/${s.vm.uuid}/logs/last_known`)));
    await stuck(s);
    await goOffline(s.agent, s.nodeId);
    const body = await json(
      await api(`/api/vms/${s.vm.uuid}/reset_state?reason=host%20unreachable`, { method: "POST" }),
    );
    expect(body).toMatchObject({ source: "forced", vm: { state: "STOPPED" } });
    const ev = await eventually(async () => {
      const [e] = await events(s.vm.uuid);
      expect(e.logExcerpt).toBeTruthy();
      return e;
    });
    expect(ev).toMatchObject({
      source: "forced",
      expectedState: "STOPPING",
      observedState: null,
      reason: "host unreachable",
      toState: "STOPPED",
    });
    expect(new TextEncoder().encode(ev.logExcerpt).byteLength).toBeLessThanOrEqual(4096);
    expect(wide.trimEnd().endsWith(ev.logExcerpt)).toBe(true);
    expect(ev.logExcerpt).toMatch(/^\d+ x/); // whole lines
  });

  it("no log anywhere: the reset answers and its event has no excerpt; a reason over 500 characters is a 400", async () => {
    const s = await nodeWithVm();
    await stuck(s);
    const body = await json(await api(`/api/vms/${s.vm.uuid}/reset_state?force=true`, { method: "POST" }));
    expect(body.source).toBe("forced");
    s.agent.reply(await s.agent.next("vm.logs"), "error", { code: "log_not_found", message: "no such file" });
    await new Promise((r) => setTimeout(r, 200));
    const [ev] = await events(s.vm.uuid);
    expect(ev).toMatchObject({
      action: "reset_state",
      logExcerpt: null,
      observedState: null,
      expectedState: "STOPPING",
      reason: null,
    });
    const err = await expectError(
      await api(`/api/vms/${s.vm.uuid}/reset_state`, { method: "POST", json: { reason: "r".repeat(501) } }),
      400,
      "invalid_request",
    );
    expect(err.message).toContain("reason");
  });
});

describe("flag running_after_forced_reset", () => {
  it("a force-reset VM the host reports running on reconnect is flagged, follows the hypervisor, and is never stopped; clear_flag clears it", async () => {
    const s = await nodeWithVm();
    await stuck(s);
    await goOffline(s.agent, s.nodeId);
    await json(await api(`/api/vms/${s.vm.uuid}/reset_state`, { method: "POST" }));
    expect(await getVm(s.vm.uuid)).toMatchObject({ state: "STOPPED", flag: null });

    const back = await TestAgent.connect(s.credential);
    agents.push(back);
    back.hello();
    back.inventory([s.vm]); // still running on the host
    const flagged = await eventually(async () => {
      const vm = await getVm(s.vm.uuid);
      expect(vm.flag).not.toBeNull();
      return vm;
    });
    expect(flagged.state).toBe("RUNNING");
    expect(flagged.flag).toEqual({
      code: "running_after_forced_reset",
      message: expect.stringContaining("RUNNING"),
      at: expect.any(String),
    });
    const [ev] = await events(s.vm.uuid);
    expect(ev).toMatchObject({
      action: "flagged",
      fromState: "STOPPED",
      toState: "RUNNING",
      expectedState: "STOPPED",
      observedState: "RUNNING",
    });
    expect(ev.message).toContain("not stopped");
    // Never stopped by us: no power command went to the agent.
    await new Promise((r) => setTimeout(r, 100));
    expect(back.frames.filter((f) => ["vm.stop", "vm.forceStop"].includes(f.type))).toHaveLength(0);
    // Shown in the list too.
    const listed = (await json(await api(`/api/vms?node_id=${s.nodeId}`))).vms.find((v: any) => v.id === s.vm.uuid);
    expect(listed.flag.code).toBe("running_after_forced_reset");
    // A later report does not raise it twice.
    back.send({ type: "vm.changed", id: "c1", payload: { vms: [s.vm], removed: [] } });
    await new Promise((r) => setTimeout(r, 100));
    expect((await events(s.vm.uuid)).filter((e) => e.action === "flagged")).toHaveLength(1);

    await expectError(
      await api(`/api/vms/${s.vm.uuid}/clear_flag`, { method: "POST", token: await createToken("viewer") }),
      403,
      "forbidden",
    );
    const cleared = await json(
      await api(`/api/vms/${s.vm.uuid}/clear_flag`, {
        method: "POST",
        token: await createToken("operator", "ops-anna"),
      }),
    );
    expect(cleared).toMatchObject({
      success: true,
      cleared: true,
      vm: { id: s.vm.uuid, flag: null, state: "RUNNING" },
    });
    expect((await events(s.vm.uuid))[0]).toMatchObject({ action: "flag_cleared", actor: "token:ops-anna" });
    expect(await json(await api(`/api/vms/${s.vm.uuid}/clear_flag`, { method: "POST" }))).toMatchObject({
      cleared: false,
      vm: { flag: null },
    });
    await expectError(await api(`/api/vms/${uuid()}/clear_flag`, { method: "POST" }), 404, "not_found");
  });

  it("a force-reset VM the host reports stopped is confirmed: no flag, then or later", async () => {
    const s = await nodeWithVm();
    await stuck(s);
    await goOffline(s.agent, s.nodeId);
    await json(await api(`/api/vms/${s.vm.uuid}/reset_state`, { method: "POST" }));
    const back = await TestAgent.connect(s.credential);
    agents.push(back);
    back.inventory([{ ...s.vm, state: "STOPPED", libvirtState: "shutoff" }]);
    await eventually(async () => {
      const row = await env.DB.prepare("SELECT forced_reset_at FROM vms WHERE id = ?")
        .bind(s.vm.uuid)
        .first<{ forced_reset_at: number | null }>();
      expect(row?.forced_reset_at).toBeNull();
    });
    // Started later by someone on the host: an ordinary state change, not a flag.
    back.send({ type: "vm.changed", id: "c2", payload: { vms: [s.vm], removed: [] } });
    await eventually(async () => expect((await getVm(s.vm.uuid)).state).toBe("RUNNING"));
    expect((await getVm(s.vm.uuid)).flag).toBeNull();
  });
});
