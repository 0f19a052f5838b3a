// The limits every side of a serial or graphical console holds to, and the binary frames of output
// and input on the browser socket and the agent link: plain code without zod (the agent loads it),
// re-exported by console.ts beside the browser messages' schemas.

/** A console ticket is good this long after it was issued, once. */
export const CONSOLE_TICKET_TTL_MS = 30_000;
/** A resume token is good until this long after its socket closed. */
export const CONSOLE_RESUME_MS = 60_000;
/** The agent's stream of a VM stays open this long after its last viewer left. */
export const CONSOLE_LINGER_MS = 60_000;
/** Browser input: bytes per frame and frames per second; more is dropped and the browser told. */
export const CONSOLE_MAX_INPUT_BYTES = 4 * 1024;
export const CONSOLE_MAX_INPUT_PER_SECOND = 100;
/** Open consoles per VM, and VMs with an open console per node. */
export const CONSOLE_MAX_VIEWERS = 8;
export const CONSOLE_MAX_PER_NODE = 16;
/** Output the agent may have in flight without the control plane's ack, per console. */
export const CONSOLE_WINDOW_BYTES = 256 * 1024;
/** The agent sends output after at most this long or this many bytes, whichever comes first. */
export const CONSOLE_COALESCE_MS = 10;
export const CONSOLE_FRAME_BYTES = 16 * 1024;
/** A newcomer is shown at least this much recent output (from a line start). */
export const CONSOLE_REPLAY_BYTES = 64 * 1024;
/** What the control plane keeps per VM: enough for any browser to resume that is not cut as too slow. */
export const CONSOLE_KEEP_BYTES = 1024 * 1024;
/** A browser this far behind what it was sent (by its acks) is closed with `too_slow` and resumes. */
export const CONSOLE_TOO_SLOW_BYTES = 512 * 1024;
/** The browser acks at least every this many bytes it has shown. */
export const CONSOLE_ACK_EVERY_BYTES = 32 * 1024;
/** Defaults of the idle and total limits of one console session (CONSOLE_IDLE_MS, CONSOLE_SESSION_MAX_MS). */
export const CONSOLE_IDLE_MS = 30 * 60_000;
export const CONSOLE_SESSION_MAX_MS = 8 * 3_600_000;

export const CONSOLE_MODES = ["rw", "ro"] as const;
export type ConsoleMode = (typeof CONSOLE_MODES)[number];

/** What a console shows: the serial port's text, or the graphical display over RFB (VNC). */
export const CONSOLE_TYPES = ["serial", "vnc"] as const;
export type ConsoleType = (typeof CONSOLE_TYPES)[number];

export type ConsoleTicketAnswer = { ticket: string; expiresAt: string; url: string };

/** Why a console ended, as the browser is told in `closed`. */
export const CONSOLE_CLOSE_REASONS = [
  "host_offline",
  "vm_stopped",
  "taken_over", // someone forced the console open elsewhere
  "idle_timeout",
  "session_limit", // the session's total time ran out
  "revoked", // the token or role was withdrawn
  "too_slow", // the browser fell too far behind: it resumes
  "console_busy", // someone else holds the console on the host (open with force to take it over)
  "no_console", // the VM has no serial console the agent can open
  "no_display", // the VM has no VNC display the agent can reach
  "password_required", // the VM's VNC display asks for a password, which is never relayed
  "needs_websocket", // the node's agent is on the long-poll link, which carries no console
  "unsupported", // the node's agent is too old for consoles
  "too_many_viewers",
  "too_many_consoles",
  "bad_hello", // the first message was no valid hello, or its ticket or resume token was refused
  "error",
] as const;
export type ConsoleCloseReason = (typeof CONSOLE_CLOSE_REASONS)[number];

// ---- browser socket ------------------------------------------------------------------------------

/** Control plane → browser (text; output goes as binary frames, see encodeOutput). `notice` says
 *  that input was dropped (too big, too fast, or typed while watching). */
export type ConsoleServerMessage =
  | { type: "ready"; mode: ConsoleMode; writer: boolean; offset: number; resume: string }
  | { type: "writer"; writer: boolean }
  | { type: "notice"; code: "input_too_large" | "input_too_fast" | "not_writer"; message: string }
  | { type: "closed"; reason: ConsoleCloseReason; message?: string };

