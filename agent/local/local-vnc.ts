// The host view's graphical console: one connection to the VM's VNC server (from its live XML, on this
// host) per page, its RFB bytes relayed as binary WebSocket frames through the same RFB gates as the
// control plane's relay (a display that asks for a password is refused before the page sees it).
// A page that asked for `ro` watches: its key, pointer and cut-text messages are dropped here.
import { connect, type Socket } from "node:net";
import type { WebSocket } from "ws";
import type { VncServerMessage } from "../../protocol/console-frames.ts";
import { RfbClientFilter, RfbError, RfbServerGate, securityName } from "../console/rfb.ts";
import { vncTarget, type DomainXmlSource } from "../console/vnc.ts";
import type { Logger } from "../logger.ts";

/** Past this much unsent to a slow page, the VNC server is not read until it drains. */
const PAUSE_ABOVE_BYTES = 1024 * 1024;
/** Graphical pages open at once per VM on this host view (each is its own RFB connection). */
export const LOCAL_VNC_VIEWERS_PER_VM = 4;

type Closed = Extract<VncServerMessage, { type: "closed" }>;

export type LocalDisplayDeps = {
  liveXml: DomainXmlSource;
  isRunning: (uuid: string) => Promise<boolean>;
  log: Logger;
  connectTimeoutMs?: number;
};

/** Relays `ws` (after its hello) to the VM's VNC display until either side ends. */
export async function relayLocalDisplay(
  ws: WebSocket,
  vmId: string,
  readOnly: boolean,
  deps: LocalDisplayDeps,
  end: (reason: Closed["reason"], message?: string) => void,
): Promise<void> {
  const send = (m: VncServerMessage) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m));
  let target: ReturnType<typeof vncTarget>;
  try {
    target = vncTarget(await deps.liveXml(vmId));
  } catch (err) {
    const running = await deps.isRunning(vmId).catch(() => false);
    return running ? end("no_display", (err as Error).message.slice(0, 500)) : end("vm_stopped");
  }
  if ("none" in target) {
    const running = await deps.isRunning(vmId).catch(() => false);
    return running || !/port yet/.test(target.none) ? end("no_display", target.none) : end("vm_stopped");
  }
  if (ws.readyState !== ws.OPEN) return;

  const client = new RfbClientFilter(readOnly);
  const server = new RfbServerGate();
  let closing = false;
  let paused = false;
  const socket: Socket =
    target.kind === "unix" ? connect({ path: target.path }) : connect({ host: target.host, port: target.port });
  socket.setNoDelay(true);
  const finish = (reason: Closed["reason"], message?: string) => {
    if (closing) return;
    closing = true;
    socket.destroy();
    deps.log.info({ vmId, reason }, "host view graphical console ended");
    end(reason, message);
  };
  const timer = setTimeout(
    () => socket.destroy(new Error("the VNC server did not answer in time")),
    deps.connectTimeoutMs ?? 10_000,
  );
  const toPage = (bytes: Uint8Array) => {
    if (!bytes.byteLength || ws.readyState !== ws.OPEN) return;
    ws.send(bytes);
    if (!paused && ws.bufferedAmount > PAUSE_ABOVE_BYTES) {
      paused = true;
      socket.pause();
      const wait = setInterval(() => {
        if (ws.readyState !== ws.OPEN || ws.bufferedAmount <= PAUSE_ABOVE_BYTES / 2) {
          clearInterval(wait);
          paused = false;
          socket.resume();
        }
      }, 20);
    }
  };
  socket.once("connect", () => {
    clearTimeout(timer);
    if (closing) return;
    deps.log.info({ vmId, readOnly }, "host view graphical console opened");
    send({ type: "ready", display: "vnc", mode: readOnly ? "ro" : "rw", writer: !readOnly, offset: 0 });
  });
  socket.on("data", (chunk: Buffer) => {
    if (closing) return;
    const pass = server.feed(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    if (server.verdict?.kind === "password")
      return finish(
        "password_required",
        `this VM's VNC display asks for ${server.verdict.offered.map(securityName).join(" or ")}; only a display without a password, on the host's loopback, is relayed`,
      );
    toPage(pass);
  });
  socket.on("error", (err) => {
    clearTimeout(timer);
    finish("no_display", `cannot reach the VM's VNC display: ${err.message}`.slice(0, 500));
  });
  socket.on("close", () => {
    clearTimeout(timer);
    if (closing) return;
    void deps
      .isRunning(vmId)
      .catch(() => false)
      .then((running) =>
        running ? finish("error", "the VM's VNC server closed the connection") : finish("vm_stopped"),
      );
  });
  ws.on("message", (data, binary) => {
    // RFB bytes only; the page's acks mean nothing here (the socket's own buffer is the bound).
    if (!binary || closing) return;
    const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
    let pass: Uint8Array;
    try {
      const before = client.minor;
      pass = client.feed(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      if (before === null && client.minor !== null) toPage(server.clientVersion(client.minor));
    } catch (err) {
      const refused = err instanceof RfbError && /password/.test(err.message);
      return finish(refused ? "password_required" : "error", (err as Error).message);
    }
    // A VNC server that stops reading holds the page's input back, not this process's memory.
    if (pass.byteLength && !socket.write(pass)) {
      ws.pause();
      socket.once("drain", () => ws.resume());
    }
  });
  ws.on("close", () => {
    clearTimeout(timer);
    closing = true;
    socket.destroy();
  });
}
