// The agent's side of serial consoles: one console stream per VM, its output coalesced into binary
// frames within the control plane's credit window (reading pauses while the window is full), its
// input written as it comes. Nothing typed or shown is logged.
import { decodeLinkFrame, encodeLinkOutput } from "../../protocol/console-frames.ts";
import type { AgentMessage, ServerMessage } from "../../protocol/wire.ts";
import type { Logger } from "../logger.ts";
import { OutputCoalescer } from "./output-coalescer.ts";

/** A console stream as the libvirt client gives it (`openConsole`). */
export type ConsoleStream = {
  write(bytes: Uint8Array): void;
  onData(cb: (bytes: Uint8Array) => void): void;
  /** `error.code`: libvirt's numeric error code, when libvirt ended it */
  onEnd(cb: (end: { error?: { code?: number; message: string } }) => void): void;
  pause(): void;
  resume(): void;
  close(): void;
};

export type ConsoleOpener = {
  openConsole(uuid: string, opts: { force?: boolean; devName?: string }): Promise<ConsoleStream>;
};

/** Why a console could not be opened or ended, as libvirt said it, in the protocol's words. */
export type ConsoleEnd = Extract<AgentMessage, { type: "console.closed" }>["payload"];

/** libvirt error codes that say what happened to a console. */
const VIR_ERR = { operationFailed: 9, noDomain: 42, operationInvalid: 55, noSupport: 3, argumentUnsupported: 67 };

/** Reads a libvirt failure to open or keep a console. */
export function consoleEndOf(error: { code?: number; message: string } | undefined, running: boolean): ConsoleEnd {
  if (!error) return { reason: running ? "closed" : "vm_stopped" };
  const message = error.message.slice(0, 500);
  if (/active console session exists/i.test(message)) return { reason: "console_busy", message };
  if (error.code === VIR_ERR.noDomain || /not running|domain is not running/i.test(message))
    return { reason: "vm_stopped", message };
  if (
    error.code === VIR_ERR.noSupport ||
    error.code === VIR_ERR.argumentUnsupported ||
    /cannot find.*(console|character device)|no console/i.test(message)
  )
    return { reason: "no_console", message };
  if (/I\/O failure|aborted|forced/i.test(message)) return { reason: "taken_over", message };
  if (error.code === VIR_ERR.operationInvalid) return { reason: running ? "error" : "vm_stopped", message };
  return { reason: "error", message };
}

type Open = {
  consoleId: string;
  vmId: string;
  channel: number;
  stream: ConsoleStream | null;
  windowBytes: number;
  /** the next byte's offset in this stream, and the highest the control plane acked */
  sent: number;
  acked: number;
  output: OutputCoalescer;
  paused: boolean;
  closing: boolean;
};

export type ConsoleOptions = {
  opener: ConsoleOpener;
  send: (msg: AgentMessage) => boolean;
  sendBytes: (data: Uint8Array) => boolean;
  /** whether the domain runs now (tells a stopped VM from other stream ends) */
  isRunning: (uuid: string) => Promise<boolean>;
  log: Logger;
};

export class ConsoleStreams {
  private readonly opts: ConsoleOptions;
  private readonly byId = new Map<string, Open>();
  private readonly byChannel = new Map<number, Open>();

  constructor(opts: ConsoleOptions) {
    this.opts = opts;
  }

  handle(msg: Extract<ServerMessage, { type: "console.open" | "console.ack" | "console.close" }>): void {
    if (msg.type === "console.open") return void this.open(msg.id, msg.payload);
    const open = this.byId.get(msg.id);
    if (!open) {
      if (msg.type === "console.close")
        this.opts.send({ type: "console.closed", id: msg.id, payload: { reason: "closed" } });
      return;
    }
    if (msg.type === "console.ack") {
      open.acked = Math.max(open.acked, Math.min(msg.payload.offset, open.sent));
      if (open.paused && open.sent - open.acked < open.windowBytes) {
        open.paused = false;
        open.stream?.resume();
      }
      return;
    }
    this.end(open, { reason: "closed" });
  }

