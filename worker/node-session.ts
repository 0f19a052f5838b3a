// NodeSession: one Durable Object per node. Holds that node's agent link — a WebSocket (Hibernation
// API) or, for networks that block WebSockets, a long-poll link over plain HTTPS — delivers
// commands, routes answers by request id, enforces deadlines with alarms only (no timers but a held
// poll's, so it can hibernate), and keeps the node's connected/offline state and inventory in D1. It also
// relays live log follows to dashboard viewers (one agent follow per VM, shared by all its viewers)
// and runs the self-healing reconciler for VMs stuck in a transition.
import { DurableObject } from "cloudflare:workers";
import { asc, eq, sql } from "drizzle-orm";
import { FOLLOW_CLOSE_NODE_OFFLINE, FOLLOW_CLOSE_REVOKED, type FollowMessage } from "../protocol/api.ts";
import {
  AgentMessage,
  CLOSE,
  HEARTBEAT_MS,
  LogsResult,
  MAX_FRAME_BYTES,
  MAX_LOG_BYTES,
  PING_FRAME,
  PONG_FRAME,
  PowerResult,
  StateResult,
  TRANSITIONAL_STATES,
  mapLibvirtState,
  parseFrame,
  type CommandKind,
  type PollRequest,
  type ServerMessage,
} from "../protocol/wire.ts";
import { sessionSettings, type SessionSettings } from "./config.ts";
import { database, type Database } from "./db/client.ts";
import { nodes, vms } from "./db/schema.ts";
import { markRemoved, markUnreportedMissing, upsertReportedVms } from "./inventory.ts";
import { logsAnswer, snapshotRow, type SnapshotRow } from "./last-known-log.ts";
import { utf8Bytes } from "../protocol/log-excerpt.ts";
import { PollOutbox, type LinkEnded, type PollAnswer } from "./poll-link.ts";
import { queueQuery } from "./session-calls.ts";
import { settleReport } from "./vm-ownership.ts";
import {
  applyPowerOutcome,
  finishRequest,
  writeKeptRows,
  isPowerKind,
  markRequestAcked,
  markRequestSent,
  queryRequestRow,
  repairStuckVm,
  undoPowerAction,
  type RequestFinish,
} from "./vm-state.ts";

/** What the Worker asks the node to do; the `requests` row (queued) exists already. */
export type Dispatch = {
  id: string;
  kind: CommandKind;
  vmId: string;
  name: string;
  /** power actions: the generation the transition set, and the state to go back to if never done */
  vmGeneration?: number;
  prevState?: string;
  lines?: number;
  /** vm.state for a reset: also the log's last lines, for the reset's event */
  excerptLines?: number;
  /** vm.logs for the logs route: its answer becomes the VM's last-known log */
  keepAsLastKnown?: boolean;
  /** resolve only with the final outcome (else as soon as the command is on the wire) */
  wait: boolean;
  /** a query whose request row does not exist yet: the session writes it as it sends the command */
  newRequest?: { nodeId: string; params: Record<string, unknown>; requestedBy: string; createdAt: number };
};

export type Outcome =
  | { status: "sent" }
  | { status: "done"; result: unknown; text?: string; at?: number }
  | { status: "failed" | "expired"; error: { code: string; message: string } };

/** An in-flight request, in DO storage so a deadline survives eviction. */
type InFlight = {
  id: string;
  kind: CommandKind;
  vmId: string;
  vmGeneration: number | null;
  prevState: string | null;
  connId: string;
  phase: "sent" | "acked";
  deadline: number;
  /** a reconciler's vm.state query: the stuck transition it checks (applied only if still that one) */
  reconcile?: StuckVm;
  /** a route's query: its request row is written only once it ends (see QUERY_ROW) */
  newRequest?: NonNullable<Dispatch["newRequest"]> & { sentAt: number };
  keepAsLastKnown?: boolean;
};

type QueryRow = ReturnType<typeof queryRequestRow>;

type StuckVm = { vmId: string; generation: number; transitionRequestId: string; expectedState: string; stuckSince: number };

type Attachment = {
  kind?: "agent";
  nodeId: string;
  connId: string;
  connectedAt: number;
  lastMessageAt: number;
  clock: number;
  /** absent on sockets accepted before the long-poll transport existed */
  transport?: "socket" | "poll";
};
/** The agent's current link, socket or long-poll: all that dispatch, settle, the follow relay, the
 *  reconciler and liveness know of it. */
type Link = {
  att: Attachment;
  /** throws when the link is closing or ended */
  send(frame: ServerMessage): void;
  /** ends the link from our side; the caller then runs connectionGone if the node is now offline */
  close(code: number, reason: string): void;
  /** the agent's latest sign of life */
  lastSign(): number;
  /** records a sign of life (a frame, a poll) */
  touch(now: number): void;
};
type SendAnswer = { ok: true } | ({ ok: false } & LinkEnded);
/** A dashboard socket following one VM's log; tagged `vm:<id>` so its VM's viewers are found after a wake. */
type ViewerAttachment = { kind: "viewer"; vmId: string };
/** The one agent follow of a VM (frame id = follow id), shared by all of that VM's viewers. */
type Follow = { followId: string; vmId: string; name: string; connId: string; acked: boolean; ackDeadline: number };

const INFLIGHT = "inflight:";
/** Writes kept for D1, made together on the next alarm at most KEPT_DELAY_MS later: finished query
 *  rows (a round trip's D1 writes were an insert as it left and an update as it ended) and each
 *  VM's newest last-known log (a dashboard refreshing a 1,000-line log wrote it on every read). */
const QUERY_ROW = "queryrow:";
const SNAPSHOT = "snapshot:";
const KEPT_DELAY_MS = 1_000;
const KEPT_AT_ONCE = 100;
/** The long-poll link's attachment while it is the current connection, and the last one that ended. */
const POLL_LINK = "pollLink";
const POLL_ENDED = "pollEnded";
const FOLLOW = "follow:";
const AGENT_TAG = "agent";
const VIEWER_TAG = "viewer";
const vmTag = (vmId: string) => `vm:${vmId}`;
const tokenTag = (tokenId: string) => `token:${tokenId}`;
/** Viewers per node at once: bounds the fan-out a node's session does per appended chunk. */
const MAX_VIEWERS = 200;
/** Stuck VMs asked about per reconciler pass (the rest wait for the next pass). */
const RECONCILE_BATCH = 50;
/** The header through which the Worker tells the object which node an authenticated socket is. */
export const NODE_ID_HEADER = "x-quantix-node-id";
/** …and over how long its agent should spread its reconnects after losing the link (see Welcome). */
export const RECONNECT_SPREAD_HEADER = "x-quantix-reconnect-spread";
/** Headers of a viewer's follow upgrade, set by the Worker after authorizing it. */
export const FOLLOW_HEADERS = {
  vmId: "x-quantix-follow-vm",
  vmName: "x-quantix-follow-name",
  nodeId: "x-quantix-follow-node",
  subprotocol: "x-quantix-follow-subprotocol",
  /** the API token the follow was opened with: its revocation closes the follow */
  tokenId: "x-quantix-follow-token",
} as const;

