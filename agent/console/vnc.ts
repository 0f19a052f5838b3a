// The agent's side of graphical consoles: per viewer, one connection to the VM's VNC server (found
// in the domain's live XML, on this host), its RFB bytes relayed through the link's binary frames
// within the control plane's credit window (reading pauses while it is full). A watcher's input
// messages are dropped here, whatever its browser does. Nothing shown or typed is logged.
import { connect, type Socket } from "node:net";
import { VNC_FRAME_BYTES, decodeLinkFrame, encodeLinkOutput } from "../../protocol/console-frames.ts";
import type { AgentMessage, ServerMessage } from "../../protocol/wire.ts";
import { LibvirtClient } from "../libvirt/index.ts";
import type { Logger } from "../logger.ts";
import { RFB_CLIENT, RfbClientFilter, RfbError, RfbServerGate, securityName, type ClientCounts } from "./rfb.ts";

type ConsoleEnd = Extract<AgentMessage, { type: "console.closed" }>["payload"];
type OpenMessage = Extract<ServerMessage, { type: "console.open" }>;

/** Where a domain's VNC server listens, as its live XML says. */
export type VncTarget = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/** The first VNC display of a domain's live XML, or why there is none to reach. */
export function vncTarget(xml: string): VncTarget | { none: string } {
  const graphics = /<graphics\b[^>]*\btype=['"]vnc['"][^>]*?(?:\/>|>([\s\S]*?)<\/graphics>)/.exec(xml);
  if (!graphics) return { none: "this VM has no VNC display (no <graphics type='vnc'> in its definition)" };
  const head = graphics[0].slice(0, graphics[0].indexOf(">") + 1);
  const attr = (tag: string, name: string) => new RegExp(`\\b${name}=['"]([^'"]*)['"]`).exec(tag)?.[1];
  const listens = [...(graphics[1] ?? "").matchAll(/<listen\b[^>]*>/g)].map((m) => m[0]);
  const socketPath = attr(head, "socket") ?? listens.map((l) => attr(l, "socket")).find(Boolean);
  if (socketPath) return { kind: "unix", path: unescapeXml(socketPath) };
  const port = Number(attr(head, "port") ?? "-1");
  if (!Number.isInteger(port) || port <= 0)
    return { none: "this VM's VNC display has no port yet (is the VM running?)" };
  const listen = attr(head, "listen") ?? listens.map((l) => attr(l, "address")).find(Boolean) ?? "127.0.0.1";
  // A wildcard listen is reached on this host's own loopback.
  const host = listen === "0.0.0.0" ? "127.0.0.1" : listen === "::" ? "::1" : listen;
  return { kind: "tcp", host, port };
}

const unescapeXml = (s: string) =>
  s
    .replaceAll("&apos;", "'")
    .replaceAll("&quot;", '"')
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&amp;", "&");

/** The domain's live XML (a running domain's shows its VNC port). */
export type DomainXmlSource = (uuid: string) => Promise<string>;

export function liveXmlFrom(uri: string): DomainXmlSource {
  return async (uuid) => {
    const client = await LibvirtClient.connect(uri, { connectTimeoutMs: 10_000 });
    try {
      return await client.domainXml(uuid);
    } finally {
      await client.close().catch(() => {});
    }
  };
}

type Relay = {
  consoleId: string;
  vmId: string;
  channel: number;
  readOnly: boolean;
  socket: Socket | null;
  client: RfbClientFilter;
  server: RfbServerGate;
  windowBytes: number;
  sent: number;
  acked: number;
  paused: boolean;
  closing: boolean;
  openedAt: number;
};

export type VncOptions = {
  liveXml: DomainXmlSource;
  send: (msg: AgentMessage) => boolean;
  sendBytes: (data: Uint8Array) => boolean;
  isRunning: (uuid: string) => Promise<boolean>;
  log: Logger;
  /** how long to wait for the VNC server to accept */
  connectTimeoutMs?: number;
};

export class VncRelays {
  private readonly opts: VncOptions;
  private readonly byId = new Map<string, Relay>();
  private readonly byChannel = new Map<number, Relay>();

  constructor(opts: VncOptions) {
    this.opts = opts;
  }

  /** Whether this console id is a graphical console of this agent. */
  owns(id: string): boolean {
    return this.byId.has(id);
  }

  handle(msg: Extract<ServerMessage, { type: "console.open" | "console.ack" | "console.close" }>): void {
    if (msg.type === "console.open") return void this.open(msg);
    const relay = this.byId.get(msg.id);
    if (!relay) return;
    if (msg.type === "console.ack") {
      relay.acked = Math.max(relay.acked, Math.min(msg.payload.offset, relay.sent));
      if (relay.paused && relay.sent - relay.acked < relay.windowBytes) {
        relay.paused = false;
        relay.socket?.resume();
      }
      return;
    }
    this.end(relay, { reason: "closed" });
  }

  /** A binary frame from the control plane: RFB bytes from a viewer. */
  onBytes(data: Uint8Array): void {
    const frame = decodeLinkFrame(data);
    if (frame?.kind !== "input") return;
    const relay = this.byChannel.get(frame.channel);
    if (!relay || relay.closing) return;
    let pass: Uint8Array;
    try {
      const before = relay.client.minor;
      pass = relay.client.feed(frame.bytes);
      if (before === null && relay.client.minor !== null)
        this.toViewer(relay, relay.server.clientVersion(relay.client.minor));
    } catch (err) {
      const refused = err instanceof RfbError;
      return this.end(relay, {
        reason: refused && /password/.test(err.message) ? "password_required" : "error",
        message: (err as Error).message,
      });
    }
    if (pass.byteLength && relay.socket && !relay.closing) relay.socket.write(pass);
  }

  private async open(msg: OpenMessage): Promise<void> {
    const p = msg.payload;
    const readOnly = p.display?.mode !== "rw";
    const relay: Relay = {
      consoleId: msg.id,
      vmId: p.vmId,
      channel: p.channel,
      readOnly,
      socket: null,
      client: new RfbClientFilter(readOnly),
      server: new RfbServerGate(),
      windowBytes: p.windowBytes,
      sent: 0,
      acked: 0,
      paused: false,
      closing: false,
      openedAt: Date.now(),
    };
    this.byId.set(relay.consoleId, relay);
    this.byChannel.set(relay.channel, relay);
    let target: VncTarget | { none: string };
    try {
      target = vncTarget(await this.opts.liveXml(p.vmId));
    } catch (err) {
      const running = await this.opts.isRunning(p.vmId).catch(() => false);
      return this.fail(
        relay,
        running ? { reason: "no_display", message: (err as Error).message.slice(0, 500) } : { reason: "vm_stopped" },
      );
    }
    if ("none" in target) {
      const running = await this.opts.isRunning(p.vmId).catch(() => false);
      return this.fail(
        relay,
        running || !/port yet/.test(target.none)
          ? { reason: "no_display", message: target.none }
          : { reason: "vm_stopped" },
      );
    }
    if (relay.closing) return;
    const socket =
      target.kind === "unix" ? connect({ path: target.path }) : connect({ host: target.host, port: target.port });
    relay.socket = socket;
    socket.setNoDelay(true);
    const timer = setTimeout(
      () => socket.destroy(new Error("the VNC server did not answer in time")),
      this.opts.connectTimeoutMs ?? 10_000,
    );
    socket.once("connect", () => {
      clearTimeout(timer);
      if (relay.closing) return void socket.destroy();
      this.opts.log.info({ vmId: p.vmId, readOnly }, "graphical console opened");
      this.opts.send({ type: "console.opened", id: relay.consoleId, payload: {} });
    });
    socket.on("data", (chunk: Buffer) =>
      this.fromServer(relay, new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)),
    );
    socket.on("error", (err) => {
      clearTimeout(timer);
      if (relay.closing) return;
      this.fail(relay, {
        reason: "no_display",
        message: `cannot reach the VM's VNC display: ${err.message}`.slice(0, 500),
      });
    });
    socket.on("close", () => {
      clearTimeout(timer);
      if (relay.closing) return;
      void this.serverClosed(relay);
    });
  }

  private fromServer(relay: Relay, bytes: Uint8Array): void {
    if (relay.closing) return;
    const pass = relay.server.feed(bytes);
    const verdict = relay.server.verdict;
    if (verdict?.kind === "password")
      return this.end(relay, {
        reason: "password_required",
        message: `this VM's VNC display asks for ${verdict.offered.map(securityName).join(" or ")}; only a display without a password, on the host's loopback, is relayed`,
      });
    this.toViewer(relay, pass);
  }

  /** Sends server bytes in frames within the credit window; pauses reading once it is full. */
  private toViewer(relay: Relay, bytes: Uint8Array): void {
    for (let at = 0; at < bytes.byteLength; at += VNC_FRAME_BYTES) {
      const piece = bytes.subarray(at, at + VNC_FRAME_BYTES);
      if (!this.opts.sendBytes(encodeLinkOutput(relay.channel, relay.sent, piece))) return; // link down
      relay.sent += piece.byteLength;
    }
    if (!relay.paused && relay.sent - relay.acked >= relay.windowBytes) {
      relay.paused = true;
      relay.socket?.pause();
    }
  }

  private async serverClosed(relay: Relay): Promise<void> {
    const running = await this.opts.isRunning(relay.vmId).catch(() => false);
    this.fail(
      relay,
      running ? { reason: "error", message: "the VM's VNC server closed the connection" } : { reason: "vm_stopped" },
    );
  }

  /** Ends a relay because of what happened on its side, and says so. */
  private fail(relay: Relay, end: ConsoleEnd): void {
    if (relay.closing) return;
    this.end(relay, end);
  }

  private end(relay: Relay, end: ConsoleEnd): void {
    if (relay.closing) return;
    this.forget(relay);
    relay.socket?.destroy();
    this.opts.log.info(
      { vmId: relay.vmId, reason: end.reason, ...summary(relay.client.counts) },
      "graphical console ended",
    );
    this.opts.send({ type: "console.closed", id: relay.consoleId, payload: end });
  }

  private forget(relay: Relay): void {
    relay.closing = true;
    this.byId.delete(relay.consoleId);
    if (this.byChannel.get(relay.channel) === relay) this.byChannel.delete(relay.channel);
  }

  /** The link dropped: every relay ends (the control plane opens new ones on request). */
  closeAll(): void {
    for (const relay of [...this.byId.values()]) {
      this.forget(relay);
      relay.socket?.destroy();
    }
  }

  /** What the viewers' RFB messages were, by kind, across open relays (tests, diagnostics). */
  counts(): { id: string; readOnly: boolean; counts: ClientCounts }[] {
    return [...this.byId.values()].map((r) => ({ id: r.consoleId, readOnly: r.readOnly, counts: r.client.counts }));
  }

  get size(): number {
    return this.byId.size;
  }

  /** Sizes of its maps (the soak bench's debug counts): one entry per open graphical console. */
  debugCounts(): Record<string, number> {
    return { vncRelays: this.byId.size, vncChannels: this.byChannel.size };
  }
}

/** Counts of input messages passed and dropped (never their content). */
function summary(c: ClientCounts) {
  const n = (t: Record<number, number>, type: number) => t[type] ?? 0;
  return {
    keysPassed: n(c.passed, RFB_CLIENT.keyEvent) + n(c.passed, RFB_CLIENT.qemu),
    keysDropped: n(c.dropped, RFB_CLIENT.keyEvent) + n(c.dropped, RFB_CLIENT.qemu),
    pointerPassed: n(c.passed, RFB_CLIENT.pointerEvent),
    pointerDropped: n(c.dropped, RFB_CLIENT.pointerEvent),
    cutTextDropped: n(c.dropped, RFB_CLIENT.clientCutText),
  };
}