/** An output frame to a browser: an 8-byte big-endian offset of its first byte, then the bytes. */
export function encodeOutput(offset: number, bytes: Uint8Array): Uint8Array {
  const frame = new Uint8Array(8 + bytes.byteLength);
  new DataView(frame.buffer).setBigUint64(0, BigInt(offset));
  frame.set(bytes, 8);
  return frame;
}

export function decodeOutput(frame: Uint8Array): { offset: number; bytes: Uint8Array } | null {
  if (frame.byteLength < 8) return null;
  const offset = Number(new DataView(frame.buffer, frame.byteOffset, 8).getBigUint64(0));
  return { offset, bytes: frame.subarray(8) };
}

// ---- agent link -------------------------------------------------------------------------------
/** Binary frames on the agent link: output `[OUTPUT][u32 channel][u64 agent offset][bytes]` (agent
 *  → control plane), input `[INPUT][u32 channel][bytes]` (control plane → agent). `channel` is the
 *  number the control plane gave the console in `console.open`. */
export const LINK_FRAME = { output: 0x10, input: 0x11 } as const;
const OUTPUT_HEADER = 13;
const INPUT_HEADER = 5;
/** The largest binary frame on the agent link. */
export const MAX_LINK_BINARY_BYTES = OUTPUT_HEADER + 64 * 1024;

export function encodeLinkOutput(channel: number, offset: number, bytes: Uint8Array): Uint8Array {
  const frame = new Uint8Array(OUTPUT_HEADER + bytes.byteLength);
  const view = new DataView(frame.buffer);
  view.setUint8(0, LINK_FRAME.output);
  view.setUint32(1, channel);
  view.setBigUint64(5, BigInt(offset));
  frame.set(bytes, OUTPUT_HEADER);
  return frame;
}

export function encodeLinkInput(channel: number, bytes: Uint8Array): Uint8Array {
  const frame = new Uint8Array(INPUT_HEADER + bytes.byteLength);
  const view = new DataView(frame.buffer);
  view.setUint8(0, LINK_FRAME.input);
  view.setUint32(1, channel);
  frame.set(bytes, INPUT_HEADER);
  return frame;
}

export type LinkFrame =
  | { kind: "output"; channel: number; offset: number; bytes: Uint8Array }
  | { kind: "input"; channel: number; bytes: Uint8Array };

/** A binary link frame; null when it is none (unknown kind, truncated). */
export function decodeLinkFrame(data: Uint8Array): LinkFrame | null {
  if (data.byteLength < 1) return null;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const kind = view.getUint8(0);
  if (kind === LINK_FRAME.output && data.byteLength >= OUTPUT_HEADER) {
    return {
      kind: "output",
      channel: view.getUint32(1),
      offset: Number(view.getBigUint64(5)),
      bytes: data.subarray(OUTPUT_HEADER),
    };
  }
  if (kind === LINK_FRAME.input && data.byteLength >= INPUT_HEADER)
    return { kind: "input", channel: view.getUint32(1), bytes: data.subarray(INPUT_HEADER) };
  return null;
}

/** Where a newcomer's replay starts: just after the first line end in `tail` (whose first byte is at
 *  `start`), unless that would skip all of it. */
export function lineStart(tail: Uint8Array, start: number): number {
  if (start === 0) return 0;
  const nl = tail.indexOf(0x0a);
  return nl >= 0 && nl + 1 < tail.byteLength ? start + nl + 1 : start;
}

// ---- graphical consoles (VNC) ---------------------------------------------------------------------
/** RFB bytes per agent link frame: a framebuffer update is large, so fewer, bigger frames. */
export const VNC_FRAME_BYTES = 64 * 1024;
/** The largest browser frame of RFB bytes (a cut text or a burst of events fits well under it). */
export const VNC_MAX_INPUT_BYTES = 64 * 1024;

/** Control plane → browser on a graphical console: `ready` (RFB bytes follow as binary frames,
 *  unframed; the browser acks the count of bytes it received, as `offset`, at least every
 *  CONSOLE_ACK_EVERY_BYTES), then `notice` or `closed` as on a serial console. */
export type VncServerMessage =
  | { type: "ready"; display: "vnc"; mode: ConsoleMode; writer: boolean; offset: 0 }
  | Extract<ConsoleServerMessage, { type: "notice" | "closed" }>;
