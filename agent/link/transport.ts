// Which link the agent keeps to the control plane (`--transport auto|websocket|long-poll`). `auto`
// uses the WebSocket and falls back to long-poll after SWITCH_AFTER_FAILURES WebSocket failures in a
// row (connect errors, refused upgrades, links that drop before being stable) when the control plane
// answers plain HTTPS (GET /api/health) and the WebSocket fails once more after that: a control plane
// that is down or restarting fails both, and is waited for on the WebSocket. On long-poll it tries the WebSocket again every `websocketRetryMs`
// (and on the next process start).
import type { AgentMessage } from "../../protocol/wire.ts";
import { AGENT_CONNECT_PATH } from "../../protocol/wire-constants.ts";
import { AgentLink, type LinkEvents, type LinkOptions, type LinkState } from "./connection.ts";
import { httpBase, wsUrl } from "./credentials.ts";
import { PollLink } from "./poll-link.ts";

export const TRANSPORTS = ["auto", "websocket", "long-poll"] as const;
export type Transport = (typeof TRANSPORTS)[number];
/** WebSocket failures in a row after which `auto` switches to long-poll. */
export const SWITCH_AFTER_FAILURES = 5;
/** How long `auto` stays on long-poll before trying the WebSocket again. */
export const WEBSOCKET_RETRY_MS = 10 * 60_000;

/** What the agent needs of its link, whatever carries it. */
export type Link = {
  readonly state: LinkState;
  readonly online: boolean;
  readonly clockOffsetMs: number;
  start(): void;
  send(msg: AgentMessage): boolean;
  /** a binary frame (console output); false when the link is down or cannot carry one (long-poll) */
  sendBytes(data: Uint8Array): boolean;
  stop(code?: number): Promise<void>;
  serverNow(): number;
};

export type TransportOptions = Omit<LinkOptions, "url"> & {
  /** the control plane's base URL as configured (http(s) or ws(s)) */
  server: string;
  transport: Transport;
  pollWaitMs?: number;
  websocketRetryMs?: number;
};

export function createLink(opts: TransportOptions): Link {
  if (opts.transport === "websocket") return webSocketLink(opts, opts.events);
  if (opts.transport === "long-poll") return pollLink(opts, opts.events);
  return new AutoLink(opts);
}

const webSocketLink = (opts: TransportOptions, events: LinkEvents) =>
  new AgentLink({ ...opts, url: wsUrl(opts.server, AGENT_CONNECT_PATH), events });
const pollLink = (opts: TransportOptions, events: LinkEvents) =>
  new PollLink({ ...opts, server: httpBase(opts.server), events });

/** WebSocket first; long-poll when WebSockets keep failing; the WebSocket again later. */
export class AutoLink implements Link {
  private readonly opts: TransportOptions;
  private active: Link;
  private mode: "websocket" | "long-poll" = "websocket";
  private probe: AgentLink | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private checkingHttps = false;
  /** HTTPS answered after the WebSocket had failed SWITCH_AFTER_FAILURES times: one more failure switches */
  private httpsAnswered = false;

  constructor(opts: TransportOptions) {
    this.opts = opts;
    this.active = this.webSocket();
  }

  get state() {
    return this.active.state;
  }
  get online() {
    return this.active.online;
  }
  get clockOffsetMs() {
    return this.active.clockOffsetMs;
  }
  /** which transport carries the link now */
  get transport() {
    return this.mode;
  }

  start() {
    this.active.start();
  }

  send(msg: AgentMessage): boolean {
    return this.active.send(msg);
  }

  sendBytes(data: Uint8Array): boolean {
    return this.active.sendBytes(data);
  }

  serverNow(): number {
    return this.active.serverNow();
  }

