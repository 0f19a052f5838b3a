// The client end of a console socket, shared by the dashboard, `qx vms console` and tests: hello
// with the ticket, output by offset (nothing shown twice), acks, resume after a drop or a too_slow
// cut-off, pacing of input (a paste goes in frames of at most CONSOLE_MAX_INPUT_BYTES, at most
// INPUT_FRAMES_PER_SECOND), and the state a user sees.
import {
  CONSOLE_ACK_EVERY_BYTES,
  CONSOLE_MAX_INPUT_BYTES,
  decodeOutput,
  type ConsoleCloseReason,
  type ConsoleMode,
  type ConsoleServerMessage,
} from "./console.ts";

/** What a WebSocket offers in both the browser and `ws` (Node). */
export type ConsoleSocket = {
  binaryType: string;
  readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open", cb: () => void): void;
  addEventListener(type: "message", cb: (e: { data: unknown }) => void): void;
  addEventListener(type: "close", cb: (e: { code: number; reason: string }) => void): void;
  addEventListener(type: "error", cb: () => void): void;
};

export type ConsoleState =
  | { kind: "connecting" }
  | { kind: "open"; mode: ConsoleMode; writer: boolean }
  | { kind: "reconnecting"; attempt: number }
  | { kind: "ended"; reason: ConsoleCloseReason | "disconnected"; message?: string };

export type ConsoleClientOptions = {
  /** opens a socket to the console's url (absolute) */
  connect: () => ConsoleSocket;
  ticket: string;
  onOutput: (bytes: Uint8Array, offset: number) => void;
  onState: (state: ConsoleState) => void;
  onNotice?: (message: string) => void;
  /** how many times a dropped socket is resumed in a row before giving up */
  maxResumes?: number;
};

/** Input frames per second the client sends at most (the control plane drops past 100). */
export const INPUT_FRAMES_PER_SECOND = 50;
const OPEN = 1;
/** Reasons after which the client comes back by itself (with its resume token). */
const RESUME_AFTER: ReadonlySet<string> = new Set(["too_slow", "disconnected"]);

export class ConsoleClient {
  private readonly opts: ConsoleClientOptions;
  private ws: ConsoleSocket | null = null;
  private resume: string | null = null;
  /** the offset of the next byte not yet shown */
  private next = -1;
  private ackedAt = 0;
  private mode: ConsoleMode = "ro";
  private writer = false;
  private ended = false;
  /** the current socket has said ready: input may go (never before the hello) */
  private live = false;
  private resumes = 0;
  private readonly input: Uint8Array[] = [];
  private pacer: ReturnType<typeof setTimeout> | null = null;

  constructor(opts: ConsoleClientOptions) {
    this.opts = opts;
    this.open({ type: "hello", ticket: opts.ticket });
  }

  /** Sends typed or pasted bytes, in frames of at most CONSOLE_MAX_INPUT_BYTES, paced. */
  send(bytes: Uint8Array): void {
    for (let at = 0; at < bytes.byteLength; at += CONSOLE_MAX_INPUT_BYTES)
      this.input.push(bytes.slice(at, at + CONSOLE_MAX_INPUT_BYTES));
    this.pump();
  }

  /** Asks for the writer role (read-write consoles). */
  take(): void {
    if (this.ws?.readyState === OPEN) this.ws.send(JSON.stringify({ type: "take" }));
  }

  /** Leaves the console for good. */
  close(): void {
    this.ended = true;
    if (this.pacer) clearTimeout(this.pacer);
    try {
      this.ws?.close(1000, "left");
    } catch {
      // closing already
    }
  }

  /** The offset of the next byte this client would show. */
  get offset(): number {
    return this.next;
  }

  private open(hello: object): void {
    const ws = this.opts.connect();
    this.ws = ws;
    this.live = false;
    ws.binaryType = "arraybuffer";
    let closedWith: { reason: ConsoleCloseReason; message?: string } | null = null;
    ws.addEventListener("open", () => ws.send(JSON.stringify(hello)));
    ws.addEventListener("message", (e) => {
      if (typeof e.data === "string") {
        const msg = JSON.parse(e.data) as ConsoleServerMessage;
        if (msg.type === "closed") closedWith = { reason: msg.reason, message: msg.message };
        else this.control(msg);
        return;
      }
      this.output(new Uint8Array(e.data as ArrayBuffer));
    });
    ws.addEventListener("error", () => {});
    ws.addEventListener("close", () => {
      if (this.ws !== ws || this.ended) return;
      this.ws = null;
      this.live = false;
      const reason = closedWith?.reason ?? "disconnected";
      if (RESUME_AFTER.has(reason) && this.resume && this.next >= 0 && this.resumes < (this.opts.maxResumes ?? 5)) {
        this.resumes++;
        this.opts.onState({ kind: "reconnecting", attempt: this.resumes });
        const hello = { type: "hello", resume: this.resume, from: this.next };
        this.resume = null;
        // Backoff with jitter: a deploy drops every console at once.
        setTimeout(() => this.open(hello), Math.random() * 250 * 2 ** this.resumes);
        return;
      }
      this.ended = true;
      this.opts.onState({ kind: "ended", reason, ...(closedWith?.message ? { message: closedWith.message } : {}) });
    });
    this.opts.onState(this.resumes ? { kind: "reconnecting", attempt: this.resumes } : { kind: "connecting" });
  }

  private control(msg: Exclude<ConsoleServerMessage, { type: "closed" }>): void {
    if (msg.type === "ready") {
      this.resume = msg.resume;
      this.mode = msg.mode;
      this.writer = msg.writer;
      if (this.next < 0) this.next = msg.offset;
      this.ackedAt = this.next;
      this.live = true;
      this.opts.onState({ kind: "open", mode: this.mode, writer: this.writer });
    } else if (msg.type === "writer") {
      this.writer = msg.writer;
      this.opts.onState({ kind: "open", mode: this.mode, writer: this.writer });
    } else if (msg.type === "notice") {
      this.opts.onNotice?.(msg.message);
    }
  }

  private output(frame: Uint8Array): void {
    const out = decodeOutput(frame);
    if (!out) return;
    this.resumes = 0; // a socket that delivers is a good one
    const end = out.offset + out.bytes.byteLength;
    if (this.next < 0) this.next = out.offset;
    if (end <= this.next) return; // seen already
    const fresh = out.bytes.subarray(Math.max(0, this.next - out.offset));
    this.next = end;
    this.opts.onOutput(fresh, end - fresh.byteLength);
    if (this.next - this.ackedAt >= CONSOLE_ACK_EVERY_BYTES) this.ack();
  }

  private ack(): void {
    this.ackedAt = this.next;
    if (this.ws?.readyState === OPEN) this.ws.send(JSON.stringify({ type: "ack", offset: this.next }));
  }

  private pump(): void {
    if (this.pacer || this.input.length === 0 || this.ended) return;
    const ws = this.ws;
    if (!this.live || ws?.readyState !== OPEN) {
      this.pacer = setTimeout(() => {
        this.pacer = null;
        this.pump();
      }, 50);
      return;
    }
    ws.send(this.input.shift()!);
    this.pacer = setTimeout(() => {
      this.pacer = null;
      this.pump();
    }, 1000 / INPUT_FRAMES_PER_SECOND);
  }
}
