// The host view's consoles, for an operator on the host while the control plane is out of reach:
// `POST /api/v1/vms/:id/console` (host token) gives a single-use 30 s ticket, and the socket at
// `/api/v1/vms/:id/console/ws` speaks the control plane's console messages (hello, ready, output
// frames with offsets, closed) over the agent's own libvirt console stream. One local serial console
// per VM, always the writer; no resume and no scrollback (the control plane keeps those). A ticket
// with `type: "vnc"` opens the graphical console instead (local-vnc.ts), a few pages per VM.
import { createHash, randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import {
  CONSOLE_MAX_INPUT_BYTES,
  CONSOLE_TICKET_TTL_MS,
  encodeOutput,
  type ConsoleServerMessage,
  type ConsoleTicketAnswer,
} from "../../protocol/console-frames.ts";
import { CONSOLE_REQUEST_RULE, ConsoleClientMessage, ConsoleRequest } from "../../protocol/console-checks.ts";
import { consoleEndOf, type ConsoleOpener } from "../console/console.ts";
import { OutputCoalescer } from "../console/output-coalescer.ts";
import type { Logger } from "../logger.ts";
import { LOCAL_VNC_VIEWERS_PER_VM, relayLocalDisplay, type LocalDisplayDeps } from "./local-vnc.ts";

/** Past this much unsent to a slow page, the guest's console is not read until it drains. */
const PAUSE_ABOVE_BYTES = 1024 * 1024;

const hash = (secret: string) => createHash("sha256").update(secret).digest("hex");

export class LocalConsoles {
  private readonly opener: ConsoleOpener;
  private readonly isRunning: (uuid: string) => Promise<boolean>;
  private readonly log: Logger;
  private readonly tickets = new Map<
    string,
    { vmId: string; force: boolean; vnc: boolean; readOnly: boolean; expiresAt: number }
  >();
  private readonly open = new Set<string>();
  /** graphical pages open, by VM */
  private readonly displays = new Map<string, number>();
  private readonly liveXml: LocalDisplayDeps["liveXml"] | undefined;
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });

  /** Without `liveXml`, the host view offers the serial console only. */
  constructor(
    opener: ConsoleOpener,
    isRunning: (uuid: string) => Promise<boolean>,
    log: Logger,
    liveXml?: LocalDisplayDeps["liveXml"],
  ) {
    this.opener = opener;
    this.isRunning = isRunning;
    this.log = log;
    this.liveXml = liveXml;
  }

  /** Sizes of its collections (the soak bench's debug counts): tickets issued in the last 30 s (the
   *  expired go at the next issue), one open serial console per VM, and each VM with a graphical
   *  page open (deleted with its last page). */
  debugCounts(): Record<string, number> {
    return { localConsoleTickets: this.tickets.size, localConsoles: this.open.size, localDisplays: this.displays.size };
  }

  /** A ticket for `vmId` (already found in libvirt's list); the body as the control plane takes it. */
  ticket(vmId: string, body: unknown): ConsoleTicketAnswer | { error: string } {
    const parsed = ConsoleRequest(body);
    if (!parsed) return { error: `body: ${CONSOLE_REQUEST_RULE}` };
    const vnc = parsed.value.type === "vnc";
    if (vnc && !this.liveXml) return { error: "type: this host view offers the serial console only" };
    const now = Date.now();
    for (const [h, t] of this.tickets) if (t.expiresAt <= now) this.tickets.delete(h);
    const ticket = `qxc_${randomBytes(32).toString("base64url")}`;
    const expiresAt = now + CONSOLE_TICKET_TTL_MS;
    this.tickets.set(hash(ticket), {
      vmId,
      force: parsed.value.force === true,
      vnc,
      readOnly: parsed.value.mode === "ro",
      expiresAt,
    });
    return { ticket, expiresAt: new Date(expiresAt).toISOString(), url: `/api/v1/vms/${vmId}/console/ws` };
  }

  /** The console socket's upgrade: refused from another origin; the ticket comes in its first message. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, vmId: string): void {
    const origin = req.headers.origin;
    if (origin !== undefined && new URL(origin).host !== req.headers.host) {
      socket.end("HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.serve(ws, vmId));
  }

  private serve(ws: WebSocket, vmId: string): void {
    const send = (m: ConsoleServerMessage) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m));
    const end = (reason: Extract<ConsoleServerMessage, { type: "closed" }>["reason"], message?: string) => {
      send({ type: "closed", reason, ...(message ? { message } : {}) });
      ws.close(1000, reason);
    };
    const helloTimer = setTimeout(() => end("bad_hello", "no hello in time"), 10_000);
    ws.once("message", (data, binary) => {
      clearTimeout(helloTimer);
      const msg = binary ? null : clientMessageOf(String(data));
      const ticket = msg?.type === "hello" && msg.ticket ? this.tickets.get(hash(msg.ticket)) : undefined;
      if (msg?.type === "hello" && msg.ticket) this.tickets.delete(hash(msg.ticket));
      if (!ticket || ticket.expiresAt <= Date.now() || ticket.vmId !== vmId)
        return end("bad_hello", "the ticket is unknown, used, expired or for another VM");
      if (ticket.vnc) return this.display(ws, vmId, ticket.readOnly, end);
      if (this.open.has(vmId)) return end("console_busy", "this VM's console is open in another host view");
      void this.attach(ws, vmId, ticket.force, send, end);
    });
  }

  private async attach(
    ws: WebSocket,
    vmId: string,
    force: boolean,
    send: (m: ConsoleServerMessage) => void,
    end: (reason: Extract<ConsoleServerMessage, { type: "closed" }>["reason"], message?: string) => void,
  ): Promise<void> {
    this.open.add(vmId);
    let stream;
    try {
      stream = await this.opener.openConsole(vmId, force ? { force: true } : {});
    } catch (err) {
      this.open.delete(vmId);
      const e = err as { code?: number; message?: string };
      const why = consoleEndOf(
        { code: e.code, message: e.message ?? String(err) },
        await this.isRunning(vmId).catch(() => false),
      );
      return end(why.reason === "closed" ? "vm_stopped" : why.reason, why.message);
    }
    this.log.info({ vmId, forced: force }, "host view console opened");
    let offset = 0;
    let paused = false;
    const output = new OutputCoalescer({
      send: (piece) => {
        if (ws.readyState === ws.OPEN) ws.send(encodeOutput(offset, piece));
        offset += piece.byteLength;
        return true;
      },
      // A page that does not keep up: the guest's console is not read until its socket drains.
      flushed: () => {
        if (paused || ws.bufferedAmount <= PAUSE_ABOVE_BYTES) return;
        paused = true;
        stream.pause();
        const wait = setInterval(() => {
          if (ws.readyState !== ws.OPEN || ws.bufferedAmount <= PAUSE_ABOVE_BYTES / 2) {
            clearInterval(wait);
            paused = false;
            stream.resume();
          }
        }, 20);
      },
    });
    send({ type: "ready", mode: "rw", writer: true, offset: 0, resume: "" });
    stream.onData((bytes) => output.push(bytes));
    let closed = false;
    stream.onEnd(({ error }) => {
      output.flush();
      this.open.delete(vmId);
      if (closed) return;
      closed = true;
      void this.isRunning(vmId)
        .catch(() => false)
        .then((running) => {
          const why = consoleEndOf(error, running);
          end(why.reason === "closed" ? "vm_stopped" : why.reason, why.message);
        });
    });
    ws.on("message", (data, binary) => {
      // Input only; acks and take mean nothing here (one local console, always the writer).
      if (binary && Buffer.isBuffer(data) && data.byteLength <= CONSOLE_MAX_INPUT_BYTES) stream.write(data);
    });
    ws.on("close", () => {
      output.stop();
      this.open.delete(vmId);
      if (closed) return;
      closed = true;
      stream.close();
    });
  }

  private display(
    ws: WebSocket,
    vmId: string,
    readOnly: boolean,
    end: (reason: Extract<ConsoleServerMessage, { type: "closed" }>["reason"], message?: string) => void,
  ): void {
    const count = this.displays.get(vmId) ?? 0;
    if (count >= LOCAL_VNC_VIEWERS_PER_VM)
      return end("too_many_viewers", `at most ${LOCAL_VNC_VIEWERS_PER_VM} graphical pages per VM on the host view`);
    this.displays.set(vmId, count + 1);
    ws.once("close", () => {
      const left = (this.displays.get(vmId) ?? 1) - 1;
      if (left > 0) this.displays.set(vmId, left);
      else this.displays.delete(vmId);
    });
    const deps = { liveXml: this.liveXml!, isRunning: this.isRunning, log: this.log };
    void relayLocalDisplay(ws, vmId, readOnly, deps, end);
  }

  close(): void {
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
  }
}

function clientMessageOf(text: string) {
  try {
    return ConsoleClientMessage(JSON.parse(text))?.value ?? null;
  } catch {
    return null;
  }
}
