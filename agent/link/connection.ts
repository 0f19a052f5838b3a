// The outbound link to the control plane as an explicit state machine:
//   connecting → online → (drop) → backingOff → connecting …;  stop() → draining → closed.
// One connect at a time, a connect timeout, full-jitter exponential backoff that resets only after
// the link stayed up a while, PING_FRAME every heartbeat and two unanswered pings = dead link. A
// control plane that takes a liveness socket gets one beside the link (liveness-socket.ts).
import WebSocket from "ws";
import type { Logger } from "../logger.ts";
import type { AgentMessage, ServerMessage } from "../../protocol/wire.ts";
import { CLOSE, HEARTBEAT_MS, MAX_FRAME_BYTES, PING_FRAME, PONG_FRAME } from "../../protocol/wire-constants.ts";
import { parseServerFrame } from "../../protocol/server-frames.ts";
import { LivenessSocket } from "./liveness-socket.ts";

export type LinkState = "idle" | "connecting" | "online" | "backingOff" | "draining" | "closed";

export type LinkTimings = {
  connectTimeoutMs: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /** the backoff resets only when a link stayed up at least this long */
  stableAfterMs: number;
  /** until the server's welcome says otherwise */
  heartbeatMs: number;
};

export const DEFAULT_TIMINGS: LinkTimings = {
  connectTimeoutMs: 10_000,
  backoffBaseMs: 1_000,
  backoffCapMs: 30_000,
  stableAfterMs: 30_000,
  heartbeatMs: HEARTBEAT_MS,
};

/** Why the link ended for good: refused means the credential must not be tried again. */
export type LinkEnd = { kind: "refused"; detail: string } | { kind: "stopped" };

export type LinkEvents = {
  /** socket open: send hello and the full inventory */
  onOpen: () => void;
  onMessage: (msg: ServerMessage) => void;
  /** a binary frame (console input) */
  onBytes?: (data: Uint8Array) => void;
  /** credential refused (401 on upgrade or close code CLOSE.unauthorized) */
  onRefused: (detail: string) => void;
  /** a delay was chosen before the next attempt (attempt counts from 0 since the last reset) */
  onBackoff?: (delayMs: number, attempt: number) => void;
  onStateChange?: (state: LinkState) => void;
};

export type LinkOptions = {
  url: string;
  /** read at every attempt: re-enrollment may replace it */
  credential: () => string;
  timings?: Partial<LinkTimings>;
  log: Logger;
  events: LinkEvents;
  /** injectable for tests of the jitter */
  random?: () => number;
  headers?: Record<string, string>;
};

/** Full jitter: uniform in [0, min(cap, max(base·2^attempt, spread))]. `spread` is the window the
 *  control plane asked for (welcome.reconnectSpreadMs) once a link was lost: a restart drops the
 *  whole fleet at once, and exponential windows starting at one second would bring most of it back
 *  in the same few seconds. */
export function backoffDelay(
  attempt: number,
  t: Pick<LinkTimings, "backoffBaseMs" | "backoffCapMs">,
  random: () => number,
  spreadMs = 0,
): number {
  const ceiling = Math.min(t.backoffCapMs, Math.max(spreadMs, t.backoffBaseMs * 2 ** Math.min(attempt, 30)));
  return Math.floor(random() * ceiling);
}

/** What every link (socket or long-poll) keeps between attempts: the control plane's clock and
 *  reconnect window from its welcome, and the backoff attempt, which starts over only after a link
 *  that stayed up `stableAfterMs`. */
export class Reconnects {
  /** server clock minus ours, from welcome.serverTime: the most it can be (see welcomed) */
  clockOffsetMs = 0;
  private readonly timings: LinkTimings;
  private readonly random: () => number;
  private attempt = 0;
  private onlineSince = 0;
  /** welcome.reconnectSpreadMs of the current link, and the window in force since a link was lost */
  private offeredSpreadMs = 0;
  private spreadMs = 0;

  constructor(timings: LinkTimings, random: () => number) {
    this.timings = timings;
    this.random = random;
  }

