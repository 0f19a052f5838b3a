// A VM's graphical console: the ticket (`POST <prefix>/vms/:id/console {type: "vnc"}`), the socket
// wrapped as noVNC's channel, and "type this text" as paced keystrokes (QEMU's VNC has no clipboard).
import type { ConsoleMode, ConsoleTicketAnswer } from "../../../../../protocol/console.ts";
import { VncChannel, type VncState } from "../../../../../protocol/vnc-channel.ts";
import type { ApiClient } from "../../../lib/api-client.ts";

export type { VncState };

/** Asks for a ticket, then opens the socket. Throws ApiError when refused (403, 409, 429). */
export async function openGraphicalConsole(
  api: ApiClient,
  vmId: string,
  mode: ConsoleMode,
  onState: (state: VncState) => void,
): Promise<VncChannel> {
  const answer = await api.request<ConsoleTicketAnswer>(`/vms/${encodeURIComponent(vmId)}/console`, {
    method: "POST",
    json: { type: "vnc", mode },
  });
  const url = new URL(answer.url, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return new VncChannel(new WebSocket(url), answer.ticket, onState);
}

/** Keys pressed per second when typing text into the guest: its keyboard buffer is small. */
export const TYPED_KEYS_PER_SECOND = 40;
const SHIFT = 0xffe1;
const US_SHIFTED = '~!@#$%^&*()_+{}|:"<>?';

/** The keysym of a character (X11: Latin-1 as itself, the rest as Unicode keysyms), and whether a
 *  US keyboard needs Shift for it. */
export function keysymOf(ch: string): { keysym: number; shift: boolean } | null {
  if (ch === "\n" || ch === "\r") return { keysym: 0xff0d, shift: false };
  if (ch === "\t") return { keysym: 0xff09, shift: false };
  const cp = ch.codePointAt(0)!;
  if (cp < 0x20 || cp === 0x7f) return null;
  const shift = (ch >= "A" && ch <= "Z") || US_SHIFTED.includes(ch);
  if (cp <= 0xff) return { keysym: cp, shift };
  return { keysym: 0x01000000 + cp, shift: false };
}

type KeySender = { sendKey(keysym: number, code: string | null, down?: boolean): void };

/** Types `text` as key presses, paced; resolves when done or when `cancelled()` says stop. */
export async function typeText(rfb: KeySender, text: string, cancelled: () => boolean): Promise<void> {
  const gap = 1000 / TYPED_KEYS_PER_SECOND;
  for (const ch of text.replace(/\r\n/g, "\n")) {
    if (cancelled()) return;
    const key = keysymOf(ch);
    if (!key) continue;
    if (key.shift) rfb.sendKey(SHIFT, "ShiftLeft", true);
    rfb.sendKey(key.keysym, null, true);
    rfb.sendKey(key.keysym, null, false);
    if (key.shift) rfb.sendKey(SHIFT, "ShiftLeft", false);
    await new Promise((r) => setTimeout(r, gap));
  }
}
