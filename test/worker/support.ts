// Test helpers for the Worker suite: API calls through SELF, tokens and nodes, and TestAgent, a
// protocol-speaking agent on a real WebSocket into the node's Durable Object (no fakes involved).
import { SELF, env } from "cloudflare:test";
import { afterEach, expect } from "vitest";
import { PROTOCOL_VERSION, type LibvirtState, type VmInfo, mapLibvirtState } from "../../protocol/wire.ts";

export const ADMIN = "test-admin-token";
export const BASE = "http://cp.test";

export type ApiInit = {
  method?: string;
  token?: string | null;
  json?: unknown;
  body?: string;
  headers?: Record<string, string>;
};

export async function api(path: string, init: ApiInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const token = init.token === undefined ? ADMIN : init.token;
  if (token !== null) headers.set("authorization", `Bearer ${token}`);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set("content-type", "application/json");
    body = JSON.stringify(init.json);
  }
  return SELF.fetch(`${BASE}${path}`, { method: init.method ?? (body !== undefined ? "POST" : "GET"), headers, body });
}

/** Asserts the error envelope and returns its code. */
export async function expectError(
  res: Response,
  status: number,
  code?: string,
): Promise<{ code: string; message: string }> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get("content-type") ?? "").toContain("application/json");
  const body = JSON.parse(text) as { success: boolean; error: { code: string; message: string } };
  expect(body.success).toBe(false);
  expect(typeof body.error.message).toBe("string");
  expect(body.error.message.length).toBeGreaterThan(0);
  if (code) expect(body.error.code).toBe(code);
  return body.error;
}

export async function json<T = any>(res: Response, status = 200): Promise<T> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  return JSON.parse(text) as T;
}

