// LivenessWatch: one Durable Object per shard of the fleet, holding each watched agent's second,
// ping-only socket. The runtime answers the pings without waking it; one alarm per shard, only while
// it holds sockets, looks at every socket's last ping and tells the node's own object about a node
// silent for OFFLINE_AFTER_MS, and writes its live nodes' last signs of life to D1 every
// LAST_SEEN_WRITE_MS, all in one row of `liveness_seen` (a row a shard, not one a node; each node's
// row names its shard, and its lastSeenAt is read as the later of the two). A watched node's object
// then sets no alarm of its own but a rare safety check, so a fleet pays for a shard's alarms and
// writes, not one per node.
import { DurableObject } from "cloudflare:workers";
import { CLOSE, PING_FRAME, PONG_FRAME } from "../../protocol/wire.ts";
import { and, isNull, ne, or, sql } from "drizzle-orm";
import { sessionSettings } from "../config.ts";
import { database } from "../db/client.ts";
import { livenessSeen, nodes } from "../db/schema.ts";
import type { CostCounts } from "../cost-counts.ts";
import { CostMeter } from "../cost-meter.ts";
import { debugCountsEnabled } from "../debug-counts.ts";
import { nodeSession } from "./calls.ts";
import { NODE_ID_HEADER, WATCH_CONN_HEADER, WATCH_SHARD_HEADER } from "./headers.ts";

/** What a watch socket carries as its attachment: its node, the watch, when it opened, the shard's
 *  name, whether its node was told it lapsed, and the last sign written for it (its node's row names
 *  this shard from the first such write on). */
type Watched = {
  nodeId: string;
  watchId: string;
  openedAt: number;
  shard: string;
  told?: true;
  seenWrittenAt?: number;
};

/** The shard's alarm comes this many times per OFFLINE_AFTER_MS: a silent node is told about within
 *  OFFLINE_AFTER_MS and a quarter of it. */
const LOOKS_PER_OFFLINE_PERIOD = 4;

/** The shard a node's liveness socket goes to: a fleet of up to `nodesPerShard` nodes has one, a
 *  bigger one a shard per `nodesPerShard` nodes, each node's by a hash of its id. A fleet that grows
 *  past a boundary moves some nodes to a new shard at their next reconnect; a socket stays where it
 *  was opened, and its node's object knows it by its watch id, not by its shard. */
export function livenessShard(nodeId: string, fleetNodes: number, nodesPerShard: number): string {
  const shards = Math.max(1, Math.ceil(fleetNodes / nodesPerShard));
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < nodeId.length; i++) h = Math.imul(h ^ nodeId.charCodeAt(i), 0x01000193) >>> 0;
  return `liveness-${h % shards}`;
}

