// The link's second, ping-only socket to the control plane's liveness shard (feature `livenessWatch`):
// opened after the link's welcome with the link's id, pinged every few heartbeats of the link (as
// the welcome says: livenessHeartbeats in wire-constants.ts), closed with the link, and opened again with backoff while the link stays up. Through it the control
// plane sees the agent's pings without waking the node's own object every minute.
import WebSocket from "ws";
import type { Logger } from "../logger.ts";
import { AGENT_CONNECT_PATH, AGENT_LIVENESS_PATH, PING_FRAME, PONG_FRAME } from "../../protocol/wire-constants.ts";

export type LivenessSocketOptions = {
  /** the link's own URL (…/agent/connect): the liveness socket's is next to it */
  linkUrl: string;
  credential: () => string;
  connectTimeoutMs: number;
  /** the delay before attempt number `attempt` (from 0) to open it again, as the link's own */
  backoff: (attempt: number) => number;
  log: Logger;
};

/** The liveness socket's URL for the link `connId`, or null when the link's URL is not the agent
 *  endpoint's (a test's own path). */
export function livenessUrl(linkUrl: string, connId: string): string | null {
  const url = new URL(linkUrl);
  if (!url.pathname.endsWith(AGENT_CONNECT_PATH)) return null;
  url.pathname = url.pathname.slice(0, -AGENT_CONNECT_PATH.length) + AGENT_LIVENESS_PATH;
  url.searchParams.set("conn", connId);
  return url.toString();
}

export class LivenessSocket {
  private readonly opts: LivenessSocketOptions;
  private ws: WebSocket | null = null;
  /** the link this socket watches; null once closed for good */
  private connId: string | null = null;
  private attempt = 0;
  private unanswered = 0;
  /** heartbeats since the last ping, and how many pass between two (the welcome's) */
  private beats = 0;
  private heartbeatsPerPing = 1;
  private timer: NodeJS.Timeout | null = null;

  constructor(opts: LivenessSocketOptions) {
    this.opts = opts;
  }

  /** Watches the link `connId` (a new link's welcome), replacing any older socket, pinged once per
   *  `heartbeatsPerPing` heartbeats of the link. */
  open(connId: string, heartbeatsPerPing = 1): void {
    this.close();
    this.connId = connId;
    this.heartbeatsPerPing = heartbeatsPerPing;
    this.attempt = 0;
    this.connect();
  }

  /** One heartbeat of the link: once per `heartbeatsPerPing`, a ping, or (two unanswered) a new socket. */
  ping(): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (++this.beats < this.heartbeatsPerPing) return;
    this.beats = 0;
    if (this.unanswered >= 2) {
      ws.terminate(); // its close opens a new one
      return;
    }
    this.unanswered++;
    ws.send(PING_FRAME);
  }

  /** The link ended: no liveness socket until the next link's welcome. */
  close(): void {
    this.connId = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    if (ws.readyState === WebSocket.OPEN) ws.close(1000, "link closed");
    else ws.terminate();
  }

  private connect(): void {
    const connId = this.connId;
    const url = connId ? livenessUrl(this.opts.linkUrl, connId) : null;
    if (!url || this.ws) return;
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${this.opts.credential()}` },
      handshakeTimeout: this.opts.connectTimeoutMs,
      maxPayload: 1024,
      perMessageDeflate: false,
    });
    this.ws = ws;
    let refused = false;
    ws.on("unexpected-response", (_req, res) => {
      // A 4xx will not get better for this link (not current any more, credential refused): the
      // next link's welcome opens a new one; the link itself is watched by its node meanwhile.
      refused = (res.statusCode ?? 0) >= 400 && (res.statusCode ?? 0) < 500;
      this.opts.log.warn({ status: res.statusCode }, "liveness socket refused");
      res.resume();
      ws.terminate();
    });
    ws.on("open", () => {
      this.unanswered = 0;
      this.beats = 0;
      ws.send(PING_FRAME); // its first sign at once
    });
    ws.on("message", (data) => {
      if (data.toString() === PONG_FRAME) {
        this.unanswered = 0;
        this.attempt = 0;
      }
    });
    ws.on("error", (err) => this.opts.log.debug({ err: err.message }, "liveness socket error"));
    ws.on("close", () => {
      if (this.ws !== ws) return; // replaced or closed on purpose
      this.ws = null;
      if (refused || this.connId !== connId) return;
      const delay = this.opts.backoff(this.attempt++);
      this.timer = setTimeout(() => {
        this.timer = null;
        this.connect();
      }, delay);
    });
  }
}
