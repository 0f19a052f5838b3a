// The client end of a graphical console socket, shaped as the WebSocket-like channel noVNC's RFB
// accepts instead of a URL: it says hello with the ticket, opens once `ready` arrives, hands RFB bytes
// on as they come and acks them (the agent's credit), and keeps our text control messages to itself.
import { CONSOLE_ACK_EVERY_BYTES, type ConsoleCloseReason, type VncServerMessage } from "./console.ts";
import type { ConsoleSocket } from "./console-client.ts";

export type VncState =
  | { kind: "connecting" }
  | { kind: "open"; writer: boolean }
  | { kind: "ended"; reason: ConsoleCloseReason | "disconnected"; message?: string };

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

export class VncChannel {
  // The properties noVNC checks for (a WebSocket's), set by it after attaching.
  binaryType = "arraybuffer";
  protocol = "";
  onopen: ((e: unknown) => void) | null = null;
  onmessage: ((e: { data: ArrayBuffer }) => void) | null = null;
  onclose: ((e: { code: number; reason: string; wasClean: boolean }) => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;
  readyState = CONNECTING;

  private readonly ws: ConsoleSocket;
  private readonly onState: (state: VncState) => void;
  private received = 0;
  private acked = 0;
  private ended: VncState | null = null;

  constructor(ws: ConsoleSocket, ticket: string, onState: (state: VncState) => void) {
    this.ws = ws;
    this.onState = onState;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "hello", ticket })));
    ws.addEventListener("message", (e) => this.message(e.data));
    ws.addEventListener("error", () => this.onerror?.({}));
    ws.addEventListener("close", (e) => {
      this.readyState = CLOSED;
      this.onState(this.ended ?? { kind: "ended", reason: "disconnected" });
      this.onclose?.({ code: e.code, reason: e.reason, wasClean: this.ended !== null });
    });
    onState({ kind: "connecting" });
  }

  send(data: ArrayBuffer | Uint8Array): void {
    if (this.readyState === OPEN) this.ws.send(data instanceof Uint8Array ? data : new Uint8Array(data));
  }

  close(): void {
    this.readyState = CLOSED;
    this.ws.close(1000, "closed by the viewer");
  }

  private message(data: unknown): void {
    if (typeof data === "string") return this.control(JSON.parse(data) as VncServerMessage);
    const bytes = data instanceof ArrayBuffer ? data : toArrayBuffer(data as Uint8Array);
    this.received += bytes.byteLength;
    this.onmessage?.({ data: bytes });
    // Acked once handed on: the agent sends more only as the page keeps up.
    if (this.received - this.acked >= CONSOLE_ACK_EVERY_BYTES / 4) {
      this.acked = this.received;
      this.ws.send(JSON.stringify({ type: "ack", offset: this.received }));
    }
  }

  private control(msg: VncServerMessage): void {
    if (msg.type === "ready") {
      this.readyState = OPEN;
      // onopen first: a viewer attached from onState finds the channel open and must not be told twice.
      this.onopen?.({});
      this.onState({ kind: "open", writer: msg.writer });
    } else if (msg.type === "closed") {
      this.ended = { kind: "ended", reason: msg.reason, ...(msg.message ? { message: msg.message } : {}) };
    }
  }
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}