let seq = 0;
export const unique = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${++seq}`;

export async function createToken(role: "viewer" | "operator" | "admin", name = unique(role)): Promise<string> {
  const body = await json<{ token: string }>(await api("/api/tokens", { json: { name, role } }), 201);
  return body.token;
}

export async function createNode(
  name = unique("node"),
): Promise<{ node: { id: string; name: string }; joinToken: string }> {
  return json(await api("/api/nodes", { json: { name } }), 201);
}

let enrollSeq = 0;
/** Each enrolling host from an address of its own, as real hosts are: enrollment is limited per
 *  address (30 a minute), and a file of many short tests enrolls more than that in a minute. */
const nextHostIp = () => {
  const n = ++enrollSeq;
  return `10.9.${(n >> 8) & 255}.${n & 255}`;
};

export async function enroll(
  joinToken: string,
  hostname = "host.test",
): Promise<{ nodeId: string; credential: string }> {
  return json(
    await SELF.fetch(`${BASE}/agent/enroll`, {
      method: "POST",
      headers: { "content-type": "application/json", "cf-connecting-ip": nextHostIp() },
      body: JSON.stringify({ joinToken, hostname }),
    }),
  );
}

let uuidSeq = 0;
/** Deterministic-looking UUIDs that are unique within a run. */
export function uuid(): string {
  const n = (++uuidSeq).toString(16).padStart(12, "0");
  return `${crypto.randomUUID().slice(0, 24)}${n}`;
}

export function vmInfo(name: string, libvirtState: LibvirtState = "running", id = uuid()): VmInfo {
  return { uuid: id, name, state: mapLibvirtState(libvirtState), libvirtState, vcpus: 2, memoryMiB: 2048 };
}

export type Frame = { type: string; id: string; payload: any };

/** A protocol-speaking agent over a real WebSocket (SELF.fetch upgrade -> res.webSocket). */
export class TestAgent {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  /** binary frames (console output the agent was sent input on), in arrival order */
  readonly binary: Uint8Array[] = [];
  closed: { code: number; reason: string } | null = null;
  private wakers: (() => void)[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e) => {
      if (typeof e.data === "string") this.frames.push(JSON.parse(e.data) as Frame);
      else this.binary.push(new Uint8Array(e.data as ArrayBuffer));
      this.wake();
    });
    ws.addEventListener("close", (e) => {
      this.closed = { code: e.code, reason: e.reason };
      this.wake();
    });
  }

  private wake() {
    const w = this.wakers;
    this.wakers = [];
    for (const f of w) f();
  }

  static async connect(credential: string): Promise<TestAgent> {
    const res = await SELF.fetch(`${BASE}/agent/connect`, {
      headers: { upgrade: "websocket", authorization: `Bearer ${credential}` },
    });
    expect(res.status, res.status === 101 ? "" : await res.text()).toBe(101);
    const ws = res.webSocket!;
    ws.accept();
    const agent = new TestAgent(ws);
    const welcome = await agent.next("welcome");
    expect(welcome.payload.nodeId).toBeTruthy();
    return agent;
  }

  /** Enrolls a fresh node, connects and says hello. */
  static async forNewNode(
    name = unique("node"),
  ): Promise<{ agent: TestAgent; nodeId: string; credential: string; name: string }> {
    const { joinToken } = await createNode(name);
    const { nodeId, credential } = await enroll(joinToken);
    const agent = await TestAgent.connect(credential);
    agent.hello();
    return { agent, nodeId, credential, name };
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  hello(hostname = "host.test", features?: string[]): void {
    this.send({
      type: "hello",
      id: "h1",
      payload: {
        agentVersion: "0.1.0-test",
        hostname,
        libvirtVersion: "9.0.0",
        protocolVersion: PROTOCOL_VERSION,
        ...(features ? { features } : {}),
      },
    });
  }

  /** A full inventory in chunks of `chunk`, ending with `done`. */
  inventory(vms: VmInfo[], syncId = unique("sync"), chunk = 500): void {
    if (vms.length === 0)
      this.send({ type: "inventory", id: syncId, payload: { syncId, seq: 0, done: true, vms: [] } });
    for (let i = 0, s = 0; i < vms.length; i += chunk, s++) {
      this.send({
        type: "inventory",
        id: `${syncId}-${s}`,
        payload: { syncId, seq: s, done: i + chunk >= vms.length, vms: vms.slice(i, i + chunk) },
      });
    }
  }

  /** The next frame (of `type` if given) not consumed yet. */
  async next(type?: string, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex((f) => !type || f.type === type);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (this.closed)
        throw new Error(
          `socket closed (${this.closed.code} ${this.closed.reason}) while waiting for ${type ?? "a frame"}`,
        );
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${type ?? "frame"} within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wakers.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  async waitClosed(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (!this.closed) throw new Error("socket did not close");
    return this.closed;
  }

  reply(cmd: Frame, type: "ack" | "result" | "error" | "log.chunk", payload: unknown = {}): void {
    this.send({ type, id: cmd.id, payload });
  }

  close(): void {
    try {
      this.ws.close(1000, "test done");
    } catch {
      // already closed
    }
  }
}

/** Polls until `check` passes (for effects the Durable Object applies asynchronously). */
export async function eventually<T>(check: () => Promise<T>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/** The agents a test file opens, closed after each of its tests. */
export function agentsClosedAfterEach(): TestAgent[] {
  const open: TestAgent[] = [];
  afterEach(() => {
    for (const a of open.splice(0)) a.close();
  });
  return open;
}

/** A dashboard viewer of `GET /api/vms/:id/logs/follow` on a real WebSocket, offering the token as
 *  the `bearer.<token>` subprotocol as a browser does (or as a header, as a CLI may). */
export class FollowViewer {
  readonly ws: WebSocket;
  readonly protocol: string | null;
  readonly messages: any[] = [];
  closed: { code: number; reason: string } | null = null;

  private constructor(ws: WebSocket, protocol: string | null) {
    this.ws = ws;
    this.protocol = protocol;
    ws.addEventListener("message", (e) => this.messages.push(JSON.parse(e.data as string)));
    ws.addEventListener("close", (e) => {
      this.closed = { code: e.code, reason: e.reason };
    });
  }

  /** The upgrade's raw answer (for refusals). */
  static request(
    vmId: string,
    token: string | null = ADMIN,
    how: "subprotocol" | "header" = "subprotocol",
  ): Promise<Response> {
    const headers: Record<string, string> = { upgrade: "websocket" };
    if (token !== null && how === "subprotocol") headers["sec-websocket-protocol"] = `qx.follow.v1, bearer.${token}`;
    if (token !== null && how === "header") headers.authorization = `Bearer ${token}`;
    return SELF.fetch(`${BASE}/api/vms/${vmId}/logs/follow`, { headers });
  }

  static async open(
    vmId: string,
    token: string = ADMIN,
    how: "subprotocol" | "header" = "subprotocol",
  ): Promise<FollowViewer> {
    const res = await FollowViewer.request(vmId, token, how);
    expect(res.status, res.status === 101 ? "" : await res.text()).toBe(101);
    res.webSocket!.accept();
    return new FollowViewer(res.webSocket!, res.headers.get("sec-websocket-protocol"));
  }

  /** Waits until `count` messages have arrived (in total) and returns them. */
  async received(count: number, timeoutMs = 5000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < count) {
      if (Date.now() > deadline) throw new Error(`got ${JSON.stringify(this.messages)}, wanted ${count} messages`);
      await new Promise((r) => setTimeout(r, 15));
    }
    return this.messages;
  }

  async waitClosed(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 15));
    if (!this.closed) throw new Error("viewer socket did not close");
    return this.closed;
  }

  close(): void {
    try {
      this.ws.close(1000, "viewer left");
    } catch {
      // already closed
    }
  }
}

/** The Durable Object that holds a node's session. */
export const session = (nodeId: string) => env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId));