  /** A binary frame from the control plane: input for a console. */
  onBytes(data: Uint8Array): void {
    const frame = decodeLinkFrame(data);
    if (frame?.kind !== "input") return;
    const open = this.byChannel.get(frame.channel);
    if (open?.stream && !open.closing) open.stream.write(frame.bytes);
  }

  private async open(consoleId: string, p: Extract<ServerMessage, { type: "console.open" }>["payload"]): Promise<void> {
    // One stream per VM: a new open for the VM replaces an old one this link still holds.
    for (const other of this.byId.values()) if (other.vmId === p.vmId) this.end(other, { reason: "closed" });
    const open: Open = {
      consoleId,
      vmId: p.vmId,
      channel: p.channel,
      stream: null,
      windowBytes: p.windowBytes,
      sent: 0,
      acked: 0,
      output: new OutputCoalescer({
        send: (piece) => {
          if (!this.opts.sendBytes(encodeLinkOutput(open.channel, open.sent, piece))) return false; // link down: the console ends with it
          open.sent += piece.byteLength;
          return true;
        },
        // Reading pauses once the window is full; an ack resumes it.
        flushed: () => {
          if (!open.paused && open.sent - open.acked >= open.windowBytes) {
            open.paused = true;
            open.stream?.pause();
          }
        },
      }),
      paused: false,
      closing: false,
    };
    this.byId.set(consoleId, open);
    this.byChannel.set(p.channel, open);
    let stream: ConsoleStream;
    try {
      stream = await this.opts.opener.openConsole(p.vmId, p.force ? { force: true } : {});
    } catch (err) {
      const error = err as { code?: number; message?: string };
      const running = await this.opts.isRunning(p.vmId).catch(() => false);
      const end = consoleEndOf({ code: error.code, message: error.message ?? String(err) }, running);
      this.opts.log.info({ vmId: p.vmId, reason: end.reason }, "console not opened");
      this.forget(open);
      this.opts.send({ type: "console.closed", id: consoleId, payload: end });
      return;
    }
    if (open.closing) return stream.close(); // closed while opening
    open.stream = stream;
    stream.onData((bytes) => this.output(open, bytes));
    stream.onEnd((end) => void this.streamEnded(open, end.error));
    this.opts.log.info({ vmId: p.vmId, forced: p.force }, "console opened");
    this.opts.send({ type: "console.opened", id: consoleId, payload: {} });
  }

  private output(open: Open, bytes: Uint8Array): void {
    if (!open.closing) open.output.push(bytes);
  }

  private async streamEnded(open: Open, error: { code?: number; message: string } | undefined): Promise<void> {
    if (open.closing) return;
    open.output.flush();
    const running = await this.opts.isRunning(open.vmId).catch(() => false);
    const end = consoleEndOf(error, running);
    this.opts.log.info({ vmId: open.vmId, reason: end.reason }, "console ended");
    this.forget(open);
    this.opts.send({ type: "console.closed", id: open.consoleId, payload: end });
  }

  /** Closes one console and says so. */
  private end(open: Open, end: ConsoleEnd): void {
    if (open.closing) return;
    open.output.flush();
    this.forget(open);
    open.stream?.close();
    this.opts.send({ type: "console.closed", id: open.consoleId, payload: end });
  }

  private forget(open: Open): void {
    open.closing = true;
    open.output.stop();
    this.byId.delete(open.consoleId);
    if (this.byChannel.get(open.channel) === open) this.byChannel.delete(open.channel);
  }

  /** The link dropped: every console ends (the control plane opens them again on request). */
  closeAll(): void {
    for (const open of [...this.byId.values()]) {
      this.forget(open);
      open.stream?.close();
    }
  }

  /** How many consoles are open (for tests and diagnostics). */
  get size(): number {
    return this.byId.size;
  }

  /** Sizes of what it holds (the soak bench's debug counts): one entry per open console in each map
   *  (at most the control plane's consoles per node), and output not yet framed (under one frame each). */
  debugCounts(): Record<string, number> {
    let pendingBytes = 0;
    for (const open of this.byId.values()) pendingBytes += open.output.pendingBytes;
    return { consoles: this.byId.size, consoleChannels: this.byChannel.size, consolePendingBytes: pendingBytes };
  }
}
