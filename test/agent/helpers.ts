// Shared pieces of the agent's tests: the test-driver host fixture, a silent logger, a recorder of
// what the agent sends (in place of the socket, where the socket is not what is under test), a
// loopback control plane that speaks protocol/wire.ts and can misbehave on purpose, and the real
// agent process.
import type { ChildProcess } from "node:child_process";
import { spawnOwned } from "../../scripts/child-processes.ts";
import { mkdtempSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { WebSocketServer, type WebSocket } from "ws";
import {
  AgentMessage,
  PING_FRAME,
  PONG_FRAME,
  parseFrame,
  type AgentMessage as AgentMsg,
} from "../../protocol/wire.ts";
import { createLogger } from "../../agent/logger.ts";

export const ROOT = resolve(import.meta.dirname, "../..");
export const NODE_XML = join(import.meta.dirname, "fixtures/node.xml");
export const TEST_URI = `test://${NODE_XML}`;
export const AGENT_MAIN = join(ROOT, "agent/main.ts");
export const silentLog = createLogger("silent");

/** The fixture's domains: one per libvirt state. */
export const VMS = {
  nostate: { uuid: "11111111-0000-4000-8000-000000000000", name: "idle-nostate" },
  running: { uuid: "11111111-0000-4000-8000-000000000001", name: "web-running" },
  blocked: { uuid: "11111111-0000-4000-8000-000000000002", name: "batch-blocked" },
  paused: { uuid: "11111111-0000-4000-8000-000000000003", name: "db-paused" },
  shutdown: { uuid: "11111111-0000-4000-8000-000000000004", name: "app-shutdown" },
  shutoff: { uuid: "11111111-0000-4000-8000-000000000005", name: "old-shutoff" },
  crashed: { uuid: "11111111-0000-4000-8000-000000000006", name: "legacy-crashed" },
  pmsuspended: { uuid: "11111111-0000-4000-8000-000000000007", name: "lab-pmsuspended" },
} as const;

export const tempDir = (prefix = "qx-agent-test-") => mkdtempSync(join(tmpdir(), prefix));

/** Collects the frames the agent would send; every frame is checked against the wire schema. */
export function recorder() {
  const sent: AgentMsg[] = [];
  const send = (msg: AgentMsg) => {
    const parsed = AgentMessage.safeParse(JSON.parse(JSON.stringify(msg)));
    if (!parsed.success)
      throw new Error(`agent sent a frame outside the protocol: ${JSON.stringify(msg).slice(0, 300)}`);
    sent.push(parsed.data);
    return true;
  };
  return { sent, send, of: (id: string) => sent.filter((m) => m.id === id) };
}

export type Behaviour =
  | "accept" // upgrade, welcome, answer pings
  | "refuse401" // 401 on the upgrade
  | "refuse503" // 503 on the upgrade
  | "drop" // upgrade then close at once
  | "stallHandshake" // accept TCP, never answer the upgrade
  | "silent" // upgrade, welcome, never answer pings
  | "close4001"; // upgrade then close with CLOSE.unauthorized

/**
 * A loopback control plane: `POST /agent/enroll` and `GET /agent/connect` (ws). What it does with
 * each connection attempt is decided by `behaviour(attempt)`. Not the real Worker (that one is
 * exercised by the end-to-end suite); this one can drop, refuse and stall on demand.
 */
export class LoopbackControlPlane {
  readonly server: Server;
  readonly wss: WebSocketServer;
  url = "";
  attempts: { at: number; behaviour: Behaviour; authorization: string | undefined }[] = [];
  received: AgentMsg[] = [];
  sockets: WebSocket[] = [];
  closes: { code: number; reason: string }[] = [];
  enrollments: { joinToken: string; hostname?: string }[] = [];
  behaviour: (attempt: number) => Behaviour = () => "accept";
  /** which join tokens enroll, and the credential they give */
  joinTokens = new Map<string, string>();
  /** which credentials may connect (empty: any) */
  credentials = new Set<string>();
  heartbeatMs = 20_000;
  /** whether GET /api/health answers 200 (else 503): plain HTTPS reaching the control plane */
  healthy = true;
  /** welcome.reconnectSpreadMs, when set */
  reconnectSpreadMs: number | undefined = undefined;
  /** welcome.features, when set (what this control plane claims to understand) */
  features: string[] | undefined = undefined;
  private stalled: Socket[] = [];
  private listeners: ((m: AgentMsg) => void)[] = [];

  private constructor() {
    this.wss = new WebSocketServer({ noServer: true });
    this.server = createServer((req, res) => this.http(req, res));
    this.server.on("upgrade", (req, socket, head) => this.upgrade(req, socket as Socket, head));
  }

  static async start(): Promise<LoopbackControlPlane> {
    const cp = new LoopbackControlPlane();
    await new Promise<void>((r) => cp.server.listen(0, "127.0.0.1", () => r()));
    cp.url = `http://127.0.0.1:${(cp.server.address() as AddressInfo).port}`;
    return cp;
  }

  private http(req: IncomingMessage, res: import("node:http").ServerResponse) {
    if (req.method === "POST" && req.url === "/agent/enroll") {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        const parsed = JSON.parse(body) as { joinToken: string; hostname?: string };
        this.enrollments.push(parsed);
        const credential = this.joinTokens.get(parsed.joinToken);
        if (!credential) {
          res.writeHead(401, { "content-type": "application/json" });
          return res.end(
            JSON.stringify({ success: false, error: { code: "unauthorized", message: "join token refused" } }),
          );
        }
        this.joinTokens.delete(parsed.joinToken); // single use
        this.credentials.add(credential);
        res.writeHead(201, { "content-type": "application/json" });
        res.end(JSON.stringify({ nodeId: "node-1", credential }));
      });
      return;
    }
    if (req.method === "GET" && req.url === "/api/health") {
      res.writeHead(this.healthy ? 200 : 503, { "content-type": "application/json" });
      return res.end(
        JSON.stringify(
          this.healthy ? { ok: true } : { success: false, error: { code: "unavailable", message: "down" } },
        ),
      );
    }
    res.writeHead(404).end();
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer) {
    // Only the agent's link: any other socket (e.g. the liveness one) is refused, not taken for a link.
    if (new URL(req.url ?? "/", "http://x").pathname !== "/agent/connect") {
      socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
      return;
    }
    const b = this.behaviour(this.attempts.length);
    this.attempts.push({ at: Date.now(), behaviour: b, authorization: req.headers.authorization });
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    if (b === "refuse401" || (this.credentials.size && (!bearer || !this.credentials.has(bearer)))) {
      socket.end("HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
      return;
    }
    if (b === "refuse503") {
      socket.end("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
      return;
    }
    if (b === "stallHandshake") {
      this.stalled.push(socket);
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.sockets.push(ws);
      ws.on("close", (code, reason) => this.closes.push({ code, reason: reason.toString() }));
      if (b === "drop") return ws.close(1011, "dropped by test");
      if (b === "close4001") return ws.close(4001, "credential revoked");
      ws.send(
        JSON.stringify({
          type: "welcome",
          id: "w",
          payload: {
            nodeId: "node-1",
            serverTime: Date.now(),
            heartbeatMs: this.heartbeatMs,
            reconnectSpreadMs: this.reconnectSpreadMs,
            features: this.features,
          },
        }),
      );
      ws.on("message", (data) => {
        const text = data.toString();
        if (text === PING_FRAME) {
          if (b !== "silent") ws.send(PONG_FRAME);
          return;
        }
        const msg = parseFrame(AgentMessage, text);
        if (!msg) throw new Error(`not a protocol frame: ${text.slice(0, 200)}`);
        this.received.push(msg);
        for (const l of this.listeners) l(msg);
      });
    });
  }

  /** The newest open agent socket. */
  get socket(): WebSocket | undefined {
    return this.sockets.filter((s) => s.readyState === s.OPEN).at(-1);
  }

  send(frame: unknown) {
    this.socket!.send(JSON.stringify(frame));
  }

  /** Waits for a received message matching `pred` (already received ones count). */
  waitFor<T extends AgentMsg>(pred: (m: AgentMsg) => m is T, timeoutMs?: number): Promise<T>;
  waitFor(pred: (m: AgentMsg) => boolean, timeoutMs?: number): Promise<AgentMsg>;
  waitFor(pred: (m: AgentMsg) => boolean, timeoutMs = 10_000): Promise<AgentMsg> {
    const found = this.received.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("timed out waiting for an agent message")), timeoutMs);
      const l = (m: AgentMsg) => {
        if (!pred(m)) return;
        clearTimeout(timer);
        this.listeners.splice(this.listeners.indexOf(l), 1);
        resolve(m);
      };
      this.listeners.push(l);
    });
  }

  async close() {
    for (const s of this.stalled) s.destroy();
    for (const ws of this.wss.clients) ws.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export async function until(cond: () => boolean, timeoutMs = 10_000, stepMs = 10): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export type AgentProcess = { child: ChildProcess; out: () => string; exit: Promise<number | null>; kill: () => void };

/** The real agent (`node agent/main.ts …`), its stdout and stderr kept; `kill` SIGKILLs it if still running. */
export function spawnAgentProcess(args: string[], env: Record<string, string> = {}): AgentProcess {
  const child = spawnOwned(process.execPath, [AGENT_MAIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  return { child, out: () => out, exit, kill };
}