/** welcome.reconnectSpreadMs as the Worker passed it, if it is one. */
const validSpread = (ms: number | undefined) => (ms !== undefined && Number.isInteger(ms) && ms >= 0 && ms <= 600_000 ? ms : undefined);

export class NodeSession extends DurableObject<Env> {
  private readonly db: Database;
  private readonly limits: SessionSettings;
  // In memory only: these belong to RPC calls that are still running, which keeps the object awake.
  private readonly waiters = new Map<string, (o: Outcome) => void>();
  private readonly logChunks = new Map<string, Map<number, string>>();
  /** UTF-8 bytes of each answer's chunks so far (counted once per chunk, not per arrival). */
  private readonly logBytes = new Map<string, number>();
  // A request's `sent` write, still running while its command is on the wire: the round trip need
  // not wait for it, only the request's final write must come after it (see settle).
  private readonly sentWrites = new Map<string, Promise<unknown>>();
  private flood = { tokens: 0, at: 0 };
  private lastMessageAt = 0;
  private inbox: Promise<void> = Promise.resolve();
  /** The current long-poll link's queue and held poll (memory only: see poll-link.ts). */
  private outbox: PollOutbox | null = null;

  /** Synchronous storage (SQLite-backed object): survives eviction, costs no await per frame. */
  private get kv(): SyncKvStorage {
    return this.ctx.storage.kv;
  }

  private inFlight(): InFlight[] {
    return [...this.kv.list<InFlight>({ prefix: INFLIGHT })].map(([, r]) => r);
  }