  async stop(code?: number): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const probe = this.probe;
    this.probe = null;
    await Promise.all([this.active.stop(code), probe?.stop(code)]);
  }

  /** The WebSocket link, counting its failures in a row (its backoff attempt is exactly that: it
   *  resets only after a stable link). */
  private webSocket(): AgentLink {
    const { events } = this.opts;
    const link: AgentLink = webSocketLink(this.opts, {
      ...events,
      onBackoff: (delayMs, attempt) => {
        if (this.active === link) this.webSocketFailed(link, delayMs, attempt);
      },
      onStateChange: (s) => {
        if (this.active !== link) return;
        if (s === "online") this.httpsAnswered = false;
        events.onStateChange?.(s);
      },
    });
    return link;
  }

  /** The active WebSocket failed again (its backoff attempt counts the failures in a row). */
  private webSocketFailed(link: Link, delayMs: number, attempt: number) {
    if (attempt + 1 >= SWITCH_AFTER_FAILURES && !this.stopped) {
      if (this.httpsAnswered) return this.later(() => this.toLongPoll(link, attempt + 1));
      this.later(() => void this.checkHttps(link, attempt + 1));
    }
    this.opts.events.onBackoff?.(delayMs, attempt);
  }

  /** WebSockets failing while plain HTTPS reaches the control plane: something between blocks them,
   *  so the next WebSocket failure switches to long-poll (not this one: a control plane coming back
   *  from a restart answers HTTPS a moment before the next WebSocket attempt would have worked).
   *  Both failing: the control plane is away (a restart, an outage); keep waiting on the WebSocket,
   *  whose backoff goes on meanwhile. */
  private async checkHttps(from: Link, failures: number) {
    if (this.checkingHttps || this.active !== from) return;
    this.checkingHttps = true;
    try {
      const timeoutMs = this.opts.timings?.connectTimeoutMs ?? 10_000;
      const res = await fetch(`${httpBase(this.opts.server)}/api/health`, { signal: AbortSignal.timeout(timeoutMs) });
      await res.body?.cancel();
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      if (this.active === from && from.state !== "online") this.httpsAnswered = true;
    } catch (err) {
      if (failures === SWITCH_AFTER_FAILURES) {
        this.opts.log.warn(
          { failures, err: (err as Error).message },
          "WebSocket keeps failing and the control plane does not answer HTTPS either: waiting for it on the WebSocket",
        );
      }
    } finally {
      this.checkingHttps = false;
    }
  }

  /** Runs `step` once the link reporting an event has finished its own bookkeeping (a link stopped
   *  from inside its onBackoff would still schedule its next attempt). */
  private later(step: () => void) {
    setImmediate(() => {
      if (!this.stopped) step();
    });
  }

  private toLongPoll(from: Link, failures: number) {
    if (this.active !== from) return; // switched already
    const retryMs = this.opts.websocketRetryMs ?? WEBSOCKET_RETRY_MS;
    this.opts.log.warn(
      { failures, retryWebSocketInMs: retryMs },
      `WebSocket failed ${failures} times in a row (blocked by a proxy or firewall?); switching to long-poll over HTTPS`,
    );
    const old = this.active;
    this.mode = "long-poll";
    this.httpsAnswered = false;
    this.active = pollLink(this.opts, {
      ...this.opts.events,
      onStateChange: (s) => {
        if (this.active === next) this.opts.events.onStateChange?.(s);
      },
    });
    const next = this.active;
    void old.stop();
    next.start();
    this.retryTimer = setTimeout(() => this.tryWebSocket(), retryMs);
  }

  /** One WebSocket attempt beside the working long-poll link: if it opens, the control plane makes
   *  it the node's connection (replacing the poll link) and we follow; if not, nothing changed. */
  private tryWebSocket() {
    this.retryTimer = null;
    if (this.stopped || this.mode !== "long-poll") return;
    const { events } = this.opts;
    const probe: AgentLink = webSocketLink(this.opts, {
      ...events,
      onOpen: () => {
        if (this.probe !== probe) return;
        this.probe = null;
        this.opts.log.warn("WebSocket works again; leaving long-poll");
        const old = this.active;
        this.mode = "websocket";
        this.active = probe;
        void old.stop();
        // A new connection as far as the agent is concerned: what lived on the old link starts over.
        events.onStateChange?.("connecting");
        events.onStateChange?.("online");
        events.onOpen();
      },
      onMessage: (msg) => {
        if (this.active === probe) events.onMessage(msg);
      },
      onBytes: (data) => {
        if (this.active === probe) events.onBytes?.(data);
      },
      onRefused: (detail) => {
        if (this.probe === probe || this.active === probe) events.onRefused(detail);
      },
      onBackoff: (delayMs, attempt) => {
        if (this.probe === probe) {
          // Still blocked: stay on long-poll, try again later.
          this.probe = null;
          setImmediate(() => void probe.stop());
          this.opts.log.info(
            { retryWebSocketInMs: this.opts.websocketRetryMs ?? WEBSOCKET_RETRY_MS },
            "WebSocket still failing; staying on long-poll",
          );
          this.retryTimer = setTimeout(() => this.tryWebSocket(), this.opts.websocketRetryMs ?? WEBSOCKET_RETRY_MS);
          return;
        }
        if (this.active === probe) this.webSocketFailed(probe, delayMs, attempt);
      },
      onStateChange: (s) => {
        if (this.active === probe) events.onStateChange?.(s);
      },
    });
    this.probe = probe;
    probe.start();
  }
}
