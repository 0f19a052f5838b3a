// NodeSession: one Durable Object per node, a shell that routes the runtime's calls (fetch, RPC,
// webSocket*, alarm) and each agent frame to the room that owns it: links.ts (socket and long-poll
// links), inbox.ts (frame admission and order), frames.ts (the frame switch), ledger.ts (in-flight
// requests), kept-writes.ts (batched D1 writes), liveness.ts, reconciler.ts (checks with the
// hypervisor), anti-entropy.ts, metrics-watch.ts (live samples while watched), follow-relay.ts, console-relay.ts (serial consoles), vnc-relay.ts (graphical consoles); store.ts names every stored key. Deadlines are
// alarms only (no timers but a held poll's), so the object can hibernate.
import { DurableObject } from "cloudflare:workers";
import {
  CLOSE,
  HEARTBEAT_MS,
  livenessHeartbeats,
  PING_FRAME,
  PONG_FRAME,
  WIRE_FEATURES,
  type AgentMessage,
  type AgentUpdatePayload,
  type PollRequest,
} from "../../protocol/wire.ts";
import { accessSettings } from "../access/settings.ts";
import { sessionSettings, type SessionSettings } from "../config.ts";
import { database, type Database } from "../db/client.ts";
import type { CostCounts } from "../cost-counts.ts";
import { CostMeter } from "../cost-meter.ts";
import { debugCountsEnabled, isolateCounts } from "../debug-counts.ts";
import type { MetricRange, MetricsAnswer } from "../../protocol/metrics.ts";
import type { AgentFailure } from "../request-rows.ts";
import type {
  LogsDispatch,
  LogsOutcome,
  PowerDispatch,
  PowerOutcome,
  StateDispatch,
  StateOutcome,
} from "./dispatch.ts";
import { ConsoleRelay } from "./console-relay.ts";
import { VncRelay } from "./vnc-relay.ts";
import { FollowRelay } from "./follow-relay.ts";
import { CONSOLE_HEADERS, FOLLOW_HEADERS, NODE_ID_HEADER, RECONNECT_SPREAD_HEADER, validSpread } from "./headers.ts";
import { onAgentFrame, type FrameRooms } from "./frames.ts";
import { EventCoalescer } from "./event-coalescer.ts";
import { AgentInbox, type Refusal } from "./inbox.ts";
import { flagOverloadedNode } from "./overload.ts";
import { sessionNotices, type SessionNotices } from "./notices.ts";
import { KeptWrites } from "./kept-writes.ts";
import { RequestLedger } from "./ledger.ts";
import { AgentLinks, type AgentLink, type StaleLink } from "./links.ts";
import { Liveness } from "./liveness.ts";
import { MetricBatches } from "./metric-batches.ts";
import { MetricsHistory } from "./metrics.ts";
import { MetricsWatch } from "./metrics-watch.ts";
import type { PollAnswer } from "./poll-outbox.ts";
import { Reconciler } from "./reconciler.ts";
import { SessionStore, type AgentAttachment, type ConsoleTicket } from "./store.ts";

