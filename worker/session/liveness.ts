// A node's liveness: connected/offline and its last sign of life in D1, and when the session next
// checks the agent. Pings are answered by the runtime without waking the object. An agent watched
// by a liveness shard (liveness-watch.ts: its second, ping-only socket) is checked by the shard,
// which tells this object when it falls silent and writes its lastSeenAt every LAST_SEEN_WRITE_MS;
// the object then wakes only for a rare check of its own (WATCHED_CHECK_INTERVALS). Any other link
// (an older agent, long-poll) is checked by this object about once per OFFLINE_AFTER_MS. The check
// itself stores nothing: its time follows from the link (every stored row is billed as written).
import { eq, sql } from "drizzle-orm";
import { WATCHED_CHECK_INTERVALS, type AgentMessage } from "../../protocol/wire.ts";
import type { SessionSettings } from "../config.ts";
import type { Database } from "../db/client.ts";
import { nodes } from "../db/schema.ts";
import type { AgentLink } from "./links.ts";
import type { SessionNotices } from "./notices.ts";
import type { SessionStore } from "./store.ts";

type HelloPayload = Extract<AgentMessage, { type: "hello" }>["payload"];

export class Liveness {
  private readonly store: SessionStore;
  private readonly db: Database;
  private readonly limits: SessionSettings;
  private readonly notices: SessionNotices;

  constructor(store: SessionStore, db: Database, limits: SessionSettings, notices: SessionNotices) {
    this.store = store;
    this.db = db;
    this.limits = limits;
    this.notices = notices;
  }

  /** the current link's next check (memory; an object built again after hibernating reads it back
   *  from its alarm, which is set no later than it) */
  private next: { connId: string; at: number } | null = null;

  /** When the link's next check is due. It stays put between checks, whatever else moves the alarm:
   *  the check is also what keeps lastSeenAt fresh. */
  async dueAt(link: AgentLink, alarmSet: () => Promise<number | null>): Promise<number> {
    // Watched: the shard reports a dead link and writes lastSeenAt; only the rare check of its own.
    if (this.watched(link))
      return (this.store.get("lastSeenWritten") ?? 0) + WATCHED_CHECK_INTERVALS * this.limits.lastSeenWriteMs;
    if (this.next?.connId !== link.att.connId) {
      const at = (await alarmSet()) ?? link.lastSign() + this.limits.offlineAfterMs + 1;
      if (this.next?.connId !== link.att.connId) this.next = { connId: link.att.connId, at };
    }
    return this.next.at;
  }

  /** Whether a liveness shard watches the link (the session then sets no per-minute check). */
  watched(link: AgentLink): boolean {
    return this.store.get("watch")?.connId === link.att.connId;
  }

  /** The shard stopped watching a live link: this object checks it again, from its last sign. */
  resume(link: AgentLink, now: number): void {
    this.next = { connId: link.att.connId, at: Math.max(link.lastSign() + this.limits.offlineAfterMs + 1, now + 1) };
  }

  /** A new link: the node is connected now. Its first check comes somewhere in the second half of
   *  OFFLINE_AFTER_MS: a fleet that (re)connects at once (a restart, a deploy) then does not wake all
   *  its objects in step. */
  async online(link: AgentLink, now: number): Promise<void> {
    const nodeId = link.att.nodeId;
    this.next = {
      connId: link.att.connId,
      at: now + Math.ceil(this.limits.offlineAfterMs * (0.5 + Math.random() / 2)),
    };
    await this.db.update(nodes).set({ connected: true, lastSeenAt: now, updatedAt: now }).where(eq(nodes.id, nodeId));
    this.notices.nodeLiveness(nodeId, true, "the node's agent connected");
    this.store.put("lastSeenWritten", now);
  }

  async hello(nodeId: string, p: HelloPayload, now: number): Promise<void> {
    await this.db
      .update(nodes)
      .set({
        hostname: p.hostname,
        agentVersion: p.agentVersion,
        libvirtVersion: p.libvirtVersion,
        protocolVersion: p.protocolVersion,
        lastSeenAt: now,
        updatedAt: now,
      })
      .where(eq(nodes.id, nodeId));
    this.store.put("lastSeenWritten", now);
  }

  /** Looks at the agent's last sign of life: the time of it when it is too old (the link is dead),
   *  else null, with the next check scheduled. */
  async check(current: AgentLink, now: number): Promise<number | null> {
    const lastSign = current.lastSign();
    if (now - lastSign > this.limits.offlineAfterMs) return lastSign;
    this.next = { connId: current.att.connId, at: lastSign + this.limits.offlineAfterMs + 1 };
    // Liveness reaches D1 every LAST_SEEN_WRITE_MS (not per heartbeat, not per check): the session
    // decides offline itself; the column is for showing and for a session gone silent.
    if (lastSign - (this.store.get("lastSeenWritten") ?? 0) >= this.limits.lastSeenWriteMs) {
      await this.db
        .update(nodes)
        .set({ lastSeenAt: lastSign })
        .where(
          sql`${nodes.id} = ${current.att.nodeId} AND (${nodes.lastSeenAt} IS NULL OR ${nodes.lastSeenAt} < ${lastSign})`,
        );
      this.store.put("lastSeenWritten", lastSign);
    }
    return null;
  }

  /** Offline with its true last sign of life (written coarsely while it was connected). */
  async offline(nodeId: string, lastSign: number, why: string): Promise<void> {
    await this.db
      .update(nodes)
      .set({
        connected: false,
        updatedAt: Date.now(),
        lastSeenAt: sql`max(coalesce(${nodes.lastSeenAt}, 0), ${lastSign})`,
      })
      .where(eq(nodes.id, nodeId));
    this.notices.nodeLiveness(nodeId, false, `the node went offline: ${why}`);
  }
}
