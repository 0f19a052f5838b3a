// The agent's side of graphical consoles: per viewer, one connection to the VM's VNC server (found
// in the domain's live XML, on this host), its RFB bytes relayed through the link's binary frames
// within the control plane's credit window (reading pauses while it is full). A watcher's input
// messages are dropped here, whatever its browser does. Nothing shown or typed is logged.
import { VNC_FRAME_BYTES, decodeLinkFrame, encodeLinkOutput } from "../../protocol/console-frames.ts";
import type { AgentMessage, ServerMessage } from "../../protocol/wire.ts";
import type { Logger } from "../logger.ts";
import { RFB_CLIENT, type ClientCounts } from "./rfb.ts";
import { connectDisplay, type DisplayConnection, type DisplayDeps } from "./vnc-display.ts";

type ConsoleEnd = Extract<AgentMessage, { type: "console.closed" }>["payload"];
type OpenMessage = Extract<ServerMessage, { type: "console.open" }>;

type Relay = {
  consoleId: string;
  vmId: string;
  channel: number;
  readOnly: boolean;
  display: DisplayConnection;
  windowBytes: number;
  sent: number;
  acked: number;
  paused: boolean;
  closing: boolean;
  openedAt: number;
};

export type VncOptions = DisplayDeps & {
  send: (msg: AgentMessage) => boolean;
  sendBytes: (data: Uint8Array) => boolean;
  log: Logger;
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
        relay.display.resume();
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
    if (relay && !relay.closing) relay.display.fromViewer(frame.bytes);
  }

  private open(msg: OpenMessage): void {
    const p = msg.payload;
    const readOnly = p.display?.mode !== "rw";
    // The display reports nothing before its live XML is read, so `relay` is set by then.
    const relay: Relay = {
      consoleId: msg.id,
      vmId: p.vmId,
      channel: p.channel,
      readOnly,
      display: connectDisplay(p.vmId, readOnly, this.opts, {
        opened: () => {
          this.opts.log.info({ vmId: p.vmId, readOnly }, "graphical console opened");
          this.opts.send({ type: "console.opened", id: msg.id, payload: {} });
        },
        bytes: (bytes) => this.toViewer(relay, bytes),
        ended: (end) => this.end(relay, end),
      }),
      windowBytes: p.windowBytes,
      sent: 0,
      acked: 0,
      paused: false,
      closing: false,
      openedAt: Date.now(),
    };
    this.byId.set(relay.consoleId, relay);
    this.byChannel.set(relay.channel, relay);
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
      relay.display.pause();
    }
  }

  private end(relay: Relay, end: ConsoleEnd): void {
    if (relay.closing) return;
    this.forget(relay);
    relay.display.close();
    this.opts.log.info(
      { vmId: relay.vmId, reason: end.reason, ...summary(relay.display.counts) },
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
      relay.display.close();
    }
  }

  /** What the viewers' RFB messages were, by kind, across open relays (tests, diagnostics). */
  counts(): { id: string; readOnly: boolean; counts: ClientCounts }[] {
    return [...this.byId.values()].map((r) => ({ id: r.consoleId, readOnly: r.readOnly, counts: r.display.counts }));
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
