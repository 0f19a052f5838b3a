// A recording relay on loopback between a real agent and the control plane, so a test can assert on
// the frames that crossed the link (which side sent what, on which connection, when) and cut the
// link for a while. The agent's WebSocket is relayed frame by frame (both sides speak to a real
// peer); its plain HTTP requests (enrollment) are passed through as they are.
import { createServer, request, type IncomingMessage, type Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocket, WebSocketServer, type RawData } from "ws";

export type TappedFrame = {
  /** "up": agent → control plane; "down": control plane → agent */
  dir: "up" | "down";
  /** which agent connection, counting from 1 */
  conn: number;
  at: number;
  type: string;
  payload: unknown;
};

/** Close codes a peer may send on (1005/1006 only describe a close without a code). */
const sendable = (code: number) => (code === 1005 || code === 1006 ? 1000 : code);

export class FrameTap {
  readonly frames: TappedFrame[] = [];
  private readonly server: Server;
  private readonly wss = new WebSocketServer({ noServer: true });
  private readonly sockets = new Set<WebSocket>();
  private refusing = false;
  private connections = 0;
  readonly url: string;

  private constructor(server: Server, port: number) {
    this.server = server;
    this.url = `http://127.0.0.1:${port}`;
  }

  /** Relays to the control plane at `target` (its http://127.0.0.1:port origin). */
  static async start(target: string): Promise<FrameTap> {
    const upstream = new URL(target);
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    const tap = new FrameTap(server, (server.address() as { port: number }).port);
    server.on("request", (req, res) => {
      if (tap.refusing) return void req.socket.destroy();
      const out = request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      out.on("error", () => res.destroy());
      req.pipe(out);
    });
    server.on("upgrade", (req, socket, head) => tap.relay(upstream, req, socket, head));
    return tap;
  }

  private relay(upstream: URL, req: IncomingMessage, socket: Duplex, head: Buffer) {
    if (this.refusing) return void socket.destroy();
    // Only the agent's links are numbered and recorded; its ping-only liveness socket is relayed as is.
    const isLink = new URL(req.url ?? "/", "http://x").pathname === "/agent/connect";
    const conn = isLink ? ++this.connections : 0;
    const headers: Record<string, string> = {};
    if (req.headers.authorization) headers.authorization = req.headers.authorization;
    const peer = new WebSocket(`ws://${upstream.host}${req.url}`, { headers });
    const record = (dir: TappedFrame["dir"], data: RawData, binary: boolean) => {
      if (binary || !isLink) return;
      try {
        const f = JSON.parse(data.toString()) as { type: string; payload?: unknown };
        this.frames.push({ dir, conn, at: Date.now(), type: f.type, payload: f.payload });
      } catch {
        // not JSON: relayed, not recorded
      }
    };
    peer.on("unexpected-response", (_r, res) => {
      socket.end(`HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    });
    peer.on("error", () => socket.destroy());
    peer.on("open", () => {
      this.wss.handleUpgrade(req, socket, head, (agent) => {
        this.sockets.add(agent).add(peer);
        agent.on("message", (data, binary) => {
          record("up", data, binary);
          if (peer.readyState === WebSocket.OPEN) peer.send(data, { binary });
        });
        peer.on("message", (data, binary) => {
          record("down", data, binary);
          if (agent.readyState === WebSocket.OPEN) agent.send(data, { binary });
        });
        const end = (other: WebSocket) => (code: number, reason: Buffer) => {
          this.sockets.delete(agent);
          this.sockets.delete(peer);
          if (other.readyState === WebSocket.OPEN) other.close(sendable(code), reason);
        };
        agent.on("close", end(peer));
        peer.on("close", end(agent));
        agent.on("error", () => peer.terminate());
      });
    });
  }

  /** Drops every relayed connection at once (both sides see it end without a close frame) and
   *  refuses new ones until restore(): the agent is offline with its process still running. */
  cut(): void {
    this.refusing = true;
    for (const ws of this.sockets) ws.terminate();
    this.sockets.clear();
  }

  restore(): void {
    this.refusing = false;
  }

  /** Agent connections relayed so far. */
  get connectionCount(): number {
    return this.connections;
  }

  async close(): Promise<void> {
    this.cut();
    this.wss.close();
    const closed = new Promise((r) => this.server.close(r));
    this.server.closeAllConnections();
    await closed;
  }
}