  /** The control plane's clock as this host best knows it (for command deadlines). */
  serverNow(): number {
    return Date.now() + this.clockOffsetMs;
  }

  online(): void {
    this.onlineSince = Date.now();
  }

  /** `askedAt`: when the request the welcome answers was sent. The server stamped serverTime between
   *  then and now, so its clock is at most `serverTime - askedAt` ahead of ours: that bound is kept,
   *  and a deadline that may already have passed on the server counts as passed here (a command
   *  is never carried out late because the welcome was slow to arrive). */
  welcomed(welcome: { serverTime: number; reconnectSpreadMs?: number }, askedAt = Date.now()): void {
    this.clockOffsetMs = welcome.serverTime - askedAt;
    this.offeredSpreadMs = welcome.reconnectSpreadMs ?? 0;
    this.spreadMs = 0;
  }

  /** A link ended or could not be opened: the delay before the next attempt, and that attempt's number. */
  next(wasOnline: boolean): { delayMs: number; attempt: number } {
    if (wasOnline) {
      this.spreadMs = this.offeredSpreadMs;
      if (Date.now() - this.onlineSince >= this.timings.stableAfterMs) this.attempt = 0;
    }
    const attempt = this.attempt++;
    return { delayMs: backoffDelay(attempt, this.timings, this.random, this.spreadMs), attempt };
  }
}

export class AgentLink {
  state: LinkState = "idle";
  private readonly opts: LinkOptions;
  private readonly timings: LinkTimings;
  private readonly reconnects: Reconnects;
  private ws: WebSocket | null = null;
  private heartbeatMs: number;
  private unansweredPings = 0;
  private timer: NodeJS.Timeout | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private drained: (() => void) | null = null;
  /** the link's ping-only socket to the control plane's liveness shard, when it takes one */
  private readonly liveness: LivenessSocket;

  constructor(opts: LinkOptions) {
    this.opts = opts;
    this.timings = { ...DEFAULT_TIMINGS, ...opts.timings };
    const random = opts.random ?? Math.random;
    this.reconnects = new Reconnects(this.timings, random);
    this.heartbeatMs = this.timings.heartbeatMs;
    this.liveness = new LivenessSocket({
      linkUrl: opts.url,
      credential: opts.credential,
      connectTimeoutMs: this.timings.connectTimeoutMs,
      backoff: (attempt) => backoffDelay(attempt, this.timings, random),
      log: opts.log,
    });
  }

  /** server clock minus ours, from welcome.serverTime */
  get clockOffsetMs(): number {
    return this.reconnects.clockOffsetMs;
  }

  serverNow(): number {
    return this.reconnects.serverNow();
  }

  get online() {
    return this.state === "online";
  }

  start() {
    if (this.state !== "idle") return;
    this.connect();
  }

  /** Sends one message if the link is up; false when it was dropped (the caller may not care). */
  send(msg: AgentMessage): boolean {
    const ws = this.ws;
    if (this.state !== "online" || !ws || ws.readyState !== WebSocket.OPEN) return false;
    const text = JSON.stringify(msg);
    if (Buffer.byteLength(text) > MAX_FRAME_BYTES) {
      this.opts.log.error({ type: msg.type, bytes: Buffer.byteLength(text) }, "frame too large, not sent");
      return false;
    }
    ws.send(text);
    return true;
  }

