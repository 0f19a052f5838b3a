// A node's liveness: connected/offline and its last sign of life in D1, and when the session next
// checks the agent. Pings are answered by the runtime without waking the object, so a live node's
// object wakes about once per OFFLINE_AFTER_MS to look at the latest ping's time.
import { eq, sql } from "drizzle-orm";
import type { AgentMessage } from "../../protocol/wire.ts";
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

  /** When the next check is due (while connected). */
  dueAt(): number {
    return this.store.get("livenessAt") ?? Date.now() + this.limits.offlineAfterMs;
  }

  /** A new link: the node is connected now. */
  async online(nodeId: string, now: number): Promise<void> {
    await this.db.update(nodes).set({ connected: true, lastSeenAt: now, updatedAt: now }).where(eq(nodes.id, nodeId));
    this.notices.nodeLiveness(nodeId, true, "the node's agent connected");
    this.store.put("lastSeenWritten", now);
    // The first check comes somewhere in the second half of OFFLINE_AFTER_MS: a fleet that
    // (re)connects at once (a restart, a deploy) then does not wake all its objects in step.
    this.store.put("livenessAt", now + Math.ceil(this.limits.offlineAfterMs * (0.5 + Math.random() / 2)));
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
    this.store.put("livenessAt", lastSign + this.limits.offlineAfterMs + 1);
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
