// Serial consoles: browser sockets ("console sockets") of a VM share one agent console stream per VM.
// The room owns its tickets, sessions and resume tokens, the writer role, the scrollback (the object's
// SQLite), the credit it gives the agent and the cut-off of browsers that fall behind. What is typed
// passes through and is counted, never kept or logged.
import { and, eq, isNull } from "drizzle-orm";
import {
  CONSOLE_KEEP_BYTES,
  CONSOLE_MAX_INPUT_BYTES,
  CONSOLE_MAX_INPUT_PER_SECOND,
  CONSOLE_MAX_PER_NODE,
  CONSOLE_MAX_VIEWERS,
  CONSOLE_REPLAY_BYTES,
  CONSOLE_RESUME_MS,
  CONSOLE_TOO_SLOW_BYTES,
  CONSOLE_WINDOW_BYTES,
  ConsoleClientMessage,
  decodeLinkFrame,
  encodeLinkInput,
  encodeOutput,
  lineStart,
  type ConsoleCloseReason,
  type ConsoleMode,
  type ConsoleServerMessage,
} from "../../protocol/console.ts";
import { roleRank, type Role } from "../../protocol/api.ts";
import { parseFrame, type AgentMessage } from "../../protocol/wire.ts";
import { hashSecret } from "../auth.ts";
import { accessRole, type AccessSettings } from "../access/settings.ts";
import type { SessionSettings } from "../config.ts";
import type { Database } from "../db/client.ts";
import { apiTokens, vmEvents } from "../db/schema.ts";
import { CONSOLE_HEADERS } from "./headers.ts";
import type { AgentLink, AgentLinks } from "./links.ts";
import type { ConsolePrincipal, ConsoleSession, ConsoleStream, ConsoleTicket, SessionStore } from "./store.ts";

type ClosedPayload = Extract<AgentMessage, { type: "console.closed" }>["payload"];

/** A console socket: waiting for its hello, then live in a session. Small (≤ 2 KiB) by design. */
export type ConsoleAttachment = {
  kind: "console";
  vmId: string;
  name: string;
  acceptedAt: number;
  stage: "hello" | "live";
  sessionId?: string;
  mode?: ConsoleMode;
  principalId?: string;
  /** the offset of the first byte this socket was sent, and the highest its browser acked */
  from?: number;
  acked?: number;
  bytesIn?: number;
  lastInputAt?: number;
  /** set when the control plane ended it (its closed message is sent) */
  ended?: ConsoleCloseReason;
  /** its session resumed on another socket before this one's close arrived */
  superseded?: true;
};

const CONSOLE_TAG = "console";
const vmTag = (vmId: string) => `console:${vmId}`;
/** A socket that sends no hello this long after its upgrade is closed. */
const HELLO_WITHIN_MS = 10_000;
/** Reasons after which the session may still come back with its resume token. */
const RESUMABLE: ReadonlySet<ConsoleCloseReason> = new Set(["too_slow", "host_offline"]);

export type ConsoleSettings = { idleMs: number; sessionMaxMs: number; lingerMs: number; queryMs: number };

export class ConsoleRelay {
  private readonly ctx: DurableObjectState;
  private readonly store: SessionStore;
  private readonly links: AgentLinks;
  private readonly db: Database;
  private access: AccessSettings | null;
  private readonly limits: ConsoleSettings;
  private readonly armAlarm: () => Promise<void>;
  /** input frames each session may still send this second (memory only: a wake refills it) */
  private readonly inputBudget = new Map<string, { tokens: number; at: number; told: Record<string, number> }>();
  private tableReady = false;

  constructor(
    ctx: DurableObjectState,
    store: SessionStore,
    links: AgentLinks,
    db: Database,
    limits: SessionSettings,
    armAlarm: () => Promise<void>,
    access: AccessSettings | null,
  ) {
    this.access = access;
    this.ctx = ctx;
    this.store = store;
    this.links = links;
    this.db = db;
    this.limits = {
      idleMs: limits.consoleIdleMs,
      sessionMaxMs: limits.consoleSessionMaxMs,
      lingerMs: limits.consoleLingerMs,
      queryMs: limits.queryMs,
    };
    this.armAlarm = armAlarm;
  }

  consoleOf(ws: WebSocket): ConsoleAttachment | null {
    // Attachments are written only by this object, so their shape is known.
    const att = ws.deserializeAttachment() as ConsoleAttachment | { kind?: "agent" | "viewer" } | null;
    return att?.kind === "console" ? att : null;
  }

