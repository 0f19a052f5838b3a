// reset_state (hypervisor path, forced path, fall-back when the node is away or silent) and the
// logs route (chunks reassembled in order, every error code the logs route has), plus their rate limits.
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
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
} from "./support.ts";

const agents = agentsClosedAfterEach();
async function stuckVm() {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  const vm = vmInfo(`stuck-${s.name}`, "running");
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  // Put it in STOPPING and never answer: the stuck case.
  await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
  const stop = await s.agent.next("vm.stop");
  return { ...s, vm, stop };
}
const events = async (id: string) => (await json(await api(`/api/vms/${id}/events`))).events;

describe("reset_state", () => {
  it("asks the hypervisor and adopts its state (source hypervisor), with an event naming actor and reason", async () => {
    const { agent, vm } = await stuckVm();
    const p = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST", json: { reason: "stop hung" } });
    const q = await agent.next("vm.state");
    expect(q.payload).toMatchObject({ vmId: vm.uuid, name: vm.name });
    agent.reply(q, "result", { state: "PAUSED", libvirtState: "paused" });
    const body = await json(await p);
    expect(body).toEqual({
      success: true,
      message: expect.stringContaining("hypervisor"),
      vm: { id: vm.uuid, name: vm.name, state: "PAUSED", node_id: expect.any(String) },
      previousState: "STOPPING",
      source: "hypervisor",
    });
    const [ev] = await events(vm.uuid);
    expect(ev).toMatchObject({
      action: "reset_state",
      actor: "admin",
      fromState: "STOPPING",
      toState: "PAUSED",
      source: "hypervisor",
    });
    const row = await env.DB.prepare(
      "SELECT reason, transition_request_id FROM vm_events e JOIN vms v ON v.id = e.vm_id WHERE e.vm_id = ? ORDER BY e.id DESC",
    )
      .bind(vm.uuid)
      .first<any>();
    expect(row).toMatchObject({ reason: "stop hung", transition_request_id: null });
    // Start / stop work again.
    expect((await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" })).status).toBe(202);
  });

  it("writes the state query's request row in the reset's own D1 batch: in D1 when it answers, nothing kept by the node's session; a timed-out query's row too", async () => {
    const { agent, vm, nodeId } = await stuckVm();
    const session = env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId));
    const kept = () =>
      runInDurableObject(session, async (_o, state) => [...state.storage.kv.list({ prefix: "queryrow:" })].length);
    const rowOf = (id: string) => env.DB.prepare("SELECT * FROM requests WHERE id = ?").bind(id).first<any>();
    const p = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    const q = await agent.next("vm.state");
    agent.reply(q, "result", { state: "RUNNING", libvirtState: "running", logExcerpt: "a\nb" });
    expect(await json(await p)).toMatchObject({ source: "hypervisor", vm: { state: "RUNNING" } });
    const row = await rowOf(q.id);
    expect(row).toMatchObject({ kind: "vm.state", vm_id: vm.uuid, status: "done", requested_by: "admin" });
    expect(JSON.parse(row.result)).toMatchObject({ state: "RUNNING", libvirtState: "running" });
    expect(row.finished_at).toBeGreaterThanOrEqual(row.sent_at);
    expect(await kept()).toBe(0);
    // Unanswered: the reset forces STOPPED, and the query's row says it timed out.
    const p2 = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    const silent = await agent.next("vm.state");
    expect(await json(await p2)).toMatchObject({ source: "forced" });
    const timedOut = await eventually(async () => {
      const r = await rowOf(silent.id);
      expect(r).toBeTruthy();
      return r;
    });
    expect(timedOut).toMatchObject({ kind: "vm.state", status: "failed" });
    expect(JSON.parse(timedOut.error).code).toBe("agent_timeout");
    expect(await kept()).toBe(0);
  });

  it("force=true sets STOPPED without asking (source forced, 'forced by request')", async () => {
    const { agent, vm } = await stuckVm();
    const body = await json(await api(`/api/vms/${vm.uuid}/reset_state?force&reason=ops`, { method: "POST" }));
    expect(body).toMatchObject({
      success: true,
      source: "forced",
      previousState: "STOPPING",
      vm: { state: "STOPPED" },
    });
    expect(body.message).toContain("forced by request");
    expect(agent.frames.find((f) => f.type === "vm.state")).toBeUndefined();
    expect((await events(vm.uuid))[0]).toMatchObject({ action: "reset_state", source: "forced", toState: "STOPPED" });
  });

  it("node offline: forced, message says node offline", async () => {
    const { agent, vm, nodeId } = await stuckVm();
    agent.ws.close(1000, "gone");
    await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
    const body = await json(await api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" }));
    expect(body).toMatchObject({ source: "forced", vm: { state: "STOPPED" } });
    expect(body.message).toContain("node offline");
  });

  it("no answer in time: forced, message says the node did not answer within the timeout", async () => {
    const { agent, vm } = await stuckVm();
    const started = Date.now();
    const p = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    const q = await agent.next("vm.state");
    const body = await json(await p);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(body).toMatchObject({ source: "forced", previousState: "STOPPING", vm: { state: "STOPPED" } });
    expect(body.message).toMatch(/did not answer within 1 s/);
    // A late answer to that query changes nothing.
    agent.reply(q, "result", { state: "RUNNING", libvirtState: "running" });
    await new Promise((r) => setTimeout(r, 100));
    expect((await json(await api(`/api/vms/${vm.uuid}`))).vm.state).toBe("STOPPED");
  });

  it("VM on no node: forced; unknown VM: 404", async () => {
    const { vm, nodeId } = await stuckVm();
    await json(await api(`/api/nodes/${nodeId}`, { method: "DELETE" }));
    const body = await json(await api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" }));
    expect(body).toMatchObject({ source: "forced", vm: { state: "STOPPED", node_id: null } });
    await expectError(await api(`/api/vms/${uuid()}/reset_state`, { method: "POST" }), 404, "not_found");
  });

  it("is rate limited per token with 429 rate_limited", async () => {
    const token = await createToken("operator");
    const missing = uuid();
    const statuses: number[] = [];
    // Room for two limits: the limiter's minute windows follow the clock, one may end mid-loop.
    for (let i = 0; i < 130 && !statuses.includes(429); i++)
      statuses.push((await api(`/api/vms/${missing}/reset_state`, { method: "POST", token })).status);
    expect(statuses.filter((s) => s === 404).length).toBeGreaterThanOrEqual(50);
    expect(statuses.at(-1)).toBe(429);
  });

  it("reset voids the old command's generation: its late answer cannot overwrite", async () => {
    const { agent, vm, stop } = await stuckVm();
    await json(await api(`/api/vms/${vm.uuid}/reset_state?force=true`, { method: "POST" }));
    agent.reply(stop, "result", { state: "RUNNING", libvirtState: "running" });
    await new Promise((r) => setTimeout(r, 150));
    expect((await json(await api(`/api/vms/${vm.uuid}`))).vm.state).toBe("STOPPED");
  });
});

describe("reset_state routing", () => {
  it("asks the node this isolate last saw the VM on; if the VM has moved meanwhile, that answer is not written and its new node is asked", async () => {
    const a = await TestAgent.forNewNode();
    const b = await TestAgent.forNewNode();
    agents.push(a.agent, b.agent);
    const vm = vmInfo(`moving-${a.name}`, "running");
    a.agent.inventory([vm]);
    await eventually(async () => expect((await json(await api(`/api/vms/${vm.uuid}`))).vm.node_id).toBe(a.nodeId)); // seen on A
    // The VM is now B's (as after its first node was deleted and B reported it).
    await env.DB.prepare("UPDATE vms SET node_id = ? WHERE id = ?").bind(b.nodeId, vm.uuid).run();
    const p = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    a.agent.reply(await a.agent.next("vm.state"), "result", {
      state: "RUNNING",
      libvirtState: "running",
      logExcerpt: "from A",
    });
    b.agent.reply(await b.agent.next("vm.state"), "result", {
      state: "PAUSED",
      libvirtState: "paused",
      logExcerpt: "from B",
    });
    expect(await json(await p)).toMatchObject({
      source: "hypervisor",
      previousState: "RUNNING",
      vm: { state: "PAUSED", node_id: b.nodeId },
    });
    const resets = (await events(vm.uuid)).filter((e: any) => e.action === "reset_state");
    expect(resets).toHaveLength(1);
    expect(resets[0]).toMatchObject({ toState: "PAUSED", logExcerpt: "from B" });
    // Seen on B now: the next reset asks B alone.
    const q = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    b.agent.reply(await b.agent.next("vm.state"), "result", {
      state: "RUNNING",
      libvirtState: "running",
      logExcerpt: "",
    });
    expect(await json(await q)).toMatchObject({ source: "hypervisor", vm: { state: "RUNNING" } });
    expect(a.agent.frames.filter((f) => f.type === "vm.state")).toHaveLength(0);
  });

  it("a node that did not answer is not asked a second time: one timeout, then forced", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vm = vmInfo(`silent-${s.name}`, "running");
    s.agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    const started = Date.now();
    const body = await json(await api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" }));
    expect(body).toMatchObject({ source: "forced", vm: { state: "STOPPED" } });
    expect(body.message).toContain("did not answer");
    expect(s.agent.frames.filter((f) => f.type === "vm.state")).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(2 * 1000 + 500); // QUERY_TIMEOUT_MS is 1 s here
  });
});

describe("logs", () => {
  async function vmOnline() {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vm = vmInfo(`logged-${s.name}`);
    s.agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    return { ...s, vm };
  }

  it("reassembles log.chunk frames in seq order into the documented answer", async () => {
    const { agent, vm } = await vmOnline();
    const p = api(`/api/vms/${vm.uuid}/logs?lines=3`);
    const cmd = await agent.next("vm.logs");
    expect(cmd.payload).toMatchObject({ vmId: vm.uuid, name: vm.name, lines: 3 });
    agent.reply(cmd, "log.chunk", { seq: 1, text: "line 2\nline 3\n" });
    agent.reply(cmd, "log.chunk", { seq: 0, text: "line 1\n" });
    agent.reply(cmd, "result", {
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: 1234,
      linesReturned: 3,
      truncated: true,
      lastModified: "2026-01-01T00:00:00.000Z",
      chunks: 2,
    });
    expect(await json(await p)).toEqual({
      qemuLog: "line 1\nline 2\nline 3\n",
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: 1234,
      linesReturned: 3,
      truncated: true,
      lastModified: "2026-01-01T00:00:00.000Z",
      // an agent that does not list the files it read read the one file
      files: [`${vm.name}.log`],
      capturedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    // A query's row is written once it has ended, with the node's other finished queries (≤ 1 s later).
    const row = await eventually(async () => {
      const res = await api(`/api/requests/${cmd.id}`);
      expect(res.status).toBe(200);
      return (await json(res)).request;
    });
    expect(row).toMatchObject({ kind: "vm.logs", status: "done", vm_id: vm.uuid, error: null });
  });

  it("takes the whole text in the result itself (one frame), the row and last-known log without it; never as well as chunks", async () => {
    const { agent, vm } = await vmOnline();
    const meta = {
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: 20,
      linesReturned: 2,
      truncated: false,
      lastModified: null,
      files: [`${vm.name}.log`],
    };
    const p = api(`/api/vms/${vm.uuid}/logs?lines=2`);
    const cmd = await agent.next("vm.logs");
    agent.reply(cmd, "result", { ...meta, chunks: 0, text: "first line\nsecond ✓\n" });
    expect(await json(await p)).toEqual({
      ...meta,
      qemuLog: "first line\nsecond ✓\n",
      capturedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    // The request row's result and the last-known log hold the text once: the log, not the row.
    const row = await eventually(async () => {
      const { results } = await env.DB.prepare("SELECT result FROM requests WHERE id = ?")
        .bind(cmd.id)
        .all<{ result: string }>();
      expect(results).toHaveLength(1);
      return JSON.parse(results[0].result) as Record<string, unknown>;
    });
    expect(row).toMatchObject({ chunks: 0, linesReturned: 2 });
    expect(row).not.toHaveProperty("text");
    const lastKnown = await eventually(async () => {
      const res = await api(`/api/vms/${vm.uuid}/logs/last_known`);
      expect(res.status).toBe(200);
      return json(res);
    });
    expect(lastKnown).toMatchObject({ qemuLog: "first line\nsecond ✓\n" });

    const both = api(`/api/vms/${vm.uuid}/logs?lines=2`);
    const twice = await agent.next("vm.logs");
    agent.reply(twice, "log.chunk", { seq: 0, text: "a\n" });
    agent.reply(twice, "result", { ...meta, chunks: 1, text: "a\n" });
    expect((await json(await both, 502)).error).toMatchObject({
      code: "agent_error",
      message: expect.stringMatching(/both/),
    });
  });

  it("the rows of finished queries reach D1 together: one per query, final, with when it was sent and ended", async () => {
    const { agent, vm, nodeId } = await vmOnline();
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const p = api(`/api/vms/${vm.uuid}/logs?lines=2`);
      const cmd = await agent.next("vm.logs");
      ids.push(cmd.id);
      if (i % 3 === 2) agent.reply(cmd, "error", { code: "log_not_found", message: "no such file" });
      else {
        agent.reply(cmd, "log.chunk", { seq: 0, text: "a\nb\n" });
        agent.reply(cmd, "result", {
          logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
          logSizeBytes: 4,
          linesReturned: 2,
          truncated: false,
          lastModified: null,
          chunks: 1,
        });
      }
      expect((await p).status).toBe(i % 3 === 2 ? 404 : 200);
    }
    // Each finished row is kept by the node's session until its next alarm writes them all: none is
    // in both places, none in neither, and one alarm leaves none behind.
    const session = env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId));
    const keptIds = () =>
      runInDurableObject(session, async (_o, state) =>
        [...state.storage.kv.list({ prefix: "queryrow:" })].map(([k]) => k.slice("queryrow:".length)),
      );
    const inD1 = async () =>
      (
        await env.DB.prepare(`SELECT id FROM requests WHERE id IN (${ids.map(() => "?").join(",")})`)
          .bind(...ids)
          .all<{ id: string }>()
      ).results.map((r) => r.id);
    const [kept, written] = [await keptIds(), await inD1()];
    expect([...kept, ...written].filter((id) => ids.includes(id)).sort()).toEqual([...ids].sort());
    await runInDurableObject(session, async (_o, state) => state.storage.kv.put("keptAt", 0)); // due now
    await runDurableObjectAlarm(session);
    expect(await keptIds()).toEqual([]);
    expect((await inD1()).sort()).toEqual([...ids].sort());
    const rows = await eventually(async () => {
      const { results } = await env.DB.prepare(`SELECT * FROM requests WHERE id IN (${ids.map(() => "?").join(",")})`)
        .bind(...ids)
        .all<any>();
      expect(results).toHaveLength(12);
      return results;
    });
    for (const row of rows) {
      const failed = ids.indexOf(row.id) % 3 === 2;
      expect(row).toMatchObject({
        kind: "vm.logs",
        vm_id: vm.uuid,
        status: failed ? "failed" : "done",
        requested_by: "admin",
      });
      expect(JSON.parse(row.params)).toEqual({ lines: 2 });
      expect(row.sent_at).toBeGreaterThanOrEqual(row.created_at);
      expect(row.finished_at).toBeGreaterThanOrEqual(row.sent_at);
      if (failed) expect(JSON.parse(row.error).code).toBe("log_not_found");
      else expect(JSON.parse(row.result)).toMatchObject({ linesReturned: 2 });
    }
  });

  it("passes on the rotated files the agent read and the ones it skipped", async () => {
    const { agent, vm } = await vmOnline();
    const p = api(`/api/vms/${vm.uuid}/logs?lines=5`);
    const cmd = await agent.next("vm.logs");
    agent.reply(cmd, "log.chunk", { seq: 0, text: "old\nnew\n" });
    const skipped = [{ file: `${vm.name}.log.2.gz`, reason: "compressed" }];
    agent.reply(cmd, "result", {
      logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
      logSizeBytes: 4,
      linesReturned: 2,
      truncated: true,
      lastModified: null,
      chunks: 1,
      files: [`${vm.name}.log`, `${vm.name}.log.1`],
      skipped,
    });
    expect(await json(await p)).toMatchObject({
      qemuLog: "old\nnew\n",
      files: [`${vm.name}.log`, `${vm.name}.log.1`],
      skipped,
      truncated: true,
    });
  });

  it("default 100 lines; 400 naming the range for bad values", async () => {
    const { agent, vm } = await vmOnline();
    const p = api(`/api/vms/${vm.uuid}/logs`);
    const cmd = await agent.next("vm.logs");
    expect(cmd.payload.lines).toBe(100);
    agent.reply(cmd, "error", { code: "log_not_found", message: "no such file" });
    await expectError(await p, 404, "log_not_found");
    for (const bad of ["0", "10001", "-5", "1.5", "abc", "1e3", "99999999999"]) {
      const err = await expectError(await api(`/api/vms/${vm.uuid}/logs?lines=${bad}`), 400, "invalid_request");
      expect(err.message).toContain("1 to 10000");
    }
  });

  it("504 agent_timeout when the agent does not answer; 503 when the node is offline", async () => {
    const { agent, vm, nodeId } = await vmOnline();
    await expectError(await api(`/api/vms/${vm.uuid}/logs`), 504, "agent_timeout");
    agent.ws.close(1000, "bye");
    await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
    await expectError(await api(`/api/vms/${vm.uuid}/logs`), 503, "node_offline");
  });

  it("an answer with missing chunks is an error, not a silently short log", async () => {
    const { agent, vm } = await vmOnline();
    const p = api(`/api/vms/${vm.uuid}/logs`);
    const cmd = await agent.next("vm.logs");
    agent.reply(cmd, "log.chunk", { seq: 0, text: "x" });
    agent.reply(cmd, "result", {
      logPath: "/l",
      logSizeBytes: 1,
      linesReturned: 1,
      truncated: false,
      lastModified: null,
      chunks: 2,
    });
    await expectError(await p, 502, "agent_error");
  });

  it("more log text than an answer may carry is refused, not buffered", async () => {
    const { agent, vm } = await vmOnline();
    const p = api(`/api/vms/${vm.uuid}/logs`);
    const cmd = await agent.next("vm.logs");
    const piece = "y".repeat(900 * 1024);
    for (let seq = 0; seq < 10; seq++) agent.reply(cmd, "log.chunk", { seq, text: piece });
    const err = await expectError(await p, 502, "agent_error");
    expect(err.message).toContain("log text");
  });

  it("is rate limited per token (429 rate_limited with Retry-After); other tokens unaffected", async () => {
    const token = await createToken("operator");
    const missing = uuid();
    let limited: Response | null = null;
    // Room for two limits: the limiter's minute windows follow the clock, one may end mid-loop.
    for (let i = 0; i < 250 && !limited; i++) {
      const res = await api(`/api/vms/${missing}/logs`, { token });
      if (res.status === 429) limited = res;
      else await expectError(res, 404);
    }
    expect(limited).not.toBeNull();
    expect(limited!.headers.get("retry-after")).toBe("60");
    await expectError(limited!, 429, "rate_limited");
    await expectError(await api(`/api/vms/${missing}/logs`, { token: await createToken("operator") }), 404);
  });
});