export class LivenessWatch extends DurableObject<Env> {
  private readonly offlineAfterMs: number;
  private readonly lastSeenWriteMs: number;
  /** a local bench's cost counts (QX_DEBUG_COUNTS only; see cost-meter.ts) */
  private readonly meter: CostMeter | null;
  private readonly storage: DurableObjectStorage;
  /** the alarm as this instance last set it (undefined: not known, e.g. after a wake) */
  private alarmAt: number | null | undefined = undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.meter = debugCountsEnabled(env) ? CostMeter.of(`watch:${ctx.id.toString()}`) : null;
    this.storage = this.meter ? this.meter.storage(ctx.storage) : ctx.storage;
    const settings = sessionSettings(env);
    this.offlineAfterMs = settings.offlineAfterMs;
    this.lastSeenWriteMs = settings.lastSeenWriteMs;
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
  }

  /** The agent's liveness upgrade, authenticated by the Worker (NODE_ID_HEADER) for the link named
   *  by WATCH_CONN_HEADER. */
  async fetch(request: Request): Promise<Response> {
    this.meter?.wake("fetch");
    return this.meter ? this.meter.during(() => this.accept(request)) : this.accept(request);
  }

  private async accept(request: Request): Promise<Response> {
    const nodeId = request.headers.get(NODE_ID_HEADER);
    const connId = request.headers.get(WATCH_CONN_HEADER);
    const shard = request.headers.get(WATCH_SHARD_HEADER);
    if (!nodeId || !connId || !shard || request.headers.get("upgrade")?.toLowerCase() !== "websocket")
      return refusal(400, "bad_request", "expected an agent's liveness WebSocket upgrade");
    const watchId = crypto.randomUUID();
    const now = Date.now();
    if (!(await nodeSession(this.env, nodeId).watchStarted(connId, watchId)))
      return refusal(
        409,
        "link_not_current",
        "conn is not the node's current WebSocket link; open the liveness socket after the link's welcome, with its id",
      );
    // One socket per node: an older one (a reconnect racing its own close) no longer speaks for it.
    for (const old of this.ctx.getWebSockets(nodeId))
      closeTold(old, CLOSE.replaced, "replaced by a newer liveness socket");
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [nodeId]);
    server.serializeAttachment({ nodeId, watchId, openedAt: now, shard } satisfies Watched);
    await this.arm();
    return new Response(null, { status: 101, webSocket: client });
  }

  async alarm(): Promise<void> {
    this.meter?.wake("alarm");
    this.alarmAt = null; // it fired: none is set now
    const run = async () => {
      try {
        await this.look();
      } finally {
        await this.arm();
      }
    };
    await (this.meter ? this.meter.during(run) : run());
  }

  /** Every socket silent past OFFLINE_AFTER_MS: its node's object is told (it decides by its own
   *  link's last sign: the agent may still be pinging there), then the socket is closed. One whose
   *  node could not be told stays, and is told at the next look. The others' lastSeenAt, once due. */
  private async look(): Promise<void> {
    const now = Date.now();
    const lapsed: { ws: WebSocket; att: Watched }[] = [];
    const live: { ws: WebSocket; att: Watched; at: number }[] = [];
    let due = false;
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue; // closing: told already
      const att = ws.deserializeAttachment() as Watched | null;
      if (!att) continue;
      const lastPing = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
      if (now - Math.max(lastPing, att.openedAt) > this.offlineAfterMs) lapsed.push({ ws, att });
      else {
        live.push({ ws, att, at: Math.max(lastPing, att.openedAt) });
        due ||= lastPing - (att.seenWrittenAt ?? att.openedAt) >= this.lastSeenWriteMs;
      }
    }
    if (due) await this.writeLastSeen(live);
    const told = await Promise.allSettled(
      lapsed.map(({ att }) => nodeSession(this.env, att.nodeId).watchEnded(att.watchId, true)),
    );
    for (const [i, t] of told.entries()) {
      if (t.status === "fulfilled") closeTold(lapsed[i].ws, CLOSE.dead, "no ping in time");
      else console.error(`liveness shard could not tell node ${lapsed[i].att.nodeId}`, t.reason);
    }
  }

  /** Writes every live node's last sign of life in the shard's one row (so all are written again
   *  together, once one is due), and has each node's row name this shard the first time (a row
   *  written only where it named none or another: its node's connect wrote a fresh lastSeenAt, which
   *  covers it until then), then remembers them on their sockets; a failed write is tried again at
   *  the next look. A node's row's own lastSeenAt may say later: readers take the later of the two. */
  private async writeLastSeen(live: { ws: WebSocket; att: Watched; at: number }[]): Promise<void> {
    if (!live.length) return;
    const seen: Record<string, number> = {};
    for (const { att, at } of live) seen[att.nodeId] = Math.max(seen[att.nodeId] ?? 0, at);
    const shard = live[0].att.shard;
    const db = database(this.env.DB);
    // One statement names the shard on every new socket's row, however many (a deploy reconnects
    // the shard's thousand nodes at once): their ids in one bound JSON parameter.
    const unnamed = [
      ...new Set(live.filter(({ att }) => att.seenWrittenAt === undefined).map(({ att }) => att.nodeId)),
    ];
    const written = db
      .insert(livenessSeen)
      .values({ shard, seen: JSON.stringify(seen), at: Date.now() })
      .onConflictDoUpdate({ target: livenessSeen.shard, set: { seen: sql`excluded.seen`, at: sql`excluded.at` } });
    try {
      if (unnamed.length === 0) await written;
      else
        await db.batch([
          written,
          db
            .update(nodes)
            .set({ livenessShard: shard })
            .where(
              and(
                sql`${nodes.id} IN (SELECT value FROM json_each(${JSON.stringify(unnamed)}))`,
                or(isNull(nodes.livenessShard), ne(nodes.livenessShard, shard)),
              ),
            ),
        ]);
    } catch (err) {
      console.error("liveness shard could not write its nodes' last signs of life", err);
      return;
    }
    for (const { ws, att, at } of live) ws.serializeAttachment({ ...att, seenWrittenAt: at } satisfies Watched);
  }

  /** The next look while any socket is held; none otherwise (an empty shard costs nothing). */
  private async arm(): Promise<void> {
    const held = this.openSockets() > 0;
    if (this.alarmAt === undefined) this.alarmAt = await this.storage.getAlarm();
    if (!held) {
      if (this.alarmAt !== null) await this.storage.deleteAlarm();
      this.alarmAt = null;
      return;
    }
    if (this.alarmAt !== null) return; // already coming
    this.alarmAt = Date.now() + Math.ceil(this.offlineAfterMs / LOOKS_PER_OFFLINE_PERIOD);
    await this.storage.setAlarm(this.alarmAt);
  }

  async webSocketMessage(ws: WebSocket): Promise<void> {
    // Only the exact PING_FRAME is expected, and the runtime answers it without waking us.
    this.meter?.wake("webSocketMessage");
    close(ws, CLOSE.protocolError, `only ${PING_FRAME} is expected on the liveness socket`);
    await this.ended(ws);
  }

  async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.meter?.wake("webSocketClose");
    close(ws, code === 1005 || code === 1006 ? CLOSE.normal : code, reason);
    await this.ended(ws);
  }

  async webSocketError(ws: WebSocket): Promise<void> {
    this.meter?.wake("webSocketError");
    await this.ended(ws);
  }

  /** A socket the agent closed (or broke): its node's object goes back to its own alarm. */
  private async ended(ws: WebSocket): Promise<void> {
    const att = ws.deserializeAttachment() as Watched | null;
    if (att && !att.told) await nodeSession(this.env, att.nodeId).watchEnded(att.watchId, false);
  }

  /** A local bench's cost counts of this shard; null unless QX_DEBUG_COUNTS is "1". */
  costCounts(): (CostCounts & { sockets: number }) | null {
    if (!this.meter) return null;
    return { ...this.meter.snapshot(), sockets: this.openSockets() };
  }

  /** Sockets still watched (one closed by us stays listed until its peer answers the close). */
  private openSockets(): number {
    return this.ctx.getWebSockets().filter((ws) => ws.readyState === WebSocket.OPEN).length;
  }
}

function refusal(status: 400 | 409, code: string, message: string): Response {
  return Response.json({ success: false, error: { code, message } }, { status });
}

/** Closes a socket whose node needs no word of it any more (told, or its watch replaced). */
function closeTold(ws: WebSocket, code: number, reason: string): void {
  const att = ws.deserializeAttachment() as Watched | null;
  if (att) ws.serializeAttachment({ ...att, told: true } satisfies Watched);
  close(ws, code, reason);
}

function close(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // closing already
  }
}