  private follows(): Follow[] {
    return [...this.kv.list<Follow>({ prefix: FOLLOW })].map(([, f]) => f);
  }

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.db = database(env.DB);
    this.limits = sessionSettings(env);
    // Pings are answered by the runtime without waking the object; their time is our liveness.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
  }

  // ---- connection ------------------------------------------------------------------------------

  /** The agent's upgrade, already authenticated by the Worker (which sets NODE_ID_HEADER), or a
   *  viewer's follow upgrade (FOLLOW_HEADERS), already authorized by the Worker. */
  async fetch(request: Request): Promise<Response> {
    if (request.headers.has(FOLLOW_HEADERS.vmId)) return this.acceptViewer(request);
    const nodeId = request.headers.get(NODE_ID_HEADER);
    if (!nodeId || request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return Response.json({ success: false, error: { code: "bad_request", message: "expected an agent WebSocket upgrade" } }, { status: 400 });
    }
    const spread = Number(request.headers.get(RECONNECT_SPREAD_HEADER) ?? NaN);
    const { 0: client, 1: server } = new WebSocketPair();
    await this.openLink(nodeId, "socket", validSpread(spread), (att) => {
      this.ctx.acceptWebSocket(server, [AGENT_TAG]);
      server.serializeAttachment(att);
      return this.socketLink(server, att);
    });
    return new Response(null, { status: 101, webSocket: client });
  }

  /** A long-poll from the agent, already authenticated by the Worker: without `connId` it opens a
   *  new link (answered with its welcome at once); with one, it waits for that link's frames. */
  async poll(nodeId: string, req: PollRequest, reconnectSpreadMs?: number): Promise<PollAnswer> {
    const waitMs = Math.min(req.waitMs ?? this.limits.longPollWaitMs, this.limits.longPollWaitMs);
    if (!req.connId) {
      const link = await this.openLink(nodeId, "poll", validSpread(reconnectSpreadMs), (att) => {
        this.kv.put(POLL_LINK, att);
        this.outbox = new PollOutbox(att.connId);
        return this.pollLink(att);
      });
      return this.outboxFor(link.att.connId).take(undefined, 0);
    }
    const link = this.currentLink();
    if (!link || link.att.connId !== req.connId || link.att.nodeId !== nodeId || link.att.transport !== "poll") return this.staleLink(req.connId);
    link.touch(Date.now());
    const answer = await this.outboxFor(req.connId).take(req.cursor, waitMs);
    // Answering is a sign of life too: an agent that died mid-poll is offline OFFLINE_AFTER_MS later.
    if (answer.ok && this.kv.get<string>("conn") === req.connId) this.currentLink()?.touch(Date.now());
    return answer;
  }

  /** Frames the agent posted on its long-poll link, each handled exactly as the same socket frame. */
  async receivePolled(nodeId: string, connId: string, frames: string[]): Promise<SendAnswer> {
    const link = this.currentLink();
    if (!link || link.att.connId !== connId || link.att.nodeId !== nodeId || link.att.transport !== "poll") return this.staleLink(connId);
    let handled = Promise.resolve();
    for (const frame of frames) handled = this.receive(link, frame);
    await handled;
    // A frame that ended the link (malformed, flood) is answered like any later use of it.
    return this.kv.get<string>("conn") === connId ? { ok: true } : this.staleLink(connId);
  }

  /** Opens the node's new link, replacing the current one (socket or poll), and welcomes it. */
  private async openLink(nodeId: string, transport: "socket" | "poll", reconnectSpreadMs: number | undefined, accept: (att: Attachment) => Link): Promise<Link> {
    const now = Date.now();
    // A newer connection for the node replaces the old one; what was sent on it can't be answered.
    await this.failAll({ code: "agent_disconnected", message: "the agent connection was replaced before it answered" });
    // No await from here until the new link is stored: two racing connects can't both stay open.
    for (const old of this.ctx.getWebSockets(AGENT_TAG)) {
      try {
        old.close(CLOSE.replaced, "replaced by a newer connection");
      } catch {
        // already closing
      }
    }
    const oldPoll = this.kv.get<Attachment>(POLL_LINK);
    if (oldPoll) this.endPollLink(oldPoll.connId, CLOSE.replaced, "replaced by a newer connection");
    const att: Attachment = { kind: "agent", nodeId, connId: crypto.randomUUID(), connectedAt: now, lastMessageAt: now, clock: now, transport };
    const link = accept(att);
    this.kv.put("conn", att.connId);
    this.kv.put("nodeId", nodeId);
    this.lastMessageAt = now;
    this.flood = { tokens: this.limits.floodBurst, at: now }; // a new connection starts with a full budget
    link.send({ type: "welcome", id: att.connId, payload: { nodeId, serverTime: now, heartbeatMs: HEARTBEAT_MS, reconnectSpreadMs } });
    // Viewers that outlived the old connection keep following on the new one.
    for (const f of this.follows()) {
      if (this.viewers(f.vmId).length) this.startFollow(link, f.vmId, f.name);
      else this.kv.delete(FOLLOW + f.vmId);
    }
    this.kv.put("reconcileAt", now + this.limits.reconcileIntervalMs);
    await this.db.update(nodes).set({ connected: true, lastSeenAt: now, updatedAt: now }).where(eq(nodes.id, nodeId));
    this.kv.put("lastSeenWritten", now);
    // The first check comes somewhere in the second half of OFFLINE_AFTER_MS: a fleet that
    // (re)connects at once (a restart, a deploy) then does not wake all its objects in step.
    this.kv.put("livenessAt", now + Math.ceil(this.limits.offlineAfterMs * (0.5 + Math.random() / 2)));
    await this.armAlarm();
    return link;
  }

  /** The current connection, socket or long-poll, if any. */
  private currentLink(): Link | null {
    const conn = this.kv.get<string>("conn");
    if (!conn) return null;
    const poll = this.kv.get<Attachment>(POLL_LINK);
    if (poll?.connId === conn) return this.pollLink(poll);
    for (const ws of this.ctx.getWebSockets(AGENT_TAG)) {
      const att = ws.deserializeAttachment() as Attachment | null;
      if (att?.connId === conn && ws.readyState === WebSocket.OPEN) return this.socketLink(ws, att);
    }
    return null;
  }

  private socketLink(ws: WebSocket, att: Attachment): Link {
    return {
      att,
      send: (frame) => ws.send(JSON.stringify(frame)),
      close: (code, reason) => ws.close(code, reason),
      // Pings are answered by the runtime without waking us: their time counts as well.
      lastSign: () => Math.max(this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0, att.lastMessageAt, att.connectedAt, this.lastMessageAt),
      touch: (now) => {
        if (now - att.lastMessageAt > HEARTBEAT_MS / 2) ws.serializeAttachment({ ...att, lastMessageAt: now });
      },
    };
  }

  private pollLink(att: Attachment): Link {
    const outbox = this.outboxFor(att.connId);
    return {
      att,
      send: (frame) => outbox.push(frame),
      close: (code, reason) => this.endPollLink(att.connId, code, reason),
      // The poll itself is the heartbeat: one held open right now means the agent is there.
      lastSign: () => (outbox.polling ? Date.now() : Math.max(att.lastMessageAt, att.connectedAt, this.lastMessageAt)),
      touch: (now) => {
        this.lastMessageAt = now;
        this.kv.put(POLL_LINK, { ...att, lastMessageAt: now });
      },
    };
  }

  /** The link's queue; a fresh, empty one if the object's memory was lost since the last poll. */
  private outboxFor(connId: string): PollOutbox {
    if (this.outbox?.connId !== connId) this.outbox = new PollOutbox(connId);
    return this.outbox;
  }

  /** Ends a long-poll link: its held poll, and any later poll or send naming it, learns why. */
  private endPollLink(connId: string, code: number, reason: string): void {
    const ended: LinkEnded =
      code === CLOSE.unauthorized
        ? { status: 401, code: "credential_invalid", message: `node credential refused: ${reason}` }
        : code === CLOSE.replaced
          ? { status: 409, code: "link_replaced", message: `this long-poll link was ${reason}; open a new one (poll without connId)` }
          : { status: 410, code: "link_closed", message: `this long-poll link was closed (${reason}); open a new one (poll without connId)` };
    if (this.outbox?.connId === connId) this.outbox.end(ended);
    this.kv.put(POLL_ENDED, { connId, ...ended });
    if (this.kv.get<Attachment>(POLL_LINK)?.connId === connId) this.kv.delete(POLL_LINK);
  }

  /** The answer to a poll or send naming a link that is not the current one. */
  private staleLink(connId: string): { ok: false } & LinkEnded {
    const ended = this.kv.get<{ connId: string } & LinkEnded>(POLL_ENDED);
    if (ended?.connId === connId) return { ok: false, status: ended.status, code: ended.code, message: ended.message };
    return { ok: false, status: 410, code: "link_closed", message: "no such long-poll link on this node (closed, or never opened); open a new one (poll without connId)" };
  }

  /** The current connection ended (closed, errored, dead or kicked): the node is offline and every
   *  request whose answer could only come over it fails now. */
  private async connectionGone(connId: string, error: { code: string; message: string }, lastSign = Date.now()): Promise<void> {
    const conn = this.kv.get<string>("conn");
    if (conn !== connId) return; // an older, replaced connection: the node is still online
    const nodeId = this.kv.get<string>("nodeId");
    this.kv.delete("conn");
    if (this.kv.get<Attachment>(POLL_LINK)?.connId === connId) this.endPollLink(connId, CLOSE.normal, error.message);
    // Nothing to follow without the agent: every viewer is told, then closed (it retries later).
    for (const f of this.follows()) this.endFollow(f, { type: "status", status: "node_offline" }, FOLLOW_CLOSE_NODE_OFFLINE, "node offline", false);
    // What the requests on this link fail with, then the kept writes (the last-known log is read
    // exactly when a node is offline), all in D1 before the node shows offline.
    await this.failAll(error);
    await this.writeKept();
    // Offline with its true last sign of life (written coarsely while it was connected).
    if (nodeId) {
      await this.db
        .update(nodes)
        .set({ connected: false, updatedAt: Date.now(), lastSeenAt: sql`max(coalesce(${nodes.lastSeenAt}, 0), ${lastSign})` })
        .where(eq(nodes.id, nodeId));
    }
    await this.armAlarm();
  }

  async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    const viewer = this.viewerOf(ws);
    if (viewer) return this.viewerGone(ws, viewer.vmId);
    const att = ws.deserializeAttachment() as Attachment | null;
    try {
      ws.close(code === 1005 || code === 1006 ? CLOSE.normal : code, reason);
    } catch {
      // the runtime already answered the close
    }
    if (att) await this.connectionGone(att.connId, { code: "agent_disconnected", message: "the agent disconnected before answering" });
  }

  async webSocketError(ws: WebSocket): Promise<void> {
    const viewer = this.viewerOf(ws);
    if (viewer) return this.viewerGone(ws, viewer.vmId);
    const att = ws.deserializeAttachment() as Attachment | null;
    if (att) await this.connectionGone(att.connId, { code: "agent_disconnected", message: "the agent connection failed before answering" });
  }

  /** Close the node's socket from the control plane (credential rotated: CLOSE.unauthorized; node
   *  deleted: CLOSE.nodeDeleted, which also forgets everything stored here). */
  async disconnect(code: number, reason: string, forget = false): Promise<void> {
    const current = this.currentLink();
    if (current) {
      this.closeLink(current, code, reason);
      await this.connectionGone(current.att.connId, { code: "node_offline", message: reason });
    }
    if (forget) {
      await this.failAll({ code: "node_offline", message: reason });
      await this.writeKept();
      await this.ctx.storage.deleteAlarm();
      await this.ctx.storage.deleteAll();
    }
  }

  /** The token these follows were opened with was revoked: each is told so and closed. */
  async closeFollowsOf(tokenId: string): Promise<number> {
    const sockets = this.ctx.getWebSockets(tokenTag(tokenId));
    const revoked: FollowMessage = { type: "error", code: "token_revoked", message: "the token this follow was opened with was revoked" };
    for (const ws of sockets) {
      const viewer = this.viewerOf(ws);
      try {
        ws.send(JSON.stringify(revoked));
        ws.close(FOLLOW_CLOSE_REVOKED, "token revoked");
      } catch {
        // closing already
      }
      if (viewer) await this.viewerGone(ws, viewer.vmId);
    }
    return sockets.length;
  }

  /** Asks the connected agent for a full inventory (a VM was re-homed to this node); false when offline. */
  async resync(): Promise<boolean> {
    try {
      this.currentLink()?.send({ type: "resync", id: crypto.randomUUID(), payload: {} });
      return this.currentLink() !== null;
    } catch {
      return false;
    }
  }

  /** For tests and diagnostics: answers ignored as unknown, duplicate or late. */
  async stats(): Promise<{ ignoredAnswers: number; inFlight: number; connected: boolean; transport: "socket" | "poll" | null }> {
    const inflight = this.inFlight();
    const link = this.currentLink();
    return {
      ignoredAnswers: this.kv.get<number>("ignoredAnswers") ?? 0,
      inFlight: inflight.length,
      connected: link !== null,
      transport: link ? (link.att.transport ?? "socket") : null,
    };
  }

  // ---- requests --------------------------------------------------------------------------------

  /** Sends one command. Resolves when it is on the wire, or with `wait` when its outcome is known
   *  (answer, agent error, deadline, or the connection dropping). */
  async dispatch(d: Dispatch): Promise<Outcome> {
    const current = this.currentLink();
    if (!current) return this.notSent(d, "the node's agent is not connected");
    // The waiter exists before the frame leaves: its answer can't be handled before we await.
    const outcome = d.wait ? new Promise<Outcome>((resolve) => this.waiters.set(d.id, resolve)) : null;
    if (!(await this.sendCommand(current, d))) {
      this.waiters.delete(d.id);
      return this.notSent(d, "the node's agent connection is closing");
    }
    return outcome ? outcome : { status: "sent" };
  }

  /** A command that never left: its new request row (if it is ours to write) says so. */
  private async notSent(d: Dispatch, message: string): Promise<Outcome> {
    const error = { code: "node_offline", message };
    if (d.newRequest) {
      const now = Date.now();
      await this.keepForD1(QUERY_ROW + d.id, queryRequestRow({ ...d.newRequest, id: d.id, kind: d.kind, vmId: d.vmId, deadlineAt: now, sentAt: null }, { status: "failed", error }, now));
    }
    return { status: "failed", error };
  }

  /** Puts the command on the wire and in flight (storage, deadline alarm); false if the socket is closing. */
  private async sendCommand(current: Link, d: Omit<Dispatch, "wait">, reconcile?: StuckVm): Promise<boolean> {
    const now = Date.now();
    const deadline = now + (isPowerKind(d.kind) ? this.limits.ackMs : this.limits.queryMs);
    const target = { vmId: d.vmId, name: d.name, deadline };
    const frame: ServerMessage =
      d.kind === "vm.logs"
        ? { type: "vm.logs", id: d.id, payload: { ...target, lines: d.lines ?? 100, maxBytes: MAX_LOG_BYTES } }
        : d.kind === "vm.stop"
          ? { type: "vm.stop", id: d.id, payload: { ...target, graceMs: this.limits.stopGraceMs } }
          : d.kind === "vm.state" && d.excerptLines
            ? { type: "vm.state", id: d.id, payload: { ...target, excerptLines: d.excerptLines } }
            : { type: d.kind, id: d.id, payload: target };
    const inflight: InFlight = {
      id: d.id,
      kind: d.kind,
      vmId: d.vmId,
      vmGeneration: d.vmGeneration ?? null,
      prevState: d.prevState ?? null,
      connId: current.att.connId,
      phase: "sent",
      deadline,
      ...(reconcile ? { reconcile } : {}),
      ...(d.newRequest ? { newRequest: { ...d.newRequest, sentAt: now } } : {}),
      ...(d.keepAsLastKnown ? { keepAsLastKnown: true } : {}),
    };
    this.kv.put(INFLIGHT + d.id, inflight);
    if (isPowerKind(d.kind)) this.kv.put("transitionsOpen", true); // for the reconciler's next pass
    try {
      current.send(frame);
    } catch {
      this.kv.delete(INFLIGHT + d.id);
      return false;
    }
    if (!d.newRequest) {
      // Written while the agent works; markRequestSent only moves a queued row, so even a late write
      // can't undo a final status, and settle waits for it before writing that status.
      const sent = markRequestSent(this.db, d.id, now)
        .catch((err) => console.error("node session: could not mark request sent", d.id, err))
        .finally(() => this.sentWrites.delete(d.id));
      this.sentWrites.set(d.id, sent);
    }
    await this.armAlarm();
    return true;
  }

  /** Ends an in-flight request exactly once: storage entry gone, D1 row final, waiter woken. */
  private async settle(r: InFlight, outcome: Exclude<Outcome, { status: "sent" }>, stored: unknown = undefined): Promise<void> {
    this.kv.delete(INFLIGHT + r.id);
    this.logChunks.delete(r.id);
    this.logBytes.delete(r.id);
    const finish: RequestFinish =
      outcome.status === "done" ? { status: "done", result: stored ?? outcome.result } : { status: outcome.status, error: outcome.error };
    const wake = this.waiters.get(r.id);
    this.waiters.delete(r.id);
    if (r.newRequest) {
      // A route's query: the caller has its answer now; its row (and the log it read, to be the
      // last-known one) go to D1 with others shortly.
      const at = Date.now();
      wake?.(outcome.status === "done" ? { ...outcome, at } : outcome);
      if (r.keepAsLastKnown && outcome.status === "done") {
        this.kv.put(SNAPSHOT + r.vmId, snapshotRow(r.vmId, logsAnswer(outcome.result as LogsResult, outcome.text ?? "", at)));
      }
      const { sentAt, ...request } = r.newRequest;
      return this.keepForD1(QUERY_ROW + r.id, queryRequestRow({ ...request, id: r.id, kind: r.kind, vmId: r.vmId, deadlineAt: r.deadline, sentAt }, finish, at));
    }
    // A query's caller (reset_state, logs) has the answer in hand and never hands out the request's
    // id: it goes on while the row is closed. A power action's caller may answer with the request's
    // status, so its row is final first.
    if (!isPowerKind(r.kind)) wake?.(outcome);
    await this.sentWrites.get(r.id);
    await finishRequest(this.db, r.id, finish);
    if (isPowerKind(r.kind)) wake?.(outcome);
  }

  /** Keeps a write for the next batch of them (KEPT_DELAY_MS from the first one kept). */
  private async keepForD1(key: string, value: unknown): Promise<void> {
    this.kv.put(key, value);
    if (this.kv.get<number>("keptAt") === undefined) {
      this.kv.put("keptAt", Date.now() + KEPT_DELAY_MS);
      await this.armAlarm();
    }
  }

  /** Writes the kept rows and last-known logs in one D1 batch; on failure they stay for a later alarm. */
  private async writeKept(): Promise<void> {
    const rows = [...this.kv.list<QueryRow>({ prefix: QUERY_ROW, limit: KEPT_AT_ONCE })];
    // Snapshots are large (≤ 256 KiB each): a few per batch.
    const snapshots = [...this.kv.list<SnapshotRow>({ prefix: SNAPSHOT, limit: 8 })];
    if (rows.length === 0 && snapshots.length === 0) {
      this.kv.delete("keptAt");
      return;
    }
    try {
      await writeKeptRows(this.db, rows.map(([, row]) => row), snapshots.map(([, row]) => row));
      for (const [key] of [...rows, ...snapshots]) this.kv.delete(key);
      const more = [...this.kv.list({ prefix: QUERY_ROW, limit: 1 }), ...this.kv.list({ prefix: SNAPSHOT, limit: 1 })].length > 0;
      if (more) this.kv.put("keptAt", Date.now());
      else this.kv.delete("keptAt");
    } catch (err) {
      console.error("node session: could not write kept request rows / last-known logs; retrying", err);
      this.kv.put("keptAt", Date.now() + 5 * KEPT_DELAY_MS);
    }
  }

  private async failAll(error: { code: string; message: string }): Promise<void> {
    const all = this.inFlight();
    for (const r of all.values()) await this.settle(r, { status: "failed", error });
  }

  private async countIgnored(what: string, id: string): Promise<void> {
    const n = (this.kv.get<number>("ignoredAnswers") ?? 0) + 1;
    this.kv.put("ignoredAnswers", n);
    // Logged sparsely: an agent repeating itself must not turn into a log flood.
    if (n <= 10 || n % 100 === 0) console.warn(`node session: ignored ${what} for request ${id} (not in flight: unknown, duplicate or late; ${n} so far)`);
  }

  private async writeLastSeen(nodeId: string, lastSign: number): Promise<void> {
    await this.db
      .update(nodes).set({ lastSeenAt: lastSign }).where(sql`${nodes.id} = ${nodeId} AND (${nodes.lastSeenAt} IS NULL OR ${nodes.lastSeenAt} < ${lastSign})`);
    this.kv.put("lastSeenWritten", lastSign);
  }

  // ---- alarms: deadlines and liveness -------------------------------------------------------------

  /** One alarm for the earliest thing due: a request deadline, a kept write, the next liveness check
   *  (when the node would be OFFLINE_AFTER_MS without a sign of life, as of the last check: pings
   *  are answered without waking the object, so a live node's object wakes about once a minute),
   *  or the reconciler's next pass while a transition may be open. */
  private async armAlarm(): Promise<void> {
    const all = this.inFlight();
    let due = Infinity;
    for (const r of all.values()) due = Math.min(due, r.deadline);
    for (const f of this.follows()) if (!f.acked) due = Math.min(due, f.ackDeadline);
    const keptAt = this.kv.get<number>("keptAt");
    if (keptAt !== undefined) due = Math.min(due, keptAt);
    if (this.kv.get<string>("conn")) {
      due = Math.min(due, this.kv.get<number>("livenessAt") ?? Date.now() + this.limits.offlineAfterMs);
      const reconcileAt = this.kv.get<number>("reconcileAt");
      if (reconcileAt !== undefined && this.kv.get<boolean>("transitionsOpen") !== false) due = Math.min(due, reconcileAt);
    }
    if (due === Infinity) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(Math.max(due, Date.now() + 1));
  }

  async alarm(): Promise<void> {
    try {
      await this.sweep();
    } finally {
      // Whatever failed (a D1 blip), keep the deadlines and liveness checks coming.
      await this.armAlarm();
    }
  }

  private async sweep(): Promise<void> {
    const now = Date.now();
    if ((this.kv.get<number>("keptAt") ?? Infinity) <= now) await this.writeKept();
    const all = this.inFlight();
    for (const r of all.values()) {
      if (r.deadline > now) continue;
      const what = isPowerKind(r.kind) && r.phase === "sent" ? "acknowledge" : "answer";
      await this.settle(r, { status: "failed", error: { code: "agent_timeout", message: `the agent did not ${what} ${r.kind} in time` } });
    }
    for (const f of this.follows()) {
      if (f.acked || f.ackDeadline > now) continue;
      this.endFollow(f, { type: "error", code: "agent_timeout", message: "the agent did not start following the log in time" }, CLOSE.normal, "follow failed", true);
    }
    const current = this.currentLink();
    if (current) {
      const lastSign = current.lastSign();
      if (now - lastSign > this.limits.offlineAfterMs) {
        this.closeLink(current, CLOSE.dead, "no sign of life in time");
        await this.connectionGone(current.att.connId, { code: "node_offline", message: "the node stopped answering" }, lastSign);
      } else {
        this.kv.put("livenessAt", lastSign + this.limits.offlineAfterMs + 1);
        // Liveness reaches D1 every LAST_SEEN_WRITE_MS (not per heartbeat, not per sweep): the
        // session decides offline itself; the column is for showing and for a session gone silent.
        if (lastSign - (this.kv.get<number>("lastSeenWritten") ?? 0) >= this.limits.lastSeenWriteMs) {
          await this.writeLastSeen(current.att.nodeId, lastSign);
        }
        if (now >= (this.kv.get<number>("reconcileAt") ?? 0)) await this.reconcile(current, true);
      }
    } else if (this.kv.get<string>("conn")) {
      // The socket vanished without a close event (e.g. the object was reset): treat as gone.
      await this.connectionGone(this.kv.get<string>("conn")!, { code: "agent_disconnected", message: "the agent connection was lost" });
    }
  }

  // ---- inbound frames ----------------------------------------------------------------------------

  async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    // Viewers only listen; what they send is dropped (and never counts against the agent's budget).
    if (this.viewerOf(ws)) return;
    const att = ws.deserializeAttachment() as Attachment | null;
    if (att) return this.receive(this.socketLink(ws, att), message);
  }

  /** One frame from the agent, on either transport. Size and rate are judged on arrival (a slow
   *  handler must not hide a flood); the frames themselves are handled one at a time, in arrival
   *  order: D1 calls let the runtime deliver the next frame while one is awaited, and e.g. a sync's
   *  `done` must not overtake its earlier chunks. */
  private receive(link: Link, message: string | ArrayBuffer): Promise<void> {
    const refused = this.admit(message);
    if (refused) this.closeLink(link, refused.code, refused.why);
    const handled = this.inbox
      .then(() => (refused ? this.dropLink(link, refused.code, refused.why) : this.onFrame(link, message)))
      .catch((err) => {
        // Never let a frame crash the object: log, and drop the connection as a protocol error.
        console.error("node session: frame handling failed", err);
        return this.dropLink(link, CLOSE.protocolError, "internal error handling a frame");
      });
    this.inbox = handled;
    return handled;
  }

  /** Too big, binary, or one frame too many: the close code to answer with. */
  private admit(message: string | ArrayBuffer): { code: number; why: string } | null {
    const size = typeof message === "string" ? message.length : message.byteLength;
    const bytes = typeof message === "string" && size * 3 > MAX_FRAME_BYTES ? new TextEncoder().encode(message).byteLength : size;
    if (bytes > MAX_FRAME_BYTES) return { code: CLOSE.tooLarge, why: `frame over ${MAX_FRAME_BYTES} bytes` };
    if (typeof message !== "string") return { code: CLOSE.protocolError, why: "binary frames are not part of the protocol" };
    const now = Date.now();
    const { floodPerSecond, floodBurst } = this.limits;
    this.flood.tokens = this.flood.at === 0 ? floodBurst : Math.min(floodBurst, this.flood.tokens + ((now - this.flood.at) * floodPerSecond) / 1000);
    this.flood.at = now;
    if (--this.flood.tokens < 0) return { code: CLOSE.flood, why: "too many frames" };
    return null;
  }

  private closeLink(link: Link, code: number, why: string): void {
    try {
      link.close(code, why);
    } catch {
      // closing already
    }
  }

  /** Ends the agent's link from our side for a protocol fault: the node is offline until it reconnects. */
  private async dropLink(link: Link, code: number, why: string): Promise<void> {
    this.closeLink(link, code, why);
    await this.connectionGone(link.att.connId, { code: "agent_disconnected", message: `connection closed: ${why}` });
  }

  private async onFrame(link: Link, message: string | ArrayBuffer): Promise<void> {
    const { att } = link;
    if (typeof message !== "string" || att.connId !== this.kv.get<string>("conn")) return; // a replaced link
    const now = Date.now();
    this.lastMessageAt = now;
    link.touch(now);

    const msg = parseFrame(AgentMessage, message);
    if (!msg) return this.dropLink(link, CLOSE.protocolError, "malformed or unknown frame");
    const actor = `agent:${att.nodeId}`;

    switch (msg.type) {
      case "hello": {
        const p = msg.payload;
        await this.db
          .update(nodes)
          .set({ hostname: p.hostname, agentVersion: p.agentVersion, libvirtVersion: p.libvirtVersion, protocolVersion: p.protocolVersion, lastSeenAt: now, updatedAt: now })
          .where(eq(nodes.id, att.nodeId));
        this.kv.put("lastSeenWritten", now);
        return;
      }
      case "inventory": {
        const p = msg.payload;
        const syncId = `${att.connId}:${p.syncId}`;
        const report = await upsertReportedVms(this.db, att.nodeId, p.vms, syncId, actor, this.limits.maxVmsPerNode);
        await settleReport(this.db, link.send, att.nodeId, msg.id, report, this.limits.maxVmsPerNode);
        if (p.done) {
          await markUnreportedMissing(this.db, att.nodeId, syncId, actor);
          // A completed sync (typically a reconnect) is when stuck transitions are worth a look.
          const current = this.currentLink();
          if (current) await this.reconcile(current);
        }
        return;
      }
      case "vm.changed": {
        const report = await upsertReportedVms(this.db, att.nodeId, msg.payload.vms, null, actor, this.limits.maxVmsPerNode);
        await settleReport(this.db, link.send, att.nodeId, msg.id, report, this.limits.maxVmsPerNode);
        await markRemoved(this.db, att.nodeId, msg.payload.removed, actor);
        return;
      }
      case "ack": {
        const follow = this.followById(msg.id);
        if (follow) return this.onFollowing(follow);
        return this.onAck(msg.id);
      }
      case "log.append": {
        const follow = this.followById(msg.id);
        if (!follow) {
          // A follow nobody watches any more (e.g. its unfollow crossed this frame): stop it for good.
          link.send({ type: "vm.logs.unfollow", id: msg.id, payload: {} });
          return this.countIgnored("log.append", msg.id);
        }
        if (!follow.acked) this.onFollowing(follow);
        const { event, text } = msg.payload;
        if (event) this.broadcast(follow.vmId, { type: "status", status: event });
        if (text) this.broadcast(follow.vmId, { type: "append", text });
        return;
      }
      case "log.chunk": {
        const r = this.kv.get<InFlight>(INFLIGHT + msg.id);
        if (!r || r.kind !== "vm.logs") return this.countIgnored("log.chunk", msg.id);
        const chunks = this.logChunks.get(msg.id) ?? new Map<number, string>();
        const replaced = chunks.get(msg.payload.seq);
        chunks.set(msg.payload.seq, msg.payload.text);
        this.logChunks.set(msg.id, chunks);
        // An answer carries at most MAX_LOG_BYTES of text, counted in UTF-8 bytes; more is the agent misbehaving.
        const bytes = (this.logBytes.get(msg.id) ?? 0) - (replaced === undefined ? 0 : utf8Bytes(replaced)) + utf8Bytes(msg.payload.text);
        this.logBytes.set(msg.id, bytes);
        if (bytes > MAX_LOG_BYTES) {
          return this.settle(r, { status: "failed", error: { code: "agent_error", message: `the agent sent more than ${MAX_LOG_BYTES} bytes of log text` } });
        }
        return;
      }
      case "result":
        return this.onResult(msg.id, msg.payload, actor);
      case "error": {
        const follow = this.followById(msg.id);
        if (follow) {
          const { code, message } = msg.payload;
          return this.endFollow(follow, { type: "error", code, message: `the agent cannot follow this log: ${message}` }, CLOSE.normal, "follow failed", false);
        }
        const r = this.kv.get<InFlight>(INFLIGHT + msg.id);
        if (!r) return this.countIgnored("error", msg.id);
        const error = { code: msg.payload.code, message: msg.payload.message };
        if (isPowerKind(r.kind) && r.vmGeneration !== null && r.prevState) {
          // Refused or failed before doing anything we can rely on: back to the state before it.
          await undoPowerAction(this.db, { id: r.id, vmId: r.vmId, vmGeneration: r.vmGeneration, prevState: r.prevState }, error, actor);
        }
        await this.settle(r, { status: msg.payload.code === "expired" ? "expired" : "failed", error });
        return;
      }
    }
  }

  private async onAck(id: string): Promise<void> {
    const r = this.kv.get<InFlight>(INFLIGHT + id);
    if (!r || !isPowerKind(r.kind) || r.phase !== "sent") return this.countIgnored("ack", id);
    const now = Date.now();
    // After the ack the agent reports the outcome: a graceful stop may take the whole grace.
    const work = r.kind === "vm.stop" ? this.limits.stopGraceMs : this.limits.queryMs;
    const acked: InFlight = { ...r, phase: "acked", deadline: now + work + this.limits.ackMs };
    this.kv.put(INFLIGHT + id, acked);
    await markRequestAcked(this.db, id, acked.deadline, now);
    await this.armAlarm();
  }

  private async onResult(id: string, payload: unknown, actor: string): Promise<void> {
    const r = this.kv.get<InFlight>(INFLIGHT + id);
    if (!r) return this.countIgnored("result", id);
    const bad = (why: string) => this.settle(r, { status: "failed", error: { code: "agent_error", message: why } });

    if (isPowerKind(r.kind)) {
      const parsed = PowerResult.safeParse(payload);
      if (!parsed.success) return bad(`the agent's ${r.kind} result was malformed`);
      if (r.vmGeneration !== null) {
        await applyPowerOutcome(this.db, { id: r.id, vmId: r.vmId, vmGeneration: r.vmGeneration, kind: r.kind }, parsed.data, actor);
      }
      return this.settle(r, { status: "done", result: parsed.data });
    }
    if (r.kind === "vm.state") {
      const parsed = StateResult.safeParse(payload);
      if (!parsed.success) return bad("the agent's vm.state result was malformed");
      if (r.reconcile) {
        const observed = { state: mapLibvirtState(parsed.data.libvirtState), libvirtState: parsed.data.libvirtState };
        await repairStuckVm(this.db, { ...r.reconcile, stuckForMs: Date.now() - r.reconcile.stuckSince }, observed);
      }
      return this.settle(r, { status: "done", result: parsed.data });
    }
    const parsed = LogsResult.safeParse(payload);
    if (!parsed.success) return bad("the agent's vm.logs result was malformed");
    const chunks = this.logChunks.get(id) ?? new Map<number, string>();
    if (chunks.size !== parsed.data.chunks) return bad(`the agent announced ${parsed.data.chunks} log chunks but ${chunks.size} arrived`);
    const text = [...chunks.entries()].sort(([a], [b]) => a - b).map(([, t]) => t).join("");
    // The row keeps the metadata only; the text goes to the waiting caller.
    return this.settle(r, { status: "done", result: parsed.data, text }, parsed.data);
  }

  // ---- self-healing: VMs stuck in a transition --------------------------------------------------

  /** Asks the hypervisor about this node's VMs that are stuck: in a transitional state for longer
   *  than STUCK_AFTER_MS, held by a request that is no longer in flight. Each answer is adopted by
   *  repairStuckVm (an `auto_repair` event), only if nobody acted on the VM meanwhile. */
  private async reconcile(current: Link, periodic = false): Promise<void> {
    const now = Date.now();
    this.kv.put("reconcileAt", now + this.limits.reconcileIntervalMs);
    // The periodic pass asks D1 only while a transition may be open: one seen by the last pass, or a
    // power action sent since (a thousand idle nodes then cost D1 nothing every minute).
    if (periodic && this.kv.get<boolean>("transitionsOpen") === false) return;
    const transitional = TRANSITIONAL_STATES.map((t) => sql`${t}`);
    const open = await this.db
      .select()
      .from(vms)
      .where(
        sql`${vms.nodeId} = ${current.att.nodeId} AND ${vms.state} IN (${sql.join(transitional, sql`, `)})
          AND ${vms.transitionRequestId} IS NOT NULL AND ${vms.missing} = 0`,
      )
      .orderBy(asc(vms.stateUpdatedAt))
      .limit(RECONCILE_BATCH);
    this.kv.put("transitionsOpen", open.length > 0);
    const stuck = open.filter((vm) => vm.stateUpdatedAt < now - this.limits.stuckAfterMs);
    if (stuck.length === 0) return;
    const busy = new Set<string>();
    for (const r of this.inFlight()) {
      busy.add(r.id); // the transition's own request still running: not stuck, just slow
      if (r.reconcile) busy.add(r.reconcile.vmId); // asked already
    }
    for (const vm of stuck) {
      if (busy.has(vm.transitionRequestId!) || busy.has(vm.id)) continue;
      const id = await queueQuery(this.env, this.db, vm, "vm.state", { reconcile: true }, "reconciler");
      const check: StuckVm = { vmId: vm.id, generation: vm.generation, transitionRequestId: vm.transitionRequestId!, expectedState: vm.state, stuckSince: vm.stateUpdatedAt };
      if (!(await this.sendCommand(current, { id, kind: "vm.state", vmId: vm.id, name: vm.name }, check))) {
        await finishRequest(this.db, id, { status: "failed", error: { code: "node_offline", message: "the node's agent connection is closing" } });
        return;
      }
    }
  }

  // ---- live follow: viewers <-> one agent follow per VM -------------------------------------------

  private viewerOf(ws: WebSocket): ViewerAttachment | null {
    const att = ws.deserializeAttachment() as ViewerAttachment | Attachment | null;
    return att && att.kind === "viewer" ? att : null;
  }

  private followById(id: string): Follow | null {
    return this.follows().find((f) => f.followId === id) ?? null;
  }

  private viewers(vmId: string): WebSocket[] {
    return this.ctx.getWebSockets(vmTag(vmId)).filter((ws) => ws.readyState === WebSocket.OPEN);
  }

  private broadcast(vmId: string, message: FollowMessage): void {
    const text = JSON.stringify(message);
    for (const ws of this.viewers(vmId)) {
      try {
        ws.send(text);
      } catch {
        // that viewer is going; its close event cleans up
      }
    }
  }

  /** A dashboard socket for one VM's log: joins the VM's follow, starting it on the agent if needed. */
  private async acceptViewer(request: Request): Promise<Response> {
    const vmId = request.headers.get(FOLLOW_HEADERS.vmId)!;
    const name = request.headers.get(FOLLOW_HEADERS.vmName) ?? "";
    const subprotocol = request.headers.get(FOLLOW_HEADERS.subprotocol);
    const tokenId = request.headers.get(FOLLOW_HEADERS.tokenId);
    if (this.ctx.getWebSockets(VIEWER_TAG).length >= MAX_VIEWERS) {
      return Response.json(
        { success: false, error: { code: "too_many_viewers", message: `at most ${MAX_VIEWERS} live log viewers per node` } },
        { status: 429, headers: { "Retry-After": "30" } },
      );
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [VIEWER_TAG, vmTag(vmId), ...(tokenId ? [tokenTag(tokenId)] : [])]);
    const att: ViewerAttachment = { kind: "viewer", vmId };
    server.serializeAttachment(att);
    const current = this.currentLink();
    if (!current) {
      server.send(JSON.stringify({ type: "status", status: "node_offline" } satisfies FollowMessage));
      server.close(FOLLOW_CLOSE_NODE_OFFLINE, "node offline");
    } else {
      const follow = this.kv.get<Follow>(FOLLOW + vmId);
      if (!follow || follow.connId !== current.att.connId) this.startFollow(current, vmId, name);
      else if (follow.acked) server.send(JSON.stringify({ type: "status", status: "following" } satisfies FollowMessage));
      await this.armAlarm();
    }
    return new Response(null, { status: 101, webSocket: client, headers: subprotocol ? { "Sec-WebSocket-Protocol": subprotocol } : {} });
  }

  /** Asks the agent to follow the VM's log (`tail -F`); one follow per VM, whoever watches. */
  private startFollow(current: Link, vmId: string, name: string): void {
    const now = Date.now();
    const follow: Follow = { followId: crypto.randomUUID(), vmId, name, connId: current.att.connId, acked: false, ackDeadline: now + this.limits.queryMs };
    this.kv.put(FOLLOW + vmId, follow);
    try {
      current.send({ type: "vm.logs.follow", id: follow.followId, payload: { vmId, name, deadline: follow.ackDeadline } });
    } catch {
      // the agent socket is closing: its close event tells the viewers node_offline
    }
  }

  private onFollowing(follow: Follow): void {
    if (follow.acked) return;
    this.kv.put(FOLLOW + follow.vmId, { ...follow, acked: true });
    this.broadcast(follow.vmId, { type: "status", status: "following" });
  }

  /** Ends a VM's follow for all its viewers: a last message, then their sockets close. */
  private endFollow(follow: Follow, last: FollowMessage, code: number, reason: string, tellAgent: boolean): void {
    this.kv.delete(FOLLOW + follow.vmId);
    for (const ws of this.viewers(follow.vmId)) {
      try {
        ws.send(JSON.stringify(last));
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
    if (tellAgent) this.unfollow(follow);
  }

  private unfollow(follow: Follow): void {
    const conn = this.kv.get<string>("conn");
    if (conn !== follow.connId) return; // that connection is gone, and its follows with it
    try {
      this.currentLink()?.send({ type: "vm.logs.unfollow", id: follow.followId, payload: {} });
    } catch {
      // closing: the follow ends with the connection
    }
  }

  /** A viewer left: the last one of a VM ends its agent follow. */
  private async viewerGone(ws: WebSocket, vmId: string): Promise<void> {
    try {
      ws.close(CLOSE.normal, "bye");
    } catch {
      // the runtime already answered the close
    }
    if (this.viewers(vmId).some((other) => other !== ws)) return;
    const follow = this.kv.get<Follow>(FOLLOW + vmId);
    if (!follow) return;
    this.kv.delete(FOLLOW + vmId);
    this.unfollow(follow);
    await this.armAlarm();
  }
}
