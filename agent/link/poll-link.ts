// The long-poll link to the control plane, for networks that block WebSockets: the same frames over
// plain HTTPS (POST /agent/poll holds until frames are due, POST /agent/send carries ours), with the
// states, events and backoff of the WebSocket link. The poll itself is the heartbeat.
import type { AgentMessage, PollResponse, ServerMessage } from "../../protocol/wire.ts";
import {
  AGENT_POLL_PATH,
  AGENT_SEND_PATH,
  LONG_POLL_WAIT_MS,
  MAX_FRAME_BYTES,
  MAX_SEND_BYTES,
  MAX_SEND_MESSAGES,
} from "../../protocol/wire-constants.ts";
import { PollResponse as checkPollResponse } from "../../protocol/server-frames.ts";
import { DEFAULT_TIMINGS, Reconnects, type LinkOptions, type LinkState, type LinkTimings } from "./connection.ts";

export type PollLinkOptions = Omit<LinkOptions, "url"> & {
  /** the control plane's http(s) base URL */
  server: string;
  /** how long each poll may be held by the server when nothing is due */
  pollWaitMs?: number;
};

/** Room for `{"connId":"…","messages":[…]}` around the frames of one send. */
const SEND_ENVELOPE_BYTES = 256;
/** Polls or sends failing in a row (network, 5xx) before the link counts as dropped. */
const MAX_FAILURES_IN_A_ROW = 2;

/** Why the current link ended: refused (credential), or dropped (start a new one after a backoff). */
class LinkEnd extends Error {
  readonly refused: boolean;
  constructor(message: string, refused = false) {
    super(message);
    this.refused = refused;
  }
}

export class PollLink {
  state: LinkState = "idle";
  private readonly opts: PollLinkOptions;
  private readonly timings: LinkTimings;
  /** clock, reconnect window and backoff, as on the socket */
  private readonly reconnects: Reconnects;
  private readonly pollWaitMs: number;
  private connId: string | null = null;
  private cursor: string | undefined;
  // Bounded in time, not count: it is emptied when the link ends, and a send that hangs or fails
  // twice ends the link, so it holds at most what the agent produces in a few send timeouts.
  private outbox: string[] = [];
  private flushing = false;
  private timer: NodeJS.Timeout | null = null;
  /** aborts every request of the current link (a new link or stop() ends them) */
  private aborter = new AbortController();

