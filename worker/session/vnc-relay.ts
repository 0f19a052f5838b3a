// Graphical consoles (VNC): each browser socket gets its own RFB connection from the agent to the
// VM's VNC server. RFB bytes pass both ways unchanged; the browser's acks (bytes received) are the
// agent's credit, so the object never holds a framebuffer. No scrollback, no resume: a dropped socket
// comes back as a new RFB session. Tickets, limits, events and endings are the serial console's.
import {
  CONSOLE_MAX_PER_NODE,
  CONSOLE_MAX_VIEWERS,
  CONSOLE_WINDOW_BYTES,
  ConsoleClientMessage,
  VNC_MAX_INPUT_BYTES,
  decodeLinkFrame,
  encodeLinkInput,
  type ConsoleCloseReason,
  type ConsoleMode,
  type VncServerMessage,
} from "../../protocol/console.ts";
import { parseFrame, type AgentMessage } from "../../protocol/wire.ts";
import { hashSecret } from "../auth.ts";
import type { SessionSettings } from "../config.ts";
import type { Database } from "../db/client.ts";
import { vmEvents } from "../db/schema.ts";
import type { ConsoleAttachment } from "./console-relay.ts";
import type { AgentLink, AgentLinks } from "./links.ts";
import type { ConsolePrincipal, ConsoleTicket, SessionStore } from "./store.ts";

type ClosedPayload = Extract<AgentMessage, { type: "console.closed" }>["payload"];

/** A graphical console's socket (accepted as a console socket, turned into this by its hello). */
export type VncAttachment = {
  kind: "vnc";
  vmId: string;
  name: string;
  consoleId: string;
  channel: number;
  connId: string;
  mode: ConsoleMode;
  principal: ConsolePrincipal;
  openedAt: number;
  phase: "opening" | "open";
  openDeadline: number;
  /** RFB bytes from the browser, and to it; `acked`: what the browser said it received */
  bytesIn: number;
  bytesOut: number;
  acked: number;
  lastActiveAt: number;
  ended?: ConsoleCloseReason;
};

/** The tag every console socket was accepted with (see console-relay.ts). */
const CONSOLE_TAG = "console";

export class VncRelay {
  private readonly ctx: DurableObjectState;
  private readonly store: SessionStore;
  private readonly links: AgentLinks;
  private readonly db: Database;
  private readonly limits: { idleMs: number; sessionMaxMs: number; queryMs: number };
  private readonly armAlarm: () => Promise<void>;

  constructor(
    ctx: DurableObjectState,
    store: SessionStore,
    links: AgentLinks,
    db: Database,
    limits: SessionSettings,
    armAlarm: () => Promise<void>,
  ) {
    this.ctx = ctx;
    this.store = store;
    this.links = links;
    this.db = db;
    this.limits = { idleMs: limits.consoleIdleMs, sessionMaxMs: limits.consoleSessionMaxMs, queryMs: limits.queryMs };
    this.armAlarm = armAlarm;
  }

  displayOf(ws: WebSocket): VncAttachment | null {
    const att = ws.deserializeAttachment() as VncAttachment | { kind?: string } | null;
    return att && att.kind === "vnc" ? (att as VncAttachment) : null;
  }

  /** Keeps a graphical console's ticket, refusing at once what its hello would be refused with. */
  issueTicket(hash: string, ticket: ConsoleTicket): { ok: true } | { ok: false; reason: ConsoleCloseReason } {
    const refusal = this.refusal(ticket.vmId);
    if (refusal) return { ok: false, reason: refusal };
    if (this.links.current()?.att.transport === "poll") return { ok: false, reason: "needs_websocket" };
    this.store.putEntry("consoleTicket", hash, ticket);
    void this.armAlarm();
    return { ok: true };
  }

  private refusal(vmId: string): ConsoleCloseReason | null {
    const all = this.sockets();
    if (all.length >= CONSOLE_MAX_PER_NODE) return "too_many_consoles";
    if (all.filter((s) => s.att.vmId === vmId).length >= CONSOLE_MAX_VIEWERS) return "too_many_viewers";
    return null;
  }