export class NodeSession extends DurableObject<Env> {
  private readonly db: Database;
  private readonly limits: SessionSettings;
  private readonly store: SessionStore;
  private readonly links: AgentLinks;
  private readonly inbox: AgentInbox;
  private readonly kept: KeptWrites;
  private readonly ledger: RequestLedger;
  private readonly liveness: Liveness;
  private readonly reconciler: Reconciler;
  private readonly follows: FollowRelay;
  private readonly consoles: ConsoleRelay;
  private readonly displays: VncRelay;
  private readonly notices: SessionNotices;
  private readonly coalescer: EventCoalescer;
  readonly metrics: MetricsHistory;
  private readonly metricBatches: MetricBatches;
  private readonly watch = new MetricsWatch();
  /** a local bench's cost counts (QX_DEBUG_COUNTS only; see cost-meter.ts) */
  private readonly meter: CostMeter | null;
  private readonly storage: DurableObjectStorage;
  /** the alarm as this instance last set it (null: none; undefined: not known, e.g. after a wake) */
  private alarmAt: number | null | undefined = undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const meter = (this.meter = debugCountsEnabled(env) ? CostMeter.of(ctx.id.toString()) : null);
    this.storage = meter ? meter.storage(ctx.storage) : ctx.storage;
    this.db = database(meter ? meter.d1(env.DB) : env.DB);
    this.limits = sessionSettings(env);
    this.store = new SessionStore(this.storage);
    const armAlarm = () => this.armAlarm();
    const notices = (this.notices = sessionNotices(env, (work) => ctx.waitUntil(work)));
    this.links = new AgentLinks(ctx, this.store);
    this.inbox = new AgentInbox(this.limits.admission);
    this.kept = new KeptWrites(this.store, this.db, armAlarm);
    // A power action left without the hypervisor's word, or a state written on our own: checked at once.
    this.ledger = new RequestLedger(this.store, this.db, this.limits, this.kept, armAlarm, notices, {
      transitionLeftOpen: (vmIds) => this.reconciler.askNow(this.links.current(), vmIds),
      verifyVm: (vmId) => this.reconciler.verify(this.links.current(), vmId),
    });
    this.liveness = new Liveness(this.store, this.db, this.limits, notices);
    this.reconciler = new Reconciler(this.store, this.db, this.limits, this.ledger, notices);
    this.follows = new FollowRelay(ctx, this.store, this.links, this.limits, armAlarm);
    this.consoles = new ConsoleRelay(ctx, this.store, this.links, this.db, this.limits, armAlarm, accessSettings(env));
    this.displays = new VncRelay(ctx, this.store, this.links, this.db, this.limits, armAlarm);
    this.metrics = new MetricsHistory(this.storage);
    this.metricBatches = new MetricBatches((payload, whole) => this.metrics.ingest(payload, Date.now(), whole));
    this.coalescer = new EventCoalescer(this.store, this.db, this.limits.events);
    // Pings are answered by the runtime without waking the object; their time is our liveness.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
  }

  // ---- links ------------------------------------------------------------------------------------

  /** The agent's upgrade, already authenticated by the Worker (which sets NODE_ID_HEADER), or a
   *  viewer's follow upgrade (FOLLOW_HEADERS), already authorized by the Worker. */
  async fetch(request: Request): Promise<Response> {
    this.meter?.wake("fetch");
    return this.meter ? this.meter.during(() => this.route(request)) : this.route(request);
  }

  private async route(request: Request): Promise<Response> {
    if (request.headers.has(FOLLOW_HEADERS.vmId)) return this.follows.acceptViewer(request);
    if (request.headers.has(CONSOLE_HEADERS.vmId)) return this.consoles.accept(request);
    const nodeId = request.headers.get(NODE_ID_HEADER);
    if (!nodeId || request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return Response.json(
        { success: false, error: { code: "bad_request", message: "expected an agent WebSocket upgrade" } },
        { status: 400 },
      );
    }
    const spread = Number(request.headers.get(RECONNECT_SPREAD_HEADER) ?? NaN);
    const { 0: client, 1: server } = new WebSocketPair();
    await this.openLink(nodeId, "socket", validSpread(spread), (att) => this.links.acceptSocket(server, att));
    return new Response(null, { status: 101, webSocket: client });
  }

  /** A long-poll from the agent, already authenticated by the Worker: without `connId` it opens a
   *  new link (answered with its welcome at once); with one, it waits for that link's frames. */
  async poll(nodeId: string, req: PollRequest, reconnectSpreadMs?: number): Promise<PollAnswer> {
    const waitMs = Math.min(req.waitMs ?? this.limits.longPollWaitMs, this.limits.longPollWaitMs);
    if (!req.connId) {
      const link = await this.openLink(nodeId, "poll", validSpread(reconnectSpreadMs), (att) =>
        this.links.acceptPoll(att),
      );
      return this.links.outboxFor(link.att.connId).take(undefined, 0);
    }
    const link = this.links.currentPoll(nodeId, req.connId);
    if (!link) return this.links.staleLink(req.connId);
    link.touch(Date.now());
    const answer = await this.links.outboxFor(req.connId).take(req.cursor, waitMs);
    // Answering is a sign of life too: an agent that died mid-poll is offline OFFLINE_AFTER_MS later.
    if (answer.ok && this.links.isCurrent(req.connId)) this.links.current()?.touch(Date.now());
    return answer;
  }

  /** Frames the agent posted on its long-poll link, each handled exactly as the same socket frame. */
  async receivePolled(nodeId: string, connId: string, frames: string[]): Promise<{ ok: true } | StaleLink> {
    const link = this.links.currentPoll(nodeId, connId);
    if (!link) return this.links.staleLink(connId);
    let handled = Promise.resolve();
    for (const frame of frames) handled = this.receive(link, frame);
    await handled;
    // A frame that ended the link (malformed, flood) is answered like any later use of it.
    return this.links.isCurrent(connId) ? { ok: true } : this.links.staleLink(connId);
  }

  /** Opens the node's new link, replacing the current one (socket or poll), and welcomes it. */
  private async openLink(
    nodeId: string,
    transport: "socket" | "poll",
    reconnectSpreadMs: number | undefined,
    accept: (att: AgentAttachment) => AgentLink,
  ) {
    const now = Date.now();
    // A newer connection for the node replaces the old one; what was sent on it can't be answered.
    await this.ledger.failAll({
      code: "agent_disconnected",
      message: "the agent connection was replaced before it answered",
    });
    // No await from here until the new link is stored: two racing connects can't both stay open.
    this.links.closeAll();
    const link = accept({
      kind: "agent",
      nodeId,
      connId: crypto.randomUUID(),
      connectedAt: now,
      lastMessageAt: now,
      clock: now,
      transport,
    });
    this.links.makeCurrent(link, now);
    this.inbox.refill(now);
    this.store.delete("agentFeatures"); // until this link's hello says them
    this.watch.linkChanged();
    const features = [...WIRE_FEATURES];
    link.send({
      type: "welcome",
      id: link.att.connId,
      payload: {
        nodeId,
        serverTime: now,
        heartbeatMs: HEARTBEAT_MS,
        reconnectSpreadMs,
        livenessHeartbeats: livenessHeartbeats(this.limits.offlineAfterMs, HEARTBEAT_MS),
        features,
      },
    });
    this.follows.resumeOn(link);
    this.reconciler.scheduleFrom(now);
    await this.liveness.online(link, now);
    await this.armAlarm();
    return link;
  }

  /** The current connection ended (closed, errored, dead or kicked): the node is offline and every
   *  request whose answer could only come over it fails now. */
  private async connectionGone(connId: string, error: AgentFailure, lastSign = Date.now()): Promise<void> {
    if (!this.links.isCurrent(connId)) return; // an older, replaced connection: the node is still online
    const nodeId = this.store.get("nodeId");
    this.links.forget(connId, error.message);
    if (this.store.get("watch")) this.store.delete("watch");
    this.watch.linkChanged();
    this.follows.nodeOffline();
    this.consoles.nodeOffline();
    this.displays.nodeOffline();
    // What the requests on this link fail with, then the kept writes (the last-known log is read
    // exactly when a node is offline), all in D1 before the node shows offline.
    await this.ledger.failAll(error);
    await this.kept.write();
    if (nodeId) await this.liveness.offline(nodeId, lastSign, error.message);
    await this.armAlarm();
  }

  /** Ends the agent's link from our side for a protocol fault: the node is offline until it reconnects. */
  private async dropLink(link: AgentLink, code: number, why: string): Promise<void> {
    this.links.close(link, code, why);
    await this.connectionGone(link.att.connId, { code: "agent_disconnected", message: `connection closed: ${why}` });
  }

  async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.meter?.wake("webSocketClose");
    const displayAtt = this.displays.displayOf(ws);
    if (displayAtt) return this.displays.socketGone(ws, displayAtt);
    const consoleAtt = this.consoles.consoleOf(ws);
    if (consoleAtt) return this.consoles.socketGone(ws, consoleAtt);
    const viewer = this.follows.viewerOf(ws);
    if (viewer) return this.follows.viewerGone(ws, viewer.vmId);
    const att = this.links.attachmentOf(ws);
    try {
      ws.close(code === 1005 || code === 1006 ? CLOSE.normal : code, reason);
    } catch {
      // the runtime already answered the close
    }
    if (att)
      await this.connectionGone(att.connId, {
        code: "agent_disconnected",
        message: "the agent disconnected before answering",
      });
  }

  async webSocketError(ws: WebSocket): Promise<void> {
    this.meter?.wake("webSocketError");
    const displayAtt = this.displays.displayOf(ws);
    if (displayAtt) return this.displays.socketGone(ws, displayAtt);
    const consoleAtt = this.consoles.consoleOf(ws);
    if (consoleAtt) return this.consoles.socketGone(ws, consoleAtt);
    const viewer = this.follows.viewerOf(ws);
    if (viewer) return this.follows.viewerGone(ws, viewer.vmId);
    const att = this.links.attachmentOf(ws);
    if (att)
      await this.connectionGone(att.connId, {
        code: "agent_disconnected",
        message: "the agent connection failed before answering",
      });
  }

  /** Close the node's link from the control plane (credential rotated: CLOSE.unauthorized; node
   *  deleted: CLOSE.nodeDeleted, which also forgets everything stored here). */
  async disconnect(code: number, reason: string, forget = false): Promise<void> {
    const current = this.links.current();
    if (current) {
      this.links.close(current, code, reason);
      await this.connectionGone(current.att.connId, { code: "node_offline", message: reason });
    }
    if (forget) {
      await this.ledger.failAll({ code: "node_offline", message: reason });
      await this.kept.write();
      await this.storage.deleteAlarm();
      this.alarmAt = null;
      await this.store.deleteAll();
      this.consoles.forgetStorage();
    }
  }

  // ---- liveness shard (liveness-watch.ts) ------------------------------------------------------

  /** The agent's liveness socket on a shard now watches the link `connId`: until it ends, this
   *  object sets no per-minute liveness alarm. False when that is not the node's current socket link. */
  async watchStarted(connId: string, watchId: string): Promise<boolean> {
    const link = this.links.current();
    if (!link || link.att.connId !== connId || link.att.transport === "poll") return false;
    this.store.put("watch", { connId, watchId });
    await this.armAlarm();
    return true;
  }

  /** The watch `watchId` ended: the agent closed its liveness socket, or (`lapsed`) the shard heard
   *  no ping on it for OFFLINE_AFTER_MS. The node's own link decides: silent too, it is offline now;
   *  else its own liveness alarm takes over. A watch already replaced or ended is ignored. */
  async watchEnded(watchId: string, lapsed: boolean): Promise<void> {
    if (this.store.get("watch")?.watchId !== watchId) return;
    this.store.delete("watch");
    const current = this.links.current();
    const now = Date.now();
    if (current && !(lapsed && (await this.checkLink(current, now)))) this.liveness.resume(current, now);
    await this.armAlarm();
  }

  /** For tests and diagnostics: answers ignored as unknown, duplicate or late. */
  async stats(): Promise<{
    ignoredAnswers: number;
    inFlight: number;
    connected: boolean;
    transport: "socket" | "poll" | null;
  }> {
    const link = this.links.current();
    const transport = link ? (link.att.transport ?? "socket") : null;
    return {
      ignoredAnswers: this.ledger.ignoredAnswers(),
      inFlight: this.ledger.all().length,
      connected: link !== null,
      transport,
    };
  }

  /** The debug counts of a local soak run: every in-memory collection of this object's rooms and of
   *  its isolate's modules, and the sockets and stored families it holds. Null unless
   *  QX_DEBUG_COUNTS is "1". */
  debugCounts(): Record<string, number> | null {
    if (!debugCountsEnabled(this.env)) return null;
    return {
      ...this.ledger.counts(),
      storeHeld: this.store.heldCount,
      metricSamplesHeld: this.metricBatches.heldSamples(),
      pollQueued: this.links.pollQueued,
      storedInFlight: this.store.all("inFlight").length,
      storedFollows: this.store.all("follow").length,
      storedQueryRows: this.store.all("queryRow").length,
      storedSnapshots: this.store.all("snapshot").length,
      ...this.consoles.debugCounts(),
      sockets: this.ctx.getWebSockets().length,
      ...Object.fromEntries(Object.entries(isolateCounts()).map(([k, v]) => [`isolate.${k}`, v])),
    };
  }

  /** A local bench's cost counts of this object (cost-meter.ts); null unless QX_DEBUG_COUNTS is "1". */
  costCounts(): (CostCounts & { sqliteBytes: number; history: { owedWrites: number; steadyBytes: number } }) | null {
    if (!this.meter) return null;
    const counts = this.meter.snapshot();
    // Modelled over the storage itself: the rows it reads are the bench's, not the node's.
    const history = new MetricsHistory(this.ctx.storage).costModel();
    return { ...counts, sqliteBytes: this.ctx.storage.sql.databaseSize, history };
  }

  /** The token these follows were opened with was revoked: they are closed. */
  closeFollowsOf(tokenId: string): Promise<number> {
    return this.follows.closeFollowsOf(tokenId);
  }

  /** Keeps a console ticket's hash (see console-relay.ts). */
  issueConsoleTicket(hash: string, ticket: ConsoleTicket) {
    if (ticket.type === "vnc") return this.displays.issueTicket(hash, ticket);
    return this.consoles.issueTicket(hash, ticket);
  }

  /** The principal's token was revoked or its role lowered: its consoles end with `revoked`. */
  async closeConsolesOf(principalId: string): Promise<number> {
    const displays = this.displays.closeConsolesOf(principalId);
    return displays + (await this.consoles.closeConsolesOf(principalId));
  }

  /** A VM's kept console output, readable whether or not the node is online. */
  consoleScrollback(vmId: string): { head: number; text: Uint8Array } {
    return this.consoles.scrollback(vmId);
  }

  /** Asks the connected agent for a full inventory (a VM was re-homed here); false when offline. */
  resync(): boolean {
    const link = this.links.current();
    link?.send({ type: "resync", id: crypto.randomUUID(), payload: {} });
    return link !== null;
  }

  /** Tells the connected agent to replace itself with the served bundle, if it knows how (feature `update`). */
  requestUpdate(update: AgentUpdatePayload): "sent" | "offline" | "unsupported" {
    const link = this.links.current();
    if (!link) return "offline";
    if (!(this.store.get("agentFeatures") ?? []).includes("update")) return "unsupported";
    link.send({ type: "agent.update", id: crypto.randomUUID(), payload: update });
    return "sent";
  }

  /** The features the connected agent announced (none while it is offline). */
  agentFeatures(): string[] {
    return this.links.current() ? (this.store.get("agentFeatures") ?? []) : [];
  }

  /** Checks a state we wrote on our own with the hypervisor now; false when offline (the next inventory does). */
  async verifyState(vmId: string): Promise<boolean> {
    const link = this.links.current();
    await this.reconciler.verify(link, vmId);
    return link !== null;
  }

  // ---- requests (RPC from the Worker) -----------------------------------------------------------

  /** Sends a power action; resolves once it is on the wire, or with `wait` once its outcome is known. */
  power(d: PowerDispatch): Promise<PowerOutcome> {
    return this.ledger.power(this.links.current(), d);
  }

  /** Asks the hypervisor for a VM's state and waits for the answer. */
  askState(d: StateDispatch): Promise<StateOutcome> {
    return this.ledger.query(this.links.current(), d);
  }

  /** A VM's metrics (null: the node's totals) over a range, from this object's storage; `watching`:
   *  the reader's chart is open, so the agent sends its samples as they are taken (metrics-watch.ts). */
  readMetrics(vmId: string | null, range: MetricRange, watching = false): MetricsAnswer {
    if (watching) this.watch.watched(this.links.current(), this.agentFeatures(), Date.now());
    return this.metrics.series(vmId, range);
  }

  /** Reads the last lines of a VM's log on the node and waits for them. */
  readLog(d: LogsDispatch): Promise<LogsOutcome> {
    return this.ledger.query(this.links.current(), d);
  }

  // ---- alarms: deadlines and liveness -------------------------------------------------------------

  /** One alarm for the earliest thing due: deadlines, follow acks, kept writes, liveness, the reconciler. */
  private async armAlarm(): Promise<void> {
    let due = Math.min(
      this.ledger.earliestDeadline(),
      this.follows.earliestDeadline(),
      this.consoles.earliestDeadline(),
      this.displays.earliestDeadline(),
      this.kept.dueAt() ?? Infinity,
      this.coalescer.dueAt() ?? Infinity,
    );
    if (this.store.get("conn")) {
      // A stored connection without its socket is looked at now (the sweep ends it).
      const link = this.links.current();
      const check = link ? await this.liveness.dueAt(link, () => this.storage.getAlarm()) : Date.now();
      due = Math.min(due, check, this.reconciler.dueAt() ?? Infinity);
    }
    const at = due === Infinity ? null : Math.max(due, Date.now() + 1);
    // Setting an alarm is a row written: not again for the time it is already set to.
    if (at === this.alarmAt) return;
    if (at === null) await this.storage.deleteAlarm();
    else await this.storage.setAlarm(at);
    this.alarmAt = at;
  }

  async alarm(): Promise<void> {
    this.meter?.wake("alarm");
    this.alarmAt = undefined; // it fired: no alarm is set now
    const run = async () => {
      try {
        await this.sweep();
      } finally {
        // Whatever failed (a D1 blip), keep the deadlines and liveness checks coming.
        await this.armAlarm();
      }
    };
    await (this.meter ? this.meter.during(run) : run());
  }

  private async sweep(): Promise<void> {
    const now = Date.now();
    if ((this.kept.dueAt() ?? Infinity) <= now) await this.kept.write();
    const nodeId = this.store.get("nodeId");
    if (nodeId && (this.coalescer.dueAt() ?? Infinity) <= now)
      await this.coalescer.flush(nodeId, `agent:${nodeId}`, now);
    await this.ledger.expireDue(now);
    this.follows.expireDue(now);
    this.consoles.expireDue(now);
    this.displays.expireDue(now);
    const current = this.links.current();
    const conn = this.store.get("conn");
    if (current) {
      if (!(await this.checkLink(current, now)) && this.reconciler.isDue(now))
        await this.reconciler.pass(current, true);
    } else if (conn) {
      // The socket vanished without a close event (e.g. the object was reset): treat as gone.
      await this.connectionGone(conn, { code: "agent_disconnected", message: "the agent connection was lost" });
    }
  }

  /** Looks at the link's last sign of life; true when it was too old and the node is now offline. */
  private async checkLink(current: AgentLink, now: number): Promise<boolean> {
    const dead = await this.liveness.check(current, now);
    if (dead === null) return false;
    this.links.close(current, CLOSE.dead, "no sign of life in time");
    await this.connectionGone(
      current.att.connId,
      { code: "node_offline", message: "the node stopped answering" },
      dead,
    );
    return true;
  }

  // ---- inbound frames ----------------------------------------------------------------------------

  async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.meter?.wake("webSocketMessage");
    const displayAtt = this.displays.displayOf(ws);
    if (displayAtt) return this.displays.onMessage(ws, displayAtt, message);
    const consoleAtt = this.consoles.consoleOf(ws);
    if (consoleAtt) {
      // A hello with a graphical console's ticket turns the socket into one (vnc-relay.ts).
      if (await this.displays.claims(ws, consoleAtt, message)) return;
      return this.consoles.onMessage(ws, consoleAtt, message);
    }
    // Viewers only listen; what they send is dropped (and never counts against the agent's budget).
    if (this.follows.viewerOf(ws)) return;
    // A link we closed (refused, replaced) may still deliver what was on its way: dropped unread.
    if (ws.readyState !== WebSocket.OPEN) return;
    const att = this.links.attachmentOf(ws);
    if (!att) return;
    // Not awaited: the runtime delivers the next message once this returns, and a flood must meet
    // admission as it arrives, not as fast as frames are handled (it would pile up unjudged, outside
    // any bound). The inbox keeps the order and never throws.
    const received = this.receive(this.links.socketLink(ws, att), message);
    this.ctx.waitUntil(this.meter ? this.meter.track(received) : received);
  }

  /** One frame from the agent, on either transport (see inbox.ts). */
  private receive(link: AgentLink, message: string | ArrayBuffer): Promise<void> {
    if (typeof message !== "string") return this.receiveBytes(link, message);
    const drop = (r: Refusal) => this.dropLink(link, r.code, r.why);
    return this.inbox.receive(
      message,
      (r) => this.refuse(link, r),
      (msg) => this.onFrame(link, msg),
      drop,
    );
  }

  /** A binary frame: console output (socket links only), with a budget of its own beside the text
   *  frames' (its bytes are bounded by each console's credit window). */
  private async receiveBytes(link: AgentLink, data: ArrayBuffer): Promise<void> {
    const refused = this.inbox.admitBinary(data.byteLength, Date.now());
    if (refused) {
      this.refuse(link, refused);
      return this.dropLink(link, refused.code, refused.why);
    }
    if (!this.links.isCurrent(link.att.connId)) return;
    this.links.heard(link, Date.now());
    if (this.displays.onAgentBytes(link, data)) return;
    if (this.consoles.onAgentBytes(link, data) !== "ok")
      await this.dropLink(link, CLOSE.protocolError, "malformed binary frame");
  }

  /** Closes the link at once; one over its node's budget also flags the node for admins. The link's
   *  end (connectionGone) follows in frame order. */
  private refuse(link: AgentLink, r: Refusal): void {
    if (r.code === CLOSE.overloaded && this.links.isCurrent(link.att.connId))
      this.ctx.waitUntil(flagOverloadedNode(this.env, link.att.nodeId, r.why));
    this.links.close(link, r.code, r.why);
  }

  /** VM state changes a report made, charged once it is applied: overspent, the link is ended. */
  private charge(link: AgentLink, vmsChanged: number): void {
    const refused = this.inbox.charge(vmsChanged);
    if (!refused) return;
    this.refuse(link, refused);
    this.ctx.waitUntil(this.dropLink(link, refused.code, refused.why));
  }

  /** Each agent frame goes to the room that owns it (frames.ts). */
  private onFrame(link: AgentLink, message: AgentMessage | null): Promise<void> {
    const {
      db,
      limits,
      store,
      links,
      ledger,
      liveness,
      reconciler,
      follows,
      consoles,
      displays,
      notices,
      metricBatches,
      coalescer,
    } = this;
    const rooms: FrameRooms = {
      consoles,
      displays,
      db,
      limits,
      store,
      links,
      ledger,
      liveness,
      reconciler,
      follows,
      notices,
      metrics: metricBatches,
      coalescer,
      charge: (l, n) => this.charge(l, n),
      dropLink: (l, code, why) => this.dropLink(l, code, why),
    };
    return onAgentFrame(rooms, link, message);
  }
}
