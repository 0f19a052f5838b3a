// Serial consoles through the control plane: tickets (`POST /api/vms/:id/console`), the browser
// socket (`/api/vms/:id/console/ws`) and the node's console relay, with TestAgent as the agent end
// (console.open / console.opened / binary output and input / console.ack / console.closed).
import { env, runInDurableObject, SELF } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import {
  CONSOLE_MAX_VIEWERS,
  CONSOLE_TOO_SLOW_BYTES,
  decodeLinkFrame,
  decodeOutput,
  encodeLinkOutput,
} from "../../protocol/console.ts";
import {
  agentsClosedAfterEach,
  api,
  BASE,
  createToken,
  eventually,
  expectError,
  json,
  session,
  TestAgent,
  vmInfo,
  type Frame,
} from "./support.ts";
import type { AccessSettings } from "../../worker/access/settings.ts";
import { hashSecret } from "../../worker/auth.ts";
import type { NodeSession } from "../../worker/session/node-session.ts";
import type { ConsoleRelay } from "../../worker/session/console-relay.ts";

const agents = agentsClosedAfterEach();
const consoles: ConsoleClient[] = [];
afterEach(() => {
  for (const c of consoles.splice(0)) c.close();
});
const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** A browser's console socket on a real WebSocket: text messages parsed, output frames decoded. */
class ConsoleClient {
  readonly ws: WebSocket;
  readonly messages: any[] = [];
  readonly output: { offset: number; bytes: Uint8Array }[] = [];
  closed: { code: number; reason: string } | null = null;

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e) => {
      if (typeof e.data === "string") this.messages.push(JSON.parse(e.data));
      else this.output.push(decodeOutput(new Uint8Array(e.data as ArrayBuffer))!);
    });
    ws.addEventListener("close", (e) => {
      this.closed = { code: e.code, reason: e.reason };
    });
  }

  static upgrade(vmId: string, headers: Record<string, string> = {}): Promise<Response> {
    return SELF.fetch(`${BASE}/api/vms/${vmId}/console/ws`, { headers: { upgrade: "websocket", ...headers } });
  }

  static async open(vmId: string, hello: unknown): Promise<ConsoleClient> {
    const res = await ConsoleClient.upgrade(vmId);
    expect(res.status, res.status === 101 ? "" : await res.text()).toBe(101);
    res.webSocket!.accept();
    const client = new ConsoleClient(res.webSocket!);
    consoles.push(client);
    client.ws.send(JSON.stringify(hello));
    return client;
  }

  async message(type: string, timeoutMs = 5000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find((m) => m.type === type);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no ${type} in ${JSON.stringify(this.messages)}`);
      await new Promise((r) => setTimeout(r, 15));
    }
  }

  /** All output received, joined, once it reaches `until` (an offset). */
  async shown(until: number, timeoutMs = 5000): Promise<{ from: number; text: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const last = this.output.at(-1);
      if (last && last.offset + last.bytes.byteLength >= until) break;
      if (Date.now() > deadline)
        throw new Error(`output reached ${last ? last.offset + last.bytes.byteLength : "nothing"}, wanted ${until}`);
      await new Promise((r) => setTimeout(r, 15));
    }
    // Frames follow each other exactly: no gap, no repeat.
    for (let i = 1; i < this.output.length; i++)
      expect(this.output[i].offset).toBe(this.output[i - 1].offset + this.output[i - 1].bytes.byteLength);
    return { from: this.output[0].offset, text: this.output.map((o) => decode(o.bytes)).join("") };
  }

  async waitClosed(timeoutMs = 5000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 15));
    if (!this.closed) throw new Error(`console did not close; got ${JSON.stringify(this.messages)}`);
    return this.messages.find((m) => m.type === "closed");
  }

  type(s: string | Uint8Array): void {
    this.ws.send(typeof s === "string" ? text(s) : s);
  }

  close(): void {
    try {
      this.ws.close(1000, "left");
    } catch {
      // closed already
    }
  }
}

async function nodeWithVm(features = ["console"]) {
  const s = await TestAgent.forNewNode();
  s.agent.hello("host.test", features);
  agents.push(s.agent);
  const vm = vmInfo(`con ${s.name} ✓`);
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { ...s, vm };
}

async function ticket(vmId: string, mode: "rw" | "ro" = "rw", token?: string, force?: boolean): Promise<string> {
  const body = await json<{ ticket: string; expiresAt: string; url: string }>(
    await api(`/api/vms/${vmId}/console`, { json: { mode, ...(force ? { force } : {}) }, token }),
    201,
  );
  return body.ticket;
}

/** Opens a console and, for the first one of a VM, plays the agent's part of opening its stream. */
async function openConsole(agent: TestAgent, vmId: string, mode: "rw" | "ro" = "rw", token?: string) {
  const client = await ConsoleClient.open(vmId, { type: "hello", ticket: await ticket(vmId, mode, token) });
  const ready = await client.message("ready");
  return { client, ready };
}

/** The agent's side of a new stream: the open command, answered. */
async function agentOpens(agent: TestAgent): Promise<Frame> {
  const open = await agent.next("console.open");
  agent.send({ type: "console.opened", id: open.id, payload: {} });
  return open;
}

function output(agent: TestAgent, open: Frame, agentOffset: number, s: string): number {
  agent.ws.send(encodeLinkOutput(open.payload.channel, agentOffset, text(s)));
  return agentOffset + text(s).byteLength;
}

async function agentInput(agent: TestAgent, count: number, timeoutMs = 5000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  while (agent.binary.length < count) {
    if (Date.now() > deadline) throw new Error(`agent got ${agent.binary.length} input frames, wanted ${count}`);
    await new Promise((r) => setTimeout(r, 15));
  }
  return agent.binary.map((b) => {
    const f = decodeLinkFrame(b)!;
    expect(f.kind).toBe("input");
    return decode(f.bytes);
  });
}

async function events(vmId: string): Promise<any[]> {
  return (await json(await api(`/api/vms/${vmId}/events`))).events;
}

describe("console tickets", { timeout: 30_000 }, () => {
  it("a viewer gets 403 (and a console.denied event naming it); an operator gets {ticket, expiresAt, url}", async () => {
    const { vm } = await nodeWithVm();
    const viewer = await createToken("viewer", "viewer Zoë");
    await expectError(
      await api(`/api/vms/${vm.uuid}/console`, { json: { mode: "ro" }, token: viewer }),
      403,
      "forbidden",
    );
    const denied = (await events(vm.uuid)).find((e) => e.action === "console.denied");
    expect(denied.actor).toBe("token:viewer Zoë");

    const res = await json(
      await api(`/api/vms/${vm.uuid}/console`, { json: { mode: "rw" }, token: await createToken("operator") }),
      201,
    );
    expect(res.ticket).toMatch(/^qxc_[A-Za-z0-9_-]{43}$/);
    expect(res.url).toBe(`/api/vms/${vm.uuid}/console/ws`);
    const ttl = Date.parse(res.expiresAt) - Date.now();
    expect(ttl).toBeGreaterThan(20_000);
    expect(ttl).toBeLessThanOrEqual(30_000);
  });

  it("refuses bad bodies, unknown VMs and no token with the error envelope", async () => {
    const { vm } = await nodeWithVm();
    await expectError(await api(`/api/vms/${vm.uuid}/console`, { json: { mode: "write" } }), 400, "invalid_request");
    await expectError(
      await api(`/api/vms/${vm.uuid}/console`, { json: { mode: "rw", extra: 1 } }),
      400,
      "invalid_request",
    );
    await expectError(
      await api(`/api/vms/${vm.uuid}/console`, { body: "not json", headers: { "content-type": "application/json" } }),
      400,
    );
    await expectError(
      await api(`/api/vms/0a0a0a0a-0000-4000-8000-000000000000/console`, { json: { mode: "rw" } }),
      404,
      "not_found",
    );
    await expectError(await api(`/api/vms/${vm.uuid}/console`, { json: { mode: "rw" }, token: null }), 401);
  });

  it("the socket refuses a cross-origin upgrade and a plain GET; a replayed ticket is refused", async () => {
    const { agent, vm } = await nodeWithVm();
    await expectError(await ConsoleClient.upgrade(vm.uuid, { origin: "https://evil.example" }), 403, "cross_origin");
    await expectError(await SELF.fetch(`${BASE}/api/vms/${vm.uuid}/console/ws`), 426, "upgrade_required");
    const same = await ConsoleClient.upgrade(vm.uuid, { origin: BASE });
    expect(same.status).toBe(101);
    same.webSocket!.accept();
    same.webSocket!.close();

    const t = await ticket(vm.uuid);
    const first = await ConsoleClient.open(vm.uuid, { type: "hello", ticket: t });
    await first.message("ready");
    await agentOpens(agent);
    const replay = await ConsoleClient.open(vm.uuid, { type: "hello", ticket: t });
    expect((await replay.waitClosed()).reason).toBe("bad_hello");
    expect(replay.messages.some((m) => m.type === "ready")).toBe(false);
    const garbage = await ConsoleClient.open(vm.uuid, { type: "hello", ticket: "qxc_nope" });
    expect((await garbage.waitClosed()).reason).toBe("bad_hello");
  });

  it("a 31-second-old ticket is refused", { timeout: 45_000 }, async () => {
    const { vm } = await nodeWithVm();
    const t = await ticket(vm.uuid);
    await new Promise((r) => setTimeout(r, 31_000));
    const late = await ConsoleClient.open(vm.uuid, { type: "hello", ticket: t });
    expect((await late.waitClosed()).reason).toBe("bad_hello");
  });
});

describe("console relay", { timeout: 30_000 }, () => {
  it("one stream per VM: output carries offsets, a second opener sees recent output from a line start with the same offsets and watches", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "rw");
    expect(a.ready).toMatchObject({ type: "ready", mode: "rw", writer: true, offset: 0 });
    expect(typeof a.ready.resume).toBe("string");
    const open = await agentOpens(agent);
    expect(open.payload).toMatchObject({ vmId: vm.uuid, name: vm.name, force: false, windowBytes: 256 * 1024 });
    let at = output(agent, open, 0, "SeaBIOS (version 1.16)\r\n");
    at = output(agent, open, at, "iPXE booting\r\npartial line");
    expect((await a.client.shown(at)).text).toBe("SeaBIOS (version 1.16)\r\niPXE booting\r\npartial line");
    expect((await agent.next("console.ack")).payload.offset).toBeGreaterThan(0);

    const b = await openConsole(agent, vm.uuid, "rw");
    expect(b.ready).toMatchObject({ mode: "rw", writer: false, offset: 0 });
    const shown = await b.client.shown(at);
    expect(shown.text).toBe("SeaBIOS (version 1.16)\r\niPXE booting\r\npartial line");
    at = output(agent, open, at, " more\r\n");
    await a.client.shown(at);
    await b.client.shown(at);
    expect(b.client.output.at(-1)!.offset).toBe(a.client.output.at(-1)!.offset);
    // still one stream
    expect(agent.frames.filter((f) => f.type === "console.open")).toHaveLength(0);

    // The writer's input reaches the agent; the watcher's is dropped by the control plane and it is told.
    b.client.type("watcher-typed");
    expect((await b.client.message("notice")).code).toBe("not_writer");
    a.client.type("echo hi\r");
    expect(await agentInput(agent, 1)).toEqual(["echo hi\r"]);

    // take moves the writer role; the old writer watches on.
    b.client.ws.send(JSON.stringify({ type: "take" }));
    expect(await b.client.message("writer")).toEqual({ type: "writer", writer: true });
    expect(await a.client.message("writer")).toEqual({ type: "writer", writer: false });
    b.client.type("now b");
    expect(await agentInput(agent, 2)).toEqual(["echo hi\r", "now b"]);
    const evs = await eventually(async () => {
      const e = await events(vm.uuid);
      expect(e.some((x) => x.action === "console.writer_changed")).toBe(true);
      return e;
    });
    const opened = evs.filter((e) => e.action === "console.opened");
    expect(opened).toHaveLength(2);
    for (const e of opened) expect(e).toMatchObject({ type: "serial", reason: null });
  });

  it("a ro opener never writes; input over 4 KiB or over 100 frames a second is dropped and said", async () => {
    const { agent, vm } = await nodeWithVm();
    const ro = await openConsole(agent, vm.uuid, "ro");
    expect(ro.ready).toMatchObject({ mode: "ro", writer: false });
    await agentOpens(agent);
    ro.client.ws.send(JSON.stringify({ type: "take" }));
    ro.client.type("x");
    expect((await ro.client.message("notice")).code).toBe("not_writer");
    expect(ro.client.messages.some((m) => m.type === "writer")).toBe(false);

    const rw = await openConsole(agent, vm.uuid, "rw");
    expect(rw.ready.writer).toBe(true);
    rw.client.type(new Uint8Array(4097));
    expect((await rw.client.message("notice")).code).toBe("input_too_large");
    for (let i = 0; i < 150; i++) rw.client.type("k");
    await eventually(async () => expect(rw.client.messages.some((m) => m.code === "input_too_fast")).toBe(true));
    const got = await agentInput(agent, 100);
    expect(got.length).toBeLessThan(150);
    expect(got.every((g) => g === "k")).toBe(true);
  });

  it("a dropped socket resumes from its last byte with nothing lost or repeated; a resume token is single use", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "rw");
    const open = await agentOpens(agent);
    let at = output(agent, open, 0, "line one\r\n");
    await a.client.shown(at);
    const resume = a.ready.resume;
    const had = at;
    a.client.close();
    at = output(agent, open, at, "while away\r\n");
    at = output(agent, open, at, "still away\r\n");
    await new Promise((r) => setTimeout(r, 100));
    const back = await ConsoleClient.open(vm.uuid, { type: "hello", resume, from: had });
    const ready = await back.message("ready");
    expect(ready).toMatchObject({ offset: had, writer: true });
    expect(ready.resume).not.toBe(resume);
    const shown = await back.shown(at);
    expect(shown.from).toBe(had);
    expect(shown.text).toBe("while away\r\nstill away\r\n");
    const again = await ConsoleClient.open(vm.uuid, { type: "hello", resume, from: had });
    expect((await again.waitClosed()).reason).toBe("bad_hello");
    // same stream all along
    expect(agent.frames.filter((f) => f.type === "console.open")).toHaveLength(0);
  });

  it("an Access identity's console resumes only while its role, looked up again under the current settings, allows it", async () => {
    const { agent, vm, nodeId } = await nodeWithVm();
    const stub = env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId));
    // This pool runs without Access sign-in; the relay is handed settings as a deploy would change them.
    const useAccess = (operators: string[] | null) =>
      runInDurableObject(stub, (instance: NodeSession) => {
        const relay = (instance as unknown as { consoles: { access: AccessSettings | null } }).consoles;
        relay.access = operators && {
          teamDomain: "team.example",
          audience: "aud",
          issuer: "https://team.example",
          certsUrl: "https://team.example/cdn-cgi/access/certs",
          keysRefetchMs: 60_000,
          admins: new Set(),
          operators: new Set(operators),
        };
      });
    await useAccess(["team-ops"]);
    const ticket = `qxc_${crypto.randomUUID()}`;
    const kept = await stub.issueConsoleTicket(await hashSecret(ticket), {
      vmId: vm.uuid,
      mode: "rw",
      force: false,
      principal: {
        id: "access:zoë@example.com",
        name: "zoë@example.com",
        actor: "user:zoë@example.com",
        role: "operator",
        via: "access",
        roleNames: ["zoë@example.com", "team-ops"],
      },
      expiresAt: Date.now() + 30_000,
    });
    expect(kept.ok).toBe(true);
    const first = await ConsoleClient.open(vm.uuid, { type: "hello", ticket });
    const ready = await first.message("ready");
    const open = await agentOpens(agent);
    const at = output(agent, open, 0, "login: ");
    await first.shown(at);
    first.close();
    // Still an operator through its group: the resume is let in.
    const back = await ConsoleClient.open(vm.uuid, { type: "hello", resume: ready.resume, from: at });
    const again = await back.message("ready");
    expect(again.writer).toBe(true);
    back.close();
    // The group is no longer among the operators: the next resume ends with revoked.
    await useAccess([]);
    const refused = await ConsoleClient.open(vm.uuid, { type: "hello", resume: again.resume, from: at });
    expect((await refused.waitClosed()).reason).toBe("revoked");
  });

  it("a resume that arrives before the dropped socket's close takes the session over", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "rw");
    const open = await agentOpens(agent);
    const at = output(agent, open, 0, "before\r\n");
    await a.client.shown(at);
    const back = await ConsoleClient.open(vm.uuid, { type: "hello", resume: a.ready.resume, from: at });
    expect(await back.message("ready")).toMatchObject({ offset: at, writer: true });
    await a.client.waitClosed();
    back.type("still the writer");
    expect(await agentInput(agent, 1)).toEqual(["still the writer"]);
  });

  it("a browser that does not ack is cut with too_slow and resumes", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "ro");
    const open = await agentOpens(agent);
    const chunk = "x".repeat(16 * 1024);
    let at = 0;
    while (at <= CONSOLE_TOO_SLOW_BYTES + chunk.length) at = output(agent, open, at, chunk);
    expect((await a.client.waitClosed()).reason).toBe("too_slow");
    const received = a.client.output.reduce((n, o) => n + o.bytes.byteLength, 0);
    const back = await ConsoleClient.open(vm.uuid, { type: "hello", resume: a.ready.resume, from: received });
    expect((await back.message("ready")).offset).toBe(received);
    expect((await back.shown(at)).text.length).toBe(at - received);
  });

  it("the agent's end reaches every console: console_busy, vm_stopped; force is passed on", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "rw");
    const open = await agent.next("console.open");
    agent.send({
      type: "console.closed",
      id: open.id,
      payload: { reason: "console_busy", message: "Active console session exists for this domain" },
    });
    const closed = await a.client.waitClosed();
    expect(closed.reason).toBe("console_busy");
    expect(closed.message).toContain("force");

    const forced = await ConsoleClient.open(vm.uuid, {
      type: "hello",
      ticket: await ticket(vm.uuid, "rw", undefined, true),
    });
    await forced.message("ready");
    const again = await agentOpens(agent);
    expect(again.payload.force).toBe(true);
    agent.send({ type: "console.closed", id: again.id, payload: { reason: "vm_stopped" } });
    expect((await forced.waitClosed()).reason).toBe("vm_stopped");
    await eventually(async () =>
      expect((await events(vm.uuid)).filter((e) => e.action === "console.closed").map((e) => e.reason)).toEqual(
        expect.arrayContaining(["console_busy", "vm_stopped"]),
      ),
    );
  });

  it("the agent going away ends consoles with host_offline; the scrollback stays readable while offline", async () => {
    const { agent, vm, nodeId } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "rw");
    const open = await agentOpens(agent);
    const at = output(agent, open, 0, "first\r\nkept while offline\r\n");
    await a.client.shown(at);
    agent.ws.close(1000, "agent stops");
    expect((await a.client.waitClosed()).reason).toBe("host_offline");
    await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
    const late = await ConsoleClient.open(vm.uuid, { type: "hello", ticket: await ticket(vm.uuid, "ro") });
    expect((await late.waitClosed()).reason).toBe("host_offline");
    expect((await late.message("ready")).writer).toBe(false);
    expect((await late.shown(at)).text).toContain("kept while offline\r\n");
  });

  it("revoking the token ends its consoles with revoked within a second, and its resume token is dead", async () => {
    const { agent, vm } = await nodeWithVm();
    const tokenRes = await json(await api("/api/tokens", { json: { name: "op to revoke", role: "operator" } }), 201);
    const a = await openConsole(agent, vm.uuid, "rw", tokenRes.token);
    await agentOpens(agent);
    const other = await openConsole(agent, vm.uuid, "ro");
    const started = Date.now();
    await json(await api(`/api/tokens/${tokenRes.id}`, { method: "DELETE" }));
    expect((await a.client.waitClosed()).reason).toBe("revoked");
    expect(Date.now() - started).toBeLessThan(1000);
    expect(other.client.closed).toBeNull();
    const back = await ConsoleClient.open(vm.uuid, { type: "hello", resume: a.ready.resume, from: 0 });
    expect((await back.waitClosed()).reason).toBe("bad_hello");
  });

  it("at most 8 consoles per VM; the stream is closed on the agent after the last one left and the linger passed", async () => {
    const { agent, vm } = await nodeWithVm();
    const open: ConsoleClient[] = [];
    for (let i = 0; i < CONSOLE_MAX_VIEWERS; i++) open.push((await openConsole(agent, vm.uuid, "ro")).client);
    const stream = await agentOpens(agent);
    await expectError(await api(`/api/vms/${vm.uuid}/console`, { json: { mode: "ro" } }), 429, "too_many_viewers");
    for (const c of open) c.close();
    const close = await agent.next("console.close", 8000);
    expect(close.id).toBe(stream.id);
  });

  it("typed input is never stored: no marker in events or the object's storage", async () => {
    const { agent, vm, nodeId } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "rw");
    const open = await agentOpens(agent);
    const marker = `secret-${crypto.randomUUID()}`;
    a.client.type(marker);
    await agentInput(agent, 1);
    agent.send({ type: "console.closed", id: open.id, payload: { reason: "vm_stopped" } });
    await a.client.waitClosed();
    await eventually(
      async () => expect((await events(vm.uuid)).some((e) => e.action === "console.closed")).toBe(true),
      8000,
    );
    const tables = await env.DB.prepare(
      "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'",
    ).all<{ name: string }>();
    for (const { name } of tables.results) {
      const rows = await env.DB.prepare(`SELECT * FROM "${name}"`).all();
      expect(JSON.stringify(rows.results)).not.toContain(marker);
    }
    const kept = await env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId)).consoleScrollback(vm.uuid);
    expect(decode(kept.text)).not.toContain(marker);
  });

  it("a console with neither input nor output for CONSOLE_IDLE_MS ends with idle_timeout", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "rw");
    await agentOpens(agent);
    const started = Date.now();
    const alive = setInterval(() => agent.send('{"type":"ping"}'), 1000); // the node stays online meanwhile
    try {
      expect((await a.client.waitClosed(15_000)).reason).toBe("idle_timeout");
    } finally {
      clearInterval(alive);
    }
    expect(Date.now() - started).toBeGreaterThanOrEqual(5_000); // CONSOLE_IDLE_MS is 6 s in this suite
  });

  it("an agent without the console feature gets no console.open: the console says unsupported", async () => {
    const { agent, vm } = await nodeWithVm([]);
    const a = await openConsole(agent, vm.uuid, "rw");
    expect((await a.client.waitClosed()).reason).toBe("unsupported");
    expect(agent.frames.some((f) => f.type === "console.open")).toBe(false);
  });
});

describe("what the relay holds (the soak's debug counts)", { timeout: 30_000 }, () => {
  /** The console room's counts, read inside the object. */
  const relayCounts = (nodeId: string) =>
    runInDurableObject(session(nodeId), (instance: NodeSession) =>
      (instance as unknown as { consoles: ConsoleRelay }).consoles.debugCounts(),
    );

  it("a session's input budget lives while its socket does; kept output and records are counted", async () => {
    const { agent, vm, nodeId } = await nodeWithVm();
    const a = await openConsole(agent, vm.uuid, "rw");
    const open = await agentOpens(agent);
    const at = output(agent, open, 0, "login: ");
    await a.client.shown(at);
    a.client.type("root\r");
    await agentInput(agent, 1);
    expect(await relayCounts(nodeId)).toMatchObject({
      consoleInputBudgets: 1,
      storedConsoles: 1,
      storedConsoleSessions: 1,
      consoleOutputRows: 1,
      consoleOutputBytes: at,
    });
    a.client.close();
    // Its session waits for a resume; its input budget is gone at once.
    await eventually(async () => expect((await relayCounts(nodeId)).consoleInputBudgets).toBe(0));
  });
});