  // ---- tickets (RPC from the Worker) --------------------------------------------------------------

  /** Keeps a ticket's hash until it is used or expires; refuses at once what its hello would be
   *  refused with anyway (too many consoles, no console on this link). */
  issueTicket(hash: string, ticket: ConsoleTicket): { ok: true } | { ok: false; reason: ConsoleCloseReason } {
    const stream = this.store.entry("console", ticket.vmId);
    const open = stream && stream.phase !== "ended";
    if (!open && this.openStreams().length >= CONSOLE_MAX_PER_NODE) return { ok: false, reason: "too_many_consoles" };
    if (open && this.liveSockets(ticket.vmId).length >= CONSOLE_MAX_VIEWERS)
      return { ok: false, reason: "too_many_viewers" };
    const link = this.links.current();
    if (link?.att.transport === "poll") return { ok: false, reason: "needs_websocket" };
    this.store.putEntry("consoleTicket", hash, ticket);
    void this.armAlarm();
    return { ok: true };
  }

  // ---- sockets ------------------------------------------------------------------------------------

  /** A browser's console upgrade, its VM already checked by the Worker: it waits for its hello. */
  async accept(request: Request): Promise<Response> {
    const vmId = request.headers.get(CONSOLE_HEADERS.vmId) ?? "";
    const name = decodeURIComponent(request.headers.get(CONSOLE_HEADERS.vmName) ?? "");
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [CONSOLE_TAG, vmTag(vmId)]);
    const att: ConsoleAttachment = { kind: "console", vmId, name, acceptedAt: Date.now(), stage: "hello" };
    server.serializeAttachment(att);
    await this.armAlarm();
    return new Response(null, { status: 101, webSocket: client });
  }

  async onMessage(ws: WebSocket, att: ConsoleAttachment, message: string | ArrayBuffer): Promise<void> {
    if (att.ended) return;
    if (typeof message !== "string") {
      if (att.stage === "live") this.input(ws, att, new Uint8Array(message));
      else this.end(ws, att, "bad_hello", "the first message must be a hello");
      return;
    }
    const msg = parseFrame(ConsoleClientMessage, message);
    if (att.stage === "hello") {
      if (msg?.type !== "hello") return this.end(ws, att, "bad_hello", "the first message must be a hello");
      return this.hello(ws, att, msg);
    }
    if (!msg) return; // unknown control messages are ignored: a newer browser may send more
    if (msg.type === "ack") {
      if (msg.offset > (att.acked ?? 0)) this.update(ws, { ...att, acked: Math.min(msg.offset, this.head(att.vmId)) });
    } else if (msg.type === "take") {
      await this.take(ws, att);
    }
  }

  private async hello(
    ws: WebSocket,
    att: ConsoleAttachment,
    hello: Extract<ConsoleClientMessage, { type: "hello" }>,
  ): Promise<void> {
    const now = Date.now();
    let session: ConsoleSession;
    let from: number;
    let resumed = false;
    if (hello.ticket) {
      const hash = await hashSecret(hello.ticket);
      const ticket = this.store.entry("consoleTicket", hash);
      if (ticket) this.store.deleteEntry("consoleTicket", hash); // single use, whatever follows
      if (!ticket || ticket.expiresAt <= now || ticket.vmId !== att.vmId)
        return this.end(ws, att, "bad_hello", "the ticket is unknown, used, expired or for another VM");
      session = {
        sessionId: crypto.randomUUID(),
        vmId: att.vmId,
        mode: ticket.mode,
        principal: ticket.principal,
        openedAt: now,
        bytesIn: 0,
        bytesOut: 0,
        resumeHash: "",
        resumeUntil: null,
        pendingReason: null,
        force: ticket.force,
      };
      from = -1;
    } else if (hello.resume && hello.from !== undefined) {
      const hash = await hashSecret(hello.resume);
      let found = this.store.all("consoleSession").find((s) => s.resumeHash === hash);
      if (!found || found.vmId !== att.vmId || (found.resumeUntil !== null && found.resumeUntil <= now))
        return this.end(ws, att, "bad_hello", "the resume token is unknown, used, expired or for another VM");
      // A dropped socket's close may come after its browser is back: the new socket takes over.
      const old = found.resumeUntil === null ? this.socketOfSession(found.sessionId) : null;
      const oldAtt = old ? this.consoleOf(old) : null;
      if (old && oldAtt) {
        this.update(old, { ...oldAtt, ended: "error", superseded: true });
        try {
          old.close(1000, "resumed on another socket");
        } catch {
          // gone already
        }
        found = {
          ...found,
          bytesIn: found.bytesIn + (oldAtt.bytesIn ?? 0),
          bytesOut: found.bytesOut + Math.max(0, this.head(att.vmId) - (oldAtt.from ?? 0)),
        };
      }
      if (!(await this.stillAllowed(found.principal))) {
        this.deleteSession(found);
        this.event(
          att.vmId,
          found.principal.actor,
          "console.denied",
          "resume refused: the token or role was withdrawn",
        );
        return this.end(ws, att, "revoked", "the token or role this console was opened with was withdrawn");
      }
      session = { ...found, resumeUntil: null, pendingReason: null, force: false };
      from = Math.min(hello.from, this.head(att.vmId));
      resumed = true;
    } else {
      return this.end(ws, att, "bad_hello", "a hello carries a ticket, or a resume token and an offset");
    }
    if (this.liveSockets(att.vmId).length >= CONSOLE_MAX_VIEWERS) {
      this.deleteSession(session);
      return this.end(ws, att, "too_many_viewers", `at most ${CONSOLE_MAX_VIEWERS} consoles per VM`);
    }
    let stream = this.store.entry("console", att.vmId);
    const streamOpen = stream !== undefined && stream.phase !== "ended";
    if (!streamOpen && this.openStreams().length >= CONSOLE_MAX_PER_NODE) {
      this.deleteSession(session);
      return this.end(ws, att, "too_many_consoles", `at most ${CONSOLE_MAX_PER_NODE} open consoles per node`);
    }

    // The session is live from here: a fresh resume token, then ready and what it has not seen.
    const resume = crypto.randomUUID() + crypto.randomUUID();
    session = { ...session, resumeHash: await hashSecret(resume) };
    const head = this.head(att.vmId);
    if (from < 0) from = this.replayStart(att.vmId, head);
    const link = this.links.current();
    const canStream = link !== null && link.att.transport !== "poll" && this.agentHasConsole();
    stream = this.store.entry("console", att.vmId);
    let writer = false;
    if (session.mode === "rw" && canStream) {
      const holder = stream?.writer ? this.socketOfSession(stream.writer) : null;
      writer = !holder || stream?.writer === session.sessionId;
    }
    this.store.putEntry("consoleSession", session.sessionId, session);
    const live: ConsoleAttachment = {
      ...att,
      stage: "live",
      sessionId: session.sessionId,
      mode: session.mode,
      principalId: session.principal.id,
      from,
      acked: from,
      bytesIn: 0,
      lastInputAt: now,
    };
    this.update(ws, live);
    this.sendText(ws, { type: "ready", mode: session.mode, writer, offset: from, resume });
    this.replay(ws, att.vmId, from);
    if (!resumed)
      this.event(
        att.vmId,
        session.principal.actor,
        "console.opened",
        `${session.mode === "rw" ? "read-write" : "read-only"} console opened by ${session.principal.name}${session.force ? " (forced: any other holder was disconnected)" : ""}`,
        undefined,
        "serial",
      );

    if (!link) return this.end(ws, live, "host_offline", "the node is offline; this is the output kept until then");
    if (link.att.transport === "poll")
      return this.end(
        ws,
        live,
        "needs_websocket",
        "the node's agent is on its long-poll link, which carries no console",
      );
    if (!this.agentHasConsole())
      return this.end(ws, live, "unsupported", "the node's agent is too old for consoles; update it");
    if (!stream || stream.phase === "ended" || stream.connId !== link.att.connId) {
      stream = this.startStream(link, att.vmId, att.name, session.force, stream);
    } else if (stream.lingerUntil !== null) {
      stream = { ...stream, lingerUntil: null };
    }
    if (writer) stream = { ...stream, writer: session.sessionId };
    this.store.putEntry("console", att.vmId, stream);
    await this.armAlarm();
  }

  /** Raw input from a browser: to the agent if this session holds the writer role, within limits. */
  private input(ws: WebSocket, att: ConsoleAttachment, bytes: Uint8Array): void {
    const sessionId = att.sessionId!;
    const now = Date.now();
    const budget = this.inputBudget.get(sessionId) ?? { tokens: CONSOLE_MAX_INPUT_PER_SECOND, at: now, told: {} };
    budget.tokens = Math.min(
      CONSOLE_MAX_INPUT_PER_SECOND,
      budget.tokens + ((now - budget.at) * CONSOLE_MAX_INPUT_PER_SECOND) / 1000,
    );
    budget.at = now;
    this.inputBudget.set(sessionId, budget);
    const notice = (code: "input_too_large" | "input_too_fast" | "not_writer", message: string) => {
      if (now - (budget.told[code] ?? 0) < 1000) return; // each said at most once a second
      budget.told[code] = now;
      this.sendText(ws, { type: "notice", code, message });
    };
    if (bytes.byteLength > CONSOLE_MAX_INPUT_BYTES)
      return notice("input_too_large", `input over ${CONSOLE_MAX_INPUT_BYTES} bytes per frame was dropped`);
    if (budget.tokens < 1)
      return notice("input_too_fast", `input over ${CONSOLE_MAX_INPUT_PER_SECOND} frames a second was dropped`);
    budget.tokens -= 1;
    const stream = this.store.entry("console", att.vmId);
    if (!stream || stream.writer !== sessionId)
      return notice("not_writer", "you are watching: input is dropped until you take control");
    if (stream.phase !== "open" || !this.links.isCurrent(stream.connId)) return;
    try {
      this.links.current()?.sendBytes(encodeLinkInput(stream.channel, bytes));
    } catch {
      return; // the link is closing: its consoles end with it
    }
    this.update(ws, { ...att, bytesIn: (att.bytesIn ?? 0) + bytes.byteLength, lastInputAt: now });
  }

  /** Moves the writer role to this session (read-write sessions only); the old writer watches on. */
  private async take(ws: WebSocket, att: ConsoleAttachment): Promise<void> {
    const stream = this.store.entry("console", att.vmId);
    const session = this.store.entry("consoleSession", att.sessionId!);
    if (!stream || !session || stream.writer === att.sessionId) return;
    if (att.mode !== "rw")
      return this.sendText(ws, {
        type: "notice",
        code: "not_writer",
        message: "a read-only console cannot take control",
      });
    const previous = stream.writer ? this.socketOfSession(stream.writer) : null;
    const previousSession = stream.writer ? this.store.entry("consoleSession", stream.writer) : undefined;
    this.store.putEntry("console", att.vmId, { ...stream, writer: att.sessionId! });
    if (previous) this.sendText(previous, { type: "writer", writer: false });
    this.sendText(ws, { type: "writer", writer: true });
    this.update(ws, { ...att, lastInputAt: Date.now() });
    this.event(
      att.vmId,
      session.principal.actor,
      "console.writer_changed",
      `${session.principal.name} took the writer role${previousSession ? ` from ${previousSession.principal.name}` : ""}`,
    );
  }

  /** A console socket closed (by its browser, or answering our close). */
  async socketGone(ws: WebSocket, att: ConsoleAttachment): Promise<void> {
    try {
      ws.close(1000, "bye");
    } catch {
      // the runtime already answered the close
    }
    if (att.stage !== "live" || !att.sessionId || att.superseded) return;
    this.leave(att, att.ended ?? null);
    await this.armAlarm();
  }

  /** A session's socket is gone: the session waits for a resume (dropped, too slow) or ends. */
  private leave(att: ConsoleAttachment, reason: ConsoleCloseReason | null): void {
    const now = Date.now();
    this.inputBudget.delete(att.sessionId!);
    const session = this.store.entry("consoleSession", att.sessionId!);
    const stream = this.store.entry("console", att.vmId);
    if (stream) {
      const others = this.liveSockets(att.vmId).filter((ws) => this.consoleOf(ws)?.sessionId !== att.sessionId);
      this.store.putEntry("console", att.vmId, {
        ...stream,
        writer: stream.writer === att.sessionId ? null : stream.writer,
        lingerUntil:
          others.length === 0 && stream.phase !== "ended" ? (stream.lingerUntil ?? now + this.limits.lingerMs) : null,
      });
    }
    if (!session || session.resumeUntil !== null) return; // ended already
    const counted: ConsoleSession = {
      ...session,
      bytesIn: session.bytesIn + (att.bytesIn ?? 0),
      bytesOut: session.bytesOut + Math.max(0, (stream?.head ?? 0) - (att.from ?? 0)),
    };
    if (reason === null || RESUMABLE.has(reason)) {
      // Kept for a resume; if none comes, the session ends when the token expires.
      this.store.putEntry("consoleSession", counted.sessionId, {
        ...counted,
        resumeUntil: now + CONSOLE_RESUME_MS,
        pendingReason: reason ?? "disconnected",
      });
    } else {
      this.finish(counted, reason);
    }
  }

  /** A session is over for good: its record goes, its event is written. */
  private finish(session: ConsoleSession, reason: string): void {
    this.deleteSession(session);
    const seconds = Math.round((Date.now() - session.openedAt) / 100) / 10;
    this.event(
      session.vmId,
      session.principal.actor,
      "console.closed",
      `${session.principal.name}'s ${session.mode} console closed after ${seconds} s: ${session.bytesIn} bytes typed, ${session.bytesOut} bytes shown`,
      reason,
    );
  }

  private deleteSession(session: ConsoleSession): void {
    this.store.deleteEntry("consoleSession", session.sessionId);
  }

  /** Tells a socket why its console ends, then closes it. */
  private end(ws: WebSocket, att: ConsoleAttachment, reason: ConsoleCloseReason, message?: string): void {
    this.update(ws, { ...att, ended: reason });
    this.sendText(ws, { type: "closed", reason, ...(message ? { message } : {}) });
    try {
      ws.close(1000, reason);
    } catch {
      // closing already
    }
    if (att.stage === "live") this.leave(att, reason);
  }

  private endVm(vmId: string, reason: ConsoleCloseReason, message?: string): void {
    for (const ws of this.liveSockets(vmId)) {
      const att = this.consoleOf(ws);
      if (att) this.end(ws, att, reason, message);
    }
  }

  // ---- the agent's stream ------------------------------------------------------------------------

  private startStream(
    link: AgentLink,
    vmId: string,
    name: string,
    force: boolean,
    previous: ConsoleStream | undefined,
  ): ConsoleStream {
    const channel = (this.store.get("consoleChannel") ?? 0) + 1;
    this.store.put("consoleChannel", channel >= 0xffffffff ? 1 : channel);
    const stream: ConsoleStream = {
      vmId,
      name,
      consoleId: crypto.randomUUID(),
      channel,
      connId: link.att.connId,
      phase: "opening",
      head: previous?.head ?? 0,
      agentNext: 0,
      openDeadline: Date.now() + this.limits.queryMs,
      lingerUntil: null,
      writer: null,
      lastOutputAt: Date.now(),
    };
    try {
      link.send({
        type: "console.open",
        id: stream.consoleId,
        payload: { vmId, name, channel, force, windowBytes: CONSOLE_WINDOW_BYTES },
      });
    } catch {
      // the agent socket is closing: its close ends these consoles with host_offline
    }
    return stream;
  }

  private streamById(consoleId: string): ConsoleStream | undefined {
    return this.store.all("console").find((s) => s.consoleId === consoleId);
  }

  /** The agent's `console.opened`; false if `id` is no console. */
  onOpened(id: string): boolean {
    const stream = this.streamById(id);
    if (!stream || stream.phase === "ended") return false; // closed meanwhile: the agent is told to close it
    if (stream.phase === "opening") this.store.putEntry("console", stream.vmId, { ...stream, phase: "open" });
    return true;
  }

  /** The agent's `console.closed`: every console of the VM ends with the agent's reason. */
  onClosed(id: string, payload: ClosedPayload): boolean {
    const stream = this.streamById(id);
    if (!stream) return false;
    this.store.putEntry("console", stream.vmId, { ...stream, phase: "ended", writer: null, lingerUntil: null });
    const reason: ConsoleCloseReason = payload.reason === "closed" ? "vm_stopped" : payload.reason;
    const message =
      payload.reason === "console_busy"
        ? `another client holds this console on the host (a virsh console?); open with force to take it over${payload.message ? ` (${payload.message})` : ""}`
        : payload.message;
    this.endVm(stream.vmId, reason, message);
    return true;
  }

  /** A binary frame from the agent: console output, fanned out, kept and acknowledged. */
  onAgentBytes(link: AgentLink, data: ArrayBuffer): "ok" | "malformed" {
    const frame = decodeLinkFrame(new Uint8Array(data));
    if (!frame || frame.kind !== "output") return "malformed";
    const stream = this.store.all("console").find((s) => s.channel === frame.channel && s.connId === link.att.connId);
    if (!stream || stream.phase === "ended") return "ok"; // crossed its close
    const { bytes } = frame;
    if (bytes.byteLength === 0) return "ok";
    // Only what follows what we have is taken (a repeat after a resend is skipped).
    const skip = Math.max(0, stream.agentNext - frame.offset);
    const fresh = bytes.subarray(Math.min(skip, bytes.byteLength));
    const agentNext = Math.max(stream.agentNext, frame.offset + bytes.byteLength);
    const offset = stream.head;
    const head = offset + fresh.byteLength;
    // Sent before anything is written: a message sent after a write waits until the write is on
    // disk (the object's output gate), and a keystroke's echo must not wait for the disk. Should
    // that write then fail, the object resets and its browsers resume from what it kept.
    const behind: [WebSocket, ConsoleAttachment][] = [];
    if (fresh.byteLength > 0) {
      const out = encodeOutput(offset, fresh);
      for (const ws of this.liveSockets(stream.vmId)) {
        const att = this.consoleOf(ws);
        if (!att) continue;
        if (head - (att.acked ?? 0) > CONSOLE_TOO_SLOW_BYTES) {
          behind.push([ws, att]);
          continue;
        }
        try {
          ws.send(out);
        } catch {
          // closing: its close event cleans up
        }
      }
      this.keep(stream.vmId, offset, fresh, head);
    }
    this.store.putEntry("console", stream.vmId, {
      ...stream,
      phase: "open",
      head,
      agentNext,
      lastOutputAt: Date.now(),
    });
    // The agent's credit comes back once what it sent is kept.
    try {
      link.send({ type: "console.ack", id: stream.consoleId, payload: { offset: agentNext } });
    } catch {
      // closing
    }
    for (const [ws, att] of behind)
      this.end(ws, att, "too_slow", "this console fell too far behind; resume to catch up");
    return "ok";
  }

  /** The agent link is gone: every console ends with host_offline (its output stays readable). */
  nodeOffline(): void {
    for (const stream of this.store.all("console")) {
      if (stream.phase !== "ended")
        this.store.putEntry("console", stream.vmId, { ...stream, phase: "ended", writer: null, lingerUntil: null });
      this.endVm(stream.vmId, "host_offline", "the node's agent went offline");
    }
  }

  private agentHasConsole(): boolean {
    return this.store.get("agentFeatures")?.includes("console") ?? false;
  }

  // ---- scrollback (the object's SQLite) ------------------------------------------------------------

  private sql(): SqlStorage {
    if (!this.tableReady) {
      this.ctx.storage.sql.exec(
        "CREATE TABLE IF NOT EXISTS console_output (vm_id TEXT NOT NULL, offset INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (vm_id, offset))",
      );
      this.tableReady = true;
    }
    return this.ctx.storage.sql;
  }

  /** Everything stored is gone (a deleted node): the table is made again on next use. */
  forgetStorage(): void {
    this.tableReady = false;
  }

  private keep(vmId: string, offset: number, bytes: Uint8Array, head: number): void {
    const sql = this.sql();
    sql.exec("INSERT OR REPLACE INTO console_output (vm_id, offset, data) VALUES (?, ?, ?)", vmId, offset, bytes);
    // `offset < ?` lets the primary key find the few old rows instead of reading every kept one.
    const before = head - CONSOLE_KEEP_BYTES;
    sql.exec(
      "DELETE FROM console_output WHERE vm_id = ? AND offset < ? AND offset + length(data) <= ?",
      vmId,
      before,
      before,
    );
  }

  /** The next offset of a VM's console (what the control plane has of it, stream open or not). */
  private head(vmId: string): number {
    const stream = this.store.entry("console", vmId);
    if (stream) return stream.head;
    const row = this.sql()
      .exec<{ head: number }>("SELECT max(offset + length(data)) AS head FROM console_output WHERE vm_id = ?", vmId)
      .one();
    return row.head ?? 0;
  }

  /** Kept output of a VM from `from` to its head, as it was stored. */
  private chunks(vmId: string, from: number): { offset: number; bytes: Uint8Array }[] {
    const rows = this.sql()
      .exec<{ offset: number; data: ArrayBuffer }>(
        "SELECT offset, data FROM console_output WHERE vm_id = ? AND offset + length(data) > ? ORDER BY offset",
        vmId,
        from,
      )
      .toArray();
    return rows.map((r) => {
      const bytes = new Uint8Array(r.data);
      const cut = Math.max(0, from - r.offset);
      return { offset: r.offset + cut, bytes: bytes.subarray(cut) };
    });
  }

  /** Where a newcomer starts: the last CONSOLE_REPLAY_BYTES or so, from a line start. */
  private replayStart(vmId: string, head: number): number {
    const start = Math.max(0, head - CONSOLE_REPLAY_BYTES);
    const first = this.chunks(vmId, start)[0];
    if (!first) return head;
    return lineStart(first.bytes, first.offset);
  }

  private replay(ws: WebSocket, vmId: string, from: number): void {
    for (const chunk of this.chunks(vmId, from)) {
      try {
        ws.send(encodeOutput(chunk.offset, chunk.bytes));
      } catch {
        return;
      }
    }
  }

  /** A VM's kept output (for tests and a future "last console output" view). */
  scrollback(vmId: string): { head: number; text: Uint8Array } {
    const chunks = this.chunks(vmId, 0);
    const total = chunks.reduce((n, c) => n + c.bytes.byteLength, 0);
    const text = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      text.set(c.bytes, at);
      at += c.bytes.byteLength;
    }
    return { head: this.head(vmId), text };
  }

  /** Sizes of what this room holds (the soak bench's debug counts). In memory: one input budget per
   *  live session (at most CONSOLE_MAX_VIEWERS per VM). In the object's storage: one stream record per
   *  VM that had a console, tickets until used or 30 s old, sessions until they end or their resume
   *  expires, and at most CONSOLE_KEEP_BYTES (plus one frame) of output per VM. */
  debugCounts(): Record<string, number> {
    const output = this.sql()
      .exec<{ rows: number; bytes: number | null }>(
        "SELECT count(*) AS rows, sum(length(data)) AS bytes FROM console_output",
      )
      .one();
    return {
      consoleInputBudgets: this.inputBudget.size,
      storedConsoles: this.store.all("console").length,
      storedConsoleTickets: this.store.entries("consoleTicket").length,
      storedConsoleSessions: this.store.all("consoleSession").length,
      consoleOutputRows: output.rows,
      consoleOutputBytes: output.bytes ?? 0,
    };
  }

  // ---- revocation, deadlines ------------------------------------------------------------------------

  /** The principal's token was revoked or its role lowered: its consoles end with `revoked`. */
  async closeConsolesOf(principalId: string): Promise<number> {
    let closed = 0;
    for (const ws of this.ctx.getWebSockets(CONSOLE_TAG)) {
      const att = this.consoleOf(ws);
      if (!att || att.stage !== "live" || att.principalId !== principalId || att.ended) continue;
      this.end(ws, att, "revoked", "the token or role this console was opened with was withdrawn");
      closed++;
    }
    for (const s of this.store.all("consoleSession")) if (s.principal.id === principalId) this.finish(s, "revoked");
    for (const [hash, t] of this.store.entries("consoleTicket"))
      if (t.principal.id === principalId) this.store.deleteEntry("consoleTicket", hash);
    await this.armAlarm();
    return closed;
  }

  /** Whether the principal may still hold a console (checked again on every resume). */
  private async stillAllowed(principal: ConsolePrincipal): Promise<boolean> {
    if (principal.via === "access") {
      // Roles of Access identities come from settings, which may have changed (and dropped every
      // socket) since the console opened: looked up again, and refused if sign-in is off now.
      if (!this.access) return false;
      return roleRank[accessRole(this.access, principal.roleNames ?? [principal.name])] >= roleRank.operator;
    }
    if (principal.id === "admin") return roleRank[principal.role] >= roleRank.operator;
    const row = await this.db
      .select({ role: apiTokens.role })
      .from(apiTokens)
      .where(and(eq(apiTokens.id, principal.id), isNull(apiTokens.revokedAt)))
      .get();
    return row !== undefined && roleRank[row.role as Role] >= roleRank.operator;
  }

  earliestDeadline(): number {
    let due = Infinity;
    for (const [, t] of this.store.entries("consoleTicket")) due = Math.min(due, t.expiresAt);
    for (const s of this.store.all("consoleSession")) if (s.resumeUntil !== null) due = Math.min(due, s.resumeUntil);
    for (const s of this.store.all("console")) {
      if (s.phase === "opening") due = Math.min(due, s.openDeadline);
      if (s.lingerUntil !== null) due = Math.min(due, s.lingerUntil);
    }
    for (const ws of this.ctx.getWebSockets(CONSOLE_TAG)) {
      const att = this.consoleOf(ws);
      if (!att || att.ended) continue;
      if (att.stage === "hello") due = Math.min(due, att.acceptedAt + HELLO_WITHIN_MS);
      else due = Math.min(due, this.idleDeadline(att), this.sessionDeadline(att));
    }
    return due;
  }

  private idleDeadline(att: ConsoleAttachment): number {
    const lastOutput = this.store.entry("console", att.vmId)?.lastOutputAt ?? 0;
    return Math.max(att.lastInputAt ?? att.acceptedAt, lastOutput) + this.limits.idleMs;
  }

  private sessionDeadline(att: ConsoleAttachment): number {
    const session = att.sessionId ? this.store.entry("consoleSession", att.sessionId) : undefined;
    return (session?.openedAt ?? att.acceptedAt) + this.limits.sessionMaxMs;
  }

  expireDue(now: number): void {
    for (const [hash, t] of this.store.entries("consoleTicket"))
      if (t.expiresAt <= now) this.store.deleteEntry("consoleTicket", hash);
    for (const s of this.store.all("consoleSession"))
      if (s.resumeUntil !== null && s.resumeUntil <= now) this.finish(s, s.pendingReason ?? "disconnected");
    for (const ws of this.ctx.getWebSockets(CONSOLE_TAG)) {
      const att = this.consoleOf(ws);
      if (!att || att.ended) continue;
      if (att.stage === "hello" && att.acceptedAt + HELLO_WITHIN_MS <= now)
        this.end(ws, att, "bad_hello", "no hello in time");
      else if (att.stage === "live" && this.sessionDeadline(att) <= now)
        this.end(ws, att, "session_limit", "this console reached its longest session time; open it again");
      else if (att.stage === "live" && this.idleDeadline(att) <= now)
        this.end(ws, att, "idle_timeout", "this console was idle too long");
    }
    for (const s of this.store.all("console")) {
      if (s.phase === "opening" && s.openDeadline <= now) {
        this.closeStream(s);
        this.endVm(s.vmId, "error", "the agent did not open the console in time");
      } else if (s.lingerUntil !== null && s.lingerUntil <= now && this.liveSockets(s.vmId).length === 0) {
        this.closeStream(s);
      }
    }
  }

  /** Asks the agent to close a VM's stream; the output kept stays. */
  private closeStream(stream: ConsoleStream): void {
    this.store.putEntry("console", stream.vmId, { ...stream, phase: "ended", writer: null, lingerUntil: null });
    if (!this.links.isCurrent(stream.connId)) return;
    try {
      this.links.current()?.send({ type: "console.close", id: stream.consoleId, payload: {} });
    } catch {
      // closing: the stream ends with the link
    }
  }

  // ---- small helpers ----------------------------------------------------------------------------------

  private openStreams(): ConsoleStream[] {
    return this.store.all("console").filter((s) => s.phase !== "ended");
  }

  private liveSockets(vmId: string): WebSocket[] {
    return this.ctx.getWebSockets(vmTag(vmId)).filter((ws) => {
      const att = this.consoleOf(ws);
      return att?.stage === "live" && !att.ended && ws.readyState === WebSocket.OPEN;
    });
  }

  private socketOfSession(sessionId: string): WebSocket | null {
    for (const ws of this.ctx.getWebSockets(CONSOLE_TAG)) {
      const att = this.consoleOf(ws);
      if (att?.sessionId === sessionId && att.stage === "live" && !att.ended) return ws;
    }
    return null;
  }

  private update(ws: WebSocket, att: ConsoleAttachment): void {
    try {
      ws.serializeAttachment(att);
    } catch {
      // the socket is gone
    }
  }

  private sendText(ws: WebSocket, message: ConsoleServerMessage): void {
    try {
      ws.send(JSON.stringify(message));
    } catch {
      // closing: its close event cleans up
    }
  }

  /** A console event in the VM's history, naming the person; never any console text. */
  private event(
    vmId: string,
    actor: string,
    action: string,
    message: string,
    reason?: string,
    consoleType?: "serial",
  ): void {
    const write = this.db
      .insert(vmEvents)
      .values({
        vmId,
        at: Date.now(),
        actor,
        action,
        message,
        reason: reason ?? null,
        consoleType: consoleType ?? null,
        source: "control_plane",
      })
      .run()
      .catch((err: unknown) => console.error("console event not written", err));
    this.ctx.waitUntil(write);
  }
}
