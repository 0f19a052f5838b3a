// D1 rows -> the REST shapes of protocol/rest.ts (times as ISO 8601).
import { roleRank, type Role } from "../protocol/api.ts";
import type { NodeEventView, NodeView, RequestView, VmEventView, VmView } from "../protocol/rest.ts";
import type { VmState } from "../protocol/wire.ts";
import { getTableColumns, sql } from "drizzle-orm";
import { nodes, type nodeEvents, type requests, type vmEvents, type VmRecord } from "./db/schema.ts";

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));

/** A node's row with its last sign of life as its liveness shard wrote it (null: none), which a
 *  watched node's own `last_seen_at` is not kept up with (the shard writes one row for all its nodes). */
type NodeRow = typeof nodes.$inferSelect & { shardSeenAt?: number | null };

/** The columns to select a node by for nodeView: its row and its shard's word on it. (Written out in
 *  full: drizzle renders a column of the outer table unqualified, which the subquery would misread.) */
export const nodeColumns = {
  ...getTableColumns(nodes),
  shardSeenAt: sql<
    number | null
  >`(SELECT json_extract(s.seen, '$."' || "nodes"."id" || '"') FROM liveness_seen s WHERE s.shard = "nodes"."liveness_shard")`,
};

export function vmView(v: VmRecord): VmView {
  return {
    id: v.id,
    name: v.name,
    state: v.state as VmState,
    node_id: v.nodeId,
    vcpus: v.vcpus,
    memoryMiB: v.memoryMiB,
    stateUpdatedAt: iso(v.stateUpdatedAt),
    updatedAt: iso(v.updatedAt),
    missing: v.missing,
    flag: v.flagCode ? { code: v.flagCode, message: v.flagMessage ?? "", at: iso(v.flagAt ?? v.updatedAt) } : null,
    libvirtState: v.libvirtState,
  };
}

/** `connected` is also false when the last sign of life in D1 (the node's row's or its liveness
 *  shard's, the later) is older than `staleAfterMs`
 *  (SessionSettings.nodeStaleAfterMs), even if the node's Durable Object has not said so (it may
 *  be gone with its host). */
export function nodeView(n: NodeRow, vmCount: number, staleAfterMs: number, now = Date.now()): NodeView {
  const shard = n.shardSeenAt ?? null;
  const lastSeenAt = shard !== null && shard > (n.lastSeenAt ?? 0) ? shard : n.lastSeenAt;
  const fresh = lastSeenAt !== null && now - lastSeenAt <= staleAfterMs;
  return {
    id: n.id,
    name: n.name,
    connected: n.connected && fresh,
    lastSeenAt: isoOrNull(lastSeenAt),
    hostname: n.hostname,
    agentVersion: n.agentVersion,
    libvirtVersion: n.libvirtVersion,
    vmCount,
    flag: n.flagCode ? { code: n.flagCode, message: n.flagMessage ?? "", at: iso(n.flagAt ?? n.updatedAt) } : null,
  };
}

export function requestView(r: typeof requests.$inferSelect): RequestView {
  return {
    id: r.id,
    kind: r.kind,
    vm_id: r.vmId,
    node_id: r.nodeId,
    status: r.status as RequestView["status"],
    error: r.error ? (JSON.parse(r.error) as RequestView["error"]) : null,
    createdAt: iso(r.createdAt),
    finishedAt: isoOrNull(r.finishedAt),
  };
}

/** An event as `role` may see it: log text is for operators and admins, so a viewer's events carry
 *  no excerpt at all. */
export function eventView(e: typeof vmEvents.$inferSelect, role: Role): VmEventView {
  const view: VmEventView = {
    at: iso(e.at),
    actor: e.actor,
    action: e.action,
    fromState: e.fromState as VmState | null,
    toState: e.toState as VmState | null,
    source: e.source,
    message: e.message,
    expectedState: e.expectedState as VmState | null,
    observedState: e.observedState as VmState | null,
    reason: e.reason,
  };
  if (roleRank[role] >= roleRank.operator) view.logExcerpt = e.logExcerpt;
  if (e.action === "console.opened") view.type = e.consoleType === "vnc" ? "vnc" : "serial";
  return view;
}

export function nodeEventView(e: typeof nodeEvents.$inferSelect): NodeEventView {
  return {
    at: iso(e.at),
    actor: e.actor,
    action: e.action,
    fromVersion: e.fromVersion,
    toVersion: e.toVersion,
    message: e.message,
  };
}
