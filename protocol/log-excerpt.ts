// The newest part of a log text within a byte budget, shared by the agent (a reset's excerpt, read
// on the host) and the Worker (the same excerpt taken from the last-known log, the kept snapshot).
import { EXCERPT_MAX_BYTES } from "./wire-constants.ts";

/** A reset event's excerpt: the log's last lines, at most EXCERPT_MAX_BYTES of them. */
export const EXCERPT_LINES = 20;

const encoder = new TextEncoder();

/** The size of `text` as UTF-8, the unit every log cap counts in (a string's length counts UTF-16
 *  units, which is half the bytes of Cyrillic text and a third of CJK). */
export function utf8Bytes(text: string): number {
  // Counted in place: encoding an 8 MiB answer just to measure it would copy it.
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/** The newest part of `text` within `maxBytes` of UTF-8, starting at a line when it can. */
export function newestBytes(text: string, maxBytes: number): { text: string; cut: boolean } {
  const bytes = encoder.encode(text);
  if (bytes.byteLength <= maxBytes) return { text, cut: false };
  let start = bytes.byteLength - maxBytes;
  const newline = bytes.indexOf(0x0a, start - 1);
  if (newline >= 0 && newline < bytes.byteLength - 1) start = newline + 1;
  else while (start < bytes.byteLength && (bytes[start] & 0xc0) === 0x80) start++; // one huge line: whole characters only
  return { text: new TextDecoder().decode(bytes.subarray(start)), cut: true };
}

/** The last `lines` lines of `text` (without the final newline), within `maxBytes`. */
export function lastLines(text: string, lines = EXCERPT_LINES, maxBytes = EXCERPT_MAX_BYTES): string {
  const body = text.endsWith("\n") ? text.slice(0, -1) : text;
  const tail = body.split("\n").slice(-lines).join("\n");
  return newestBytes(tail, maxBytes).text;
}
