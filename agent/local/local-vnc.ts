// The host view's graphical console: one connection to the VM's VNC server (from its live XML, on this
// host) per page, its RFB bytes relayed as binary WebSocket frames through the same RFB gates as the
// control plane's relay (a display that asks for a password is refused before the page sees it).
// A page that asked for `ro` watches: its key, pointer and cut-text messages are dropped here.
import type { WebSocket } from "ws";
import type { VncServerMessage } from "../../protocol/console-frames.ts";
import { connectDisplay, type DisplayDeps } from "../console/vnc-display.ts";
import type { Logger } from "../logger.ts";

/** Past this much unsent to a slow page, the VNC server is not read until it drains. */
const PAUSE_ABOVE_BYTES = 1024 * 1024;
/** Graphical pages open at once per VM on this host view (each is its own RFB connection). */
export const LOCAL_VNC_VIEWERS_PER_VM = 4;

type Closed = Extract<VncServerMessage, { type: "closed" }>;

export type LocalDisplayDeps = DisplayDeps & { log: Logger };

/** Relays `ws` (after its hello) to the VM's VNC display until either side ends. */
export function relayLocalDisplay(
  ws: WebSocket,
  vmId: string,
  readOnly: boolean,
  deps: LocalDisplayDeps,
  end: (reason: Closed["reason"], message?: string) => void,
): void {
  const send = (m: VncServerMessage) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m));
  let paused = false;
  const toPage = (bytes: Uint8Array) => {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(bytes);
    if (!paused && ws.bufferedAmount > PAUSE_ABOVE_BYTES) {
      paused = true;
      display.pause();
      const wait = setInterval(() => {
        if (ws.readyState !== ws.OPEN || ws.bufferedAmount <= PAUSE_ABOVE_BYTES / 2) {
          clearInterval(wait);
          paused = false;
          display.resume();
        }
      }, 20);
    }
  };
  const display = connectDisplay(vmId, readOnly, deps, {
    opened: () => {
      deps.log.info({ vmId, readOnly }, "host view graphical console opened");
      send({ type: "ready", display: "vnc", mode: readOnly ? "ro" : "rw", writer: !readOnly, offset: 0 });
    },
    bytes: toPage,
    ended: ({ reason, message }) => {
      deps.log.info({ vmId, reason }, "host view graphical console ended");
      end(reason, message);
    },
  });
  ws.on("message", (data, binary) => {
    // RFB bytes only; the page's acks mean nothing here (the socket's own buffer is the bound).
    if (!binary || display.closed) return;
    const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
    // A VNC server that stops reading holds the page's input back, not this process's memory.
    if (!display.fromViewer(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength))) {
      ws.pause();
      display.drained(() => ws.resume());
    }
  });
  ws.on("close", () => display.close());
}
