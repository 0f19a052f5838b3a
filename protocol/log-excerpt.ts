// The newest part of a log text within a byte budget, shared by the agent (a reset's excerpt, read
// on the host) and the Worker (the same excerpt taken from the last-known log, the kept snapshot).
import { EXCERPT_MAX_BYTES } from "./wire.ts";

/** A reset event's excerpt: the log's last lines, at most EXCERPT_MAX_BYTES of them. */
export const EXCERPT_LINES = 20;

/** The newest part of `text` within `maxBytes` of UTF-8, starting at a line when it can. */
export function newestBytes(text: string, maxBytes: number): { text: string; cut: boolean } {
  const bytes = new TextEncoder().encode(text);
  if (bytes.byteLength <= maxBytes) return { text, cut: false };
  let start = bytes.byteLength - maxBytes;
  const newline = bytes.indexOf(0x0a, start - 1);
  if (newline >= 0 && newline < bytes.byteLength - 1) start = newline + 1;
  else while (start < bytes.byteLength && (bytes[start]! & 0xc0) === 0x80) start++; // one huge line: whole characters only
  return { text: new TextDecoder().decode(bytes.subarray(start)), cut: true };
}

/** The last `lines` lines of `text` (without the final newline), within `maxBytes`. */
export function lastLines(text: string, lines = EXCERPT_LINES, maxBytes = EXCERPT_MAX_BYTES): string {
  const body = text.endsWith("\n") ? text.slice(0, -1) : text;
  const tail = body.split("\n").slice(-lines).join("\n");
  return newestBytes(tail, maxBytes).text;
}