  /** A console socket's hello: true when it carried a graphical console's ticket (then handled here). */
  async claims(ws: WebSocket, att: ConsoleAttachment, message: string | ArrayBuffer): Promise<boolean> {
    if (att.stage !== "hello" || typeof message !== "string") return false;
    const hello = parseFrame(ConsoleClientMessage, message);
    if (hello?.type !== "hello" || !hello.ticket) return false;
    const hash = await hashSecret(hello.ticket);
    const ticket = this.store.entry("consoleTicket", hash);
    if (ticket?.type !== "vnc") return false; // a serial ticket, or none: the serial room answers
    this.store.deleteEntry("consoleTicket", hash); // single use, whatever follows
    const now = Date.now();
    if (ticket.expiresAt <= now || ticket.vmId !== att.vmId) {
      this.refuse(ws, "bad_hello", "the ticket is unknown, used, expired or for another VM");
      return true;
    }
    const refusal = this.refusal(att.vmId);
    if (refusal) {
      this.refuse(ws, refusal, `at most ${CONSOLE_MAX_VIEWERS} consoles per VM and ${CONSOLE_MAX_PER_NODE} per node`);
      return true;
    }
    const link = this.links.current();
    if (!link) {
      this.refuse(ws, "host_offline", "the node is offline");
      return true;
    }
    if (link.att.transport === "poll") {
      this.refuse(ws, "needs_websocket", "the node's agent is on its long-poll link, which carries no console");
      return true;
    }
    if (!(this.store.get("agentFeatures") ?? []).includes("vnc")) {
      this.refuse(ws, "unsupported", "the node's agent is too old for graphical consoles; update it");
      return true;
    }
    const channel = (this.store.get("consoleChannel") ?? 0) + 1;
    this.store.put("consoleChannel", channel >= 0xffffffff ? 1 : channel);
    const live: VncAttachment = {
      kind: "vnc",
      vmId: att.vmId,
      name: att.name,
      consoleId: crypto.randomUUID(),
      channel,
      connId: link.att.connId,
      mode: ticket.mode,
      principal: ticket.principal,
      openedAt: now,
      phase: "opening",
      openDeadline: now + this.limits.queryMs,
      bytesIn: 0,
      bytesOut: 0,
      acked: 0,
      lastActiveAt: now,
    };
    this.update(ws, live);
    this.sendText(ws, { type: "ready", display: "vnc", mode: live.mode, writer: live.mode === "rw", offset: 0 });
    this.event(
      live.vmId,
      live.principal.actor,
      "console.opened",
      `${live.mode === "rw" ? "read-write" : "read-only"} graphical console (VNC) opened by ${live.principal.name}`,
      { consoleType: "vnc" },
    );
    try {
      link.send({
        type: "console.open",
        id: live.consoleId,
        payload: {
          vmId: live.vmId,
          name: live.name,
          channel,
          force: false,
          windowBytes: CONSOLE_WINDOW_BYTES,
          display: { type: "vnc", mode: live.mode },
        },
      });
    } catch {
      // the agent socket is closing: its close ends this console with host_offline
    }
    await this.armAlarm();
    return true;
  }

  onMessage(ws: WebSocket, att: VncAttachment, message: string | ArrayBuffer): void {
    if (att.ended) return;
    if (typeof message !== "string") {
      const bytes = new Uint8Array(message);
      if (bytes.byteLength > VNC_MAX_INPUT_BYTES)
        return this.end(ws, att, "error", `an RFB frame over ${VNC_MAX_INPUT_BYTES} bytes cannot be relayed`);
      const link = this.links.current();
      if (!link || !this.links.isCurrent(att.connId)) return;
      try {
        link.sendBytes(encodeLinkInput(att.channel, bytes));
      } catch {
        return; // the link is closing: the console ends with it
      }
      this.update(ws, { ...att, bytesIn: att.bytesIn + bytes.byteLength, lastActiveAt: Date.now() });
      return;
    }
    const msg = parseFrame(ConsoleClientMessage, message);
    if (msg?.type !== "ack" || msg.offset <= att.acked) return; // no take: every viewer has its own display
    const acked = Math.min(msg.offset, att.bytesOut);
    this.update(ws, { ...att, acked });
    if (!this.links.isCurrent(att.connId)) return;
    try {
      this.links.current()?.send({ type: "console.ack", id: att.consoleId, payload: { offset: acked } });
    } catch {
      // closing
    }
  }

  /** RFB bytes from the agent for one browser; false if the channel is none of ours. */
  onAgentBytes(link: AgentLink, data: ArrayBuffer): boolean {
    const frame = decodeLinkFrame(new Uint8Array(data));
    if (frame?.kind !== "output") return false;
    const found = this.sockets().find((s) => s.att.channel === frame.channel && s.att.connId === link.att.connId);
    if (!found) return false;
    const { ws, att } = found;
    if (att.ended) return true;
    try {
      ws.send(frame.bytes);
    } catch {
      // closing: its close event cleans up
    }
    this.update(ws, {
      ...att,
      phase: "open",
      bytesOut: att.bytesOut + frame.bytes.byteLength,
      lastActiveAt: Date.now(),
    });
    return true;
  }

  /** The agent's `console.opened`; false if `id` is none of ours. */
  onOpened(id: string): boolean {
    const found = this.byConsole(id);
    if (!found) return false;
    if (found.att.phase === "opening") this.update(found.ws, { ...found.att, phase: "open" });
    return true;
  }

  /** The agent's `console.closed`: the browser is told why. */
  onClosed(id: string, payload: ClosedPayload): boolean {
    const found = this.byConsole(id);
    if (!found) return false;
    const reason: ConsoleCloseReason = payload.reason === "closed" ? "vm_stopped" : payload.reason;
    this.end(found.ws, found.att, reason, payload.message, false);
    return true;
  }