  /** Sends one binary frame (console output) if the link is up; false when it was dropped. */
  sendBytes(data: Uint8Array): boolean {
    const ws = this.ws;
    if (this.state !== "online" || !ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(data);
    return true;
  }

  /** Stop reconnecting and close cleanly; resolves once closed (or after `deadlineMs`). */
  stop(code: number = CLOSE.goingAway, deadlineMs = 2_000): Promise<void> {
    if (this.state === "closed") return Promise.resolve();
    this.clearTimers();
    this.liveness.close();
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) {
      this.setState("closed");
      return Promise.resolve();
    }
    this.setState("draining");
    return new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        ws.terminate();
        finish();
      }, deadlineMs);
      const finish = () => {
        clearTimeout(force);
        this.drained = null;
        this.ws = null;
        this.setState("closed");
        resolve();
      };
      this.drained = finish;
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(code, "agent stopping");
    });
  }

  private setState(s: LinkState) {
    if (this.state === s) return;
    this.state = s;
    this.opts.events.onStateChange?.(s);
  }

  private clearTimers() {
    if (this.timer) clearTimeout(this.timer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.timer = this.heartbeat = null;
  }

  private connect() {
    if (this.state === "draining" || this.state === "closed" || this.ws) return; // one at a time
    this.setState("connecting");
    const askedAt = Date.now();
    const ws = new WebSocket(this.opts.url, {
      headers: { authorization: `Bearer ${this.opts.credential()}`, ...this.opts.headers },
      handshakeTimeout: this.timings.connectTimeoutMs,
      maxPayload: MAX_FRAME_BYTES,
      perMessageDeflate: false,
    });
    this.ws = ws;
    let refused: string | null = null;

    ws.on("unexpected-response", (_req, res) => {
      if (res.statusCode === 401 || res.statusCode === 403)
        refused = `HTTP ${res.statusCode} on ${new URL(this.opts.url).pathname}`;
      else this.opts.log.warn({ status: res.statusCode }, "control plane refused the upgrade; will retry");
      res.resume();
      ws.terminate();
    });
    ws.on("open", () => {
      this.reconnects.online();
      this.unansweredPings = 0;
      this.heartbeatMs = this.timings.heartbeatMs;
      this.setState("online");
      this.opts.log.info("link online");
      this.armHeartbeat();
      this.opts.events.onOpen();
    });
    ws.on("message", (data, isBinary) => {
      if (isBinary) {
        const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
        this.opts.events.onBytes?.(bytes);
        return;
      }
      const text = data.toString();
      if (text === PONG_FRAME) {
        this.unansweredPings = 0;
        return;
      }
      const msg = parseServerFrame(text);
      if (!msg) {
        this.opts.log.warn({ bytes: text.length }, "unknown frame from the control plane, ignored");
        return;
      }
      if (msg.type === "welcome") {
        this.reconnects.welcomed(msg.payload, askedAt);
        if (msg.payload.heartbeatMs !== this.heartbeatMs) {
          this.heartbeatMs = msg.payload.heartbeatMs;
          this.armHeartbeat();
        }
        if (msg.payload.features?.includes("livenessWatch"))
          this.liveness.open(msg.id, msg.payload.livenessHeartbeats ?? 1);
      }
      this.opts.events.onMessage(msg);
    });
    ws.on("error", (err) => {
      this.opts.log.warn({ err: err.message }, "link error");
    });
    ws.on("close", (code, reason) => {
      const wasOnline = this.state === "online";
      this.ws = null;
      this.liveness.close();
      if (this.heartbeat) clearInterval(this.heartbeat);
      this.heartbeat = null;
      if (this.drained) return this.drained();
      if (this.state === "closed") return;
      if (code === CLOSE.unauthorized) refused = `closed ${code}${reason.length ? `: ${reason.toString()}` : ""}`;
      if (refused) {
        this.setState("closed");
        this.opts.log.error({ detail: refused }, "node credential refused");
        return this.opts.events.onRefused(refused);
      }
      if (wasOnline) this.opts.log.warn({ code, reason: reason.toString() }, "link lost");
      this.scheduleReconnect(wasOnline);
    });
  }

  private armHeartbeat() {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      const ws = this.ws;
      if (!ws || this.state !== "online") return;
      if (this.unansweredPings >= 2) {
        this.opts.log.warn({ heartbeatMs: this.heartbeatMs }, "two pings unanswered: link dead");
        ws.terminate();
        return;
      }
      this.unansweredPings++;
      ws.send(PING_FRAME);
      this.liveness.ping(); // in step: the shard and the link's own check then see the same last sign
    }, this.heartbeatMs);
  }

  private scheduleReconnect(wasOnline: boolean) {
    const { delayMs: delay, attempt } = this.reconnects.next(wasOnline);
    this.opts.events.onBackoff?.(delay, attempt);
    this.setState("backingOff");
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }
}