  constructor(opts: PollLinkOptions) {
    this.opts = opts;
    this.timings = { ...DEFAULT_TIMINGS, ...opts.timings };
    this.reconnects = new Reconnects(this.timings, opts.random ?? Math.random);
    this.pollWaitMs = opts.pollWaitMs ?? LONG_POLL_WAIT_MS;
  }

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
    void this.connect();
  }

  /** Queues one message for the next send; false when the link is not up (as on the socket). */
  /** The long-poll link carries no binary frames (no console): the control plane never asks it to. */
  sendBytes(_data: Uint8Array): boolean {
    return false;
  }

  send(msg: AgentMessage): boolean {
    if (this.state !== "online") return false;
    const text = JSON.stringify(msg);
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_FRAME_BYTES || bytes > MAX_SEND_BYTES - SEND_ENVELOPE_BYTES) {
      this.opts.log.error({ type: msg.type, bytes }, "frame too large, not sent");
      return false;
    }
    this.outbox.push(text);
    void this.flush();
    return true;
  }

  /** Stop for good: pending requests are abandoned (the server ends the link when polls stop). */
  stop(): Promise<void> {
    if (this.state === "closed") return Promise.resolve();
    this.setState("draining");
    this.endLink();
    this.setState("closed");
    return Promise.resolve();
  }

  private setState(s: LinkState) {
    if (this.state === s) return;
    this.state = s;
    this.opts.events.onStateChange?.(s);
  }

  private endLink() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.aborter.abort();
    this.aborter = new AbortController();
    this.connId = null;
    this.cursor = undefined;
    this.outbox = [];
  }

  private async post(path: string, body: unknown, timeoutMs: number): Promise<{ status: number; json: unknown }> {
    const signal = AbortSignal.any([this.aborter.signal, AbortSignal.timeout(timeoutMs)]);
    const res = await fetch(this.opts.server + path, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${this.opts.credential()}`,
        ...this.opts.headers,
      },
      body: typeof body === "string" ? body : JSON.stringify(body),
      signal,
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON (a proxy's error page): the status says enough
    }
    return { status: res.status, json };
  }

  /** The answer's status as the link's fate: null when it is fine to go on. */
  private judge(status: number, json: unknown, path: string): LinkEnd | null {
    if (status === 200) return null;
    const error = (json as { error?: { code?: string; message?: string } } | null)?.error;
    if (status === 401 || status === 403)
      return new LinkEnd(`HTTP ${status} on ${path}${error?.message ? `: ${error.message}` : ""}`, true);
    return new LinkEnd(`HTTP ${status} on ${path}${error?.code ? ` (${error.code})` : ""}`);
  }

  private async connect() {
    if (this.state === "draining" || this.state === "closed") return;
    this.setState("connecting");
    let opened: PollResponse;
    const askedAt = Date.now();
    try {
      const { status, json } = await this.post(AGENT_POLL_PATH, {}, this.timings.connectTimeoutMs);
      const end = this.judge(status, json, AGENT_POLL_PATH);
      if (end) throw end;
      const parsed = checkPollResponse(json);
      if (!parsed || parsed.value.messages[0]?.type !== "welcome")
        throw new LinkEnd("the control plane's first poll answer had no welcome");
      opened = parsed.value;
    } catch (err) {
      return this.linkFailed(err, false);
    }
    if (this.state !== "connecting") return; // stopped meanwhile
    this.connId = opened.connId;
    this.cursor = opened.cursor;
    this.reconnects.online();
    this.setState("online");
    this.opts.log.info({ transport: "long-poll" }, "link online");
    this.opts.events.onOpen();
    this.deliver(opened.messages, askedAt);
    void this.pollLoop(this.connId);
  }

  /** `askedAt`: when the poll these messages answer went out (the opening poll carries the welcome). */
  private deliver(messages: ServerMessage[], askedAt?: number) {
    for (const msg of messages) {
      if (msg.type === "welcome") this.reconnects.welcomed(msg.payload, askedAt);
      this.opts.events.onMessage(msg);
    }
  }

  /** Polls for as long as this link is the current one. */
  private async pollLoop(connId: string) {
    let failures = 0;
    while (this.state === "online" && this.connId === connId) {
      try {
        const { status, json } = await this.post(
          AGENT_POLL_PATH,
          { connId, cursor: this.cursor, waitMs: this.pollWaitMs },
          this.pollWaitMs + this.timings.connectTimeoutMs,
        );
        if (this.connId !== connId) return;
        if (status >= 500 || status === 429) throw new Error(`HTTP ${status} on ${AGENT_POLL_PATH}`);
        const end = this.judge(status, json, AGENT_POLL_PATH);
        if (end) throw end;
        const parsed = checkPollResponse(json);
        if (!parsed) throw new Error("malformed poll answer");
        failures = 0;
        this.cursor = parsed.value.cursor;
        this.deliver(parsed.value.messages);
      } catch (err) {
        if (this.connId !== connId) return;
        if (err instanceof LinkEnd || ++failures >= MAX_FAILURES_IN_A_ROW) return this.linkFailed(err, true);
        this.opts.log.warn({ err: (err as Error).message }, "poll failed; trying again");
        await this.pause(Math.min(this.timings.backoffBaseMs, 1_000));
      }
    }
  }

  /** Sends what is queued, in order, one request at a time (a sync's chunks must not overtake). */
  private async flush() {
    if (this.flushing) return;
    this.flushing = true;
    const connId = this.connId;
    let failures = 0;
    try {
      while (this.outbox.length && this.state === "online" && this.connId === connId) {
        let bytes = SEND_ENVELOPE_BYTES;
        let n = 0;
        while (
          n < this.outbox.length &&
          n < MAX_SEND_MESSAGES &&
          bytes + Buffer.byteLength(this.outbox[n]) + 1 <= MAX_SEND_BYTES
        )
          bytes += Buffer.byteLength(this.outbox[n++]) + 1;
        const batch = this.outbox.slice(0, n);
        try {
          const { status, json } = await this.post(
            AGENT_SEND_PATH,
            `{"connId":${JSON.stringify(connId)},"messages":[${batch.join(",")}]}`,
            this.timings.connectTimeoutMs * 3,
          );
          if (this.connId !== connId) return;
          if (status >= 500 || status === 429) throw new Error(`HTTP ${status} on ${AGENT_SEND_PATH}`);
          if (status === 400 || status === 413) {
            // Our own frames refused: a bug on one side; drop them rather than block the link.
            this.opts.log.error(
              { status, error: (json as { error?: unknown })?.error, frames: n },
              "control plane refused sent frames; dropped",
            );
          } else {
            const end = this.judge(status, json, AGENT_SEND_PATH);
            if (end) throw end;
          }
          failures = 0;
          this.outbox.splice(0, n);
        } catch (err) {
          if (this.connId !== connId) return;
          if (err instanceof LinkEnd || ++failures >= MAX_FAILURES_IN_A_ROW) return this.linkFailed(err, true);
          this.opts.log.warn({ err: (err as Error).message }, "send failed; trying again");
          await this.pause(Math.min(this.timings.backoffBaseMs, 1_000));
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
  }

  /** The link could not be opened or has dropped: refused ends the agent's tries, else back off. */
  private linkFailed(err: unknown, wasOnline: boolean) {
    if (this.state === "draining" || this.state === "closed") return;
    this.endLink();
    if (err instanceof LinkEnd && err.refused) {
      this.setState("closed");
      this.opts.log.error({ detail: err.message }, "node credential refused");
      return this.opts.events.onRefused(err.message);
    }
    const detail = (err as Error).name === "TimeoutError" ? "timed out" : (err as Error).message;
    if (wasOnline) this.opts.log.warn({ detail, transport: "long-poll" }, "link lost");
    else this.opts.log.warn({ detail, transport: "long-poll" }, "could not open the link; will retry");
    const { delayMs: delay, attempt } = this.reconnects.next(wasOnline);
    this.opts.events.onBackoff?.(delay, attempt);
    this.setState("backingOff");
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, delay);
  }
}