  /** A graphical console's socket closed (by its browser, or answering our close). */
  async socketGone(ws: WebSocket, att: VncAttachment): Promise<void> {
    try {
      ws.close(1000, "bye");
    } catch {
      // the runtime already answered the close
    }
    if (att.ended) return;
    this.closeAgentSide(att);
    this.closedEvent(att, "disconnected");
    await this.armAlarm();
  }

  nodeOffline(): void {
    for (const { ws, att } of this.sockets()) this.end(ws, att, "host_offline", "the node's agent went offline", false);
  }

  closeConsolesOf(principalId: string): number {
    let closed = 0;
    for (const { ws, att } of this.sockets()) {
      if (att.principal.id !== principalId) continue;
      this.end(ws, att, "revoked", "the token or role this console was opened with was withdrawn");
      closed++;
    }
    return closed;
  }

  earliestDeadline(): number {
    let due = Infinity;
    for (const { att } of this.sockets()) {
      if (att.phase === "opening") due = Math.min(due, att.openDeadline);
      due = Math.min(due, att.lastActiveAt + this.limits.idleMs, att.openedAt + this.limits.sessionMaxMs);
    }
    return due;
  }

  expireDue(now: number): void {
    for (const { ws, att } of this.sockets()) {
      if (att.phase === "opening" && att.openDeadline <= now)
        this.end(ws, att, "error", "the agent did not open the graphical console in time");
      else if (att.openedAt + this.limits.sessionMaxMs <= now)
        this.end(ws, att, "session_limit", "this console reached its longest session time; open it again");
      else if (att.lastActiveAt + this.limits.idleMs <= now)
        this.end(ws, att, "idle_timeout", "this console was idle too long");
    }
  }

  // ---- endings ----------------------------------------------------------------------------------

  /** Tells the browser why its console ends and closes it; the agent's side closes too unless it
   *  is what ended. */
  private end(
    ws: WebSocket,
    att: VncAttachment,
    reason: ConsoleCloseReason,
    message?: string,
    closeAgent = true,
  ): void {
    if (att.ended) return;
    this.update(ws, { ...att, ended: reason });
    this.sendText(ws, { type: "closed", reason, ...(message ? { message } : {}) });
    try {
      ws.close(1000, reason);
    } catch {
      // closing already
    }
    if (closeAgent) this.closeAgentSide(att);
    this.closedEvent(att, reason);
  }

  /** A socket ended before any session began (a refused hello). */
  private refuse(ws: WebSocket, reason: ConsoleCloseReason, message: string): void {
    this.sendText(ws, { type: "closed", reason, message });
    try {
      ws.close(1000, reason);
    } catch {
      // closing already
    }
  }

  private closeAgentSide(att: VncAttachment): void {
    if (!this.links.isCurrent(att.connId)) return;
    try {
      this.links.current()?.send({ type: "console.close", id: att.consoleId, payload: {} });
    } catch {
      // closing: the relay ends with the link
    }
  }

  private closedEvent(att: VncAttachment, reason: string): void {
    const seconds = Math.round((Date.now() - att.openedAt) / 100) / 10;
    this.event(
      att.vmId,
      att.principal.actor,
      "console.closed",
      `${att.principal.name}'s ${att.mode} graphical console (VNC) closed after ${seconds} s: ${att.bytesIn} bytes sent, ${att.bytesOut} bytes shown`,
      { reason },
    );
  }

  // ---- small helpers ----------------------------------------------------------------------------

  private sockets(): { ws: WebSocket; att: VncAttachment }[] {
    const out: { ws: WebSocket; att: VncAttachment }[] = [];
    for (const ws of this.ctx.getWebSockets(CONSOLE_TAG)) {
      const att = this.displayOf(ws);
      if (att && !att.ended) out.push({ ws, att });
    }
    return out;
  }

  private byConsole(consoleId: string): { ws: WebSocket; att: VncAttachment } | undefined {
    return this.sockets().find((s) => s.att.consoleId === consoleId);
  }

  private update(ws: WebSocket, att: VncAttachment): void {
    try {
      ws.serializeAttachment(att);
    } catch {
      // the socket is gone
    }
  }

  private sendText(ws: WebSocket, message: VncServerMessage): void {
    try {
      ws.send(JSON.stringify(message));
    } catch {
      // closing
    }
  }

  /** A console event in the VM's history, naming the person; never any console content. */
  private event(
    vmId: string,
    actor: string,
    action: string,
    message: string,
    more: { reason?: string; consoleType?: "vnc" },
  ): void {
    const write = this.db
      .insert(vmEvents)
      .values({
        vmId,
        at: Date.now(),
        actor,
        action,
        message,
        reason: more.reason ?? null,
        consoleType: more.consoleType ?? null,
        source: "control_plane",
      })
      .run()
      .catch((err: unknown) => console.error("console event not written", err));
    this.ctx.waitUntil(write);
  }
}
