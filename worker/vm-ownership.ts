// Which node a VM belongs to: a UUID held by one node (or left on none when its node was deleted)
// is never taken by another node's report; such claims are flagged for an admin, who re-homes the
// VM. And the cap on VMs per node, whose excess is refused to the agent with an error frame.
import { and, count, eq, sql } from "drizzle-orm";
import type { ServerMessage } from "../protocol/wire.ts";
import type { Database } from "./db/client.ts";
import { runBatch, changes } from "./db/batch.ts";
import { nodes, vms } from "./db/schema.ts";
import { ApiError } from "./errors.ts";

/** Another node reported the UUID of a VM a node holds. */
export const UUID_CONFLICT = "uuid_conflict";
/** The VM's node was deleted: it stays on no node until an admin re-homes it. */
export const NODE_DELETED = "node_deleted";
/** Flags only an admin's re-home resolves (clear_flag would hide the question, not answer it). */
export const OWNERSHIP_FLAGS: readonly string[] = [UUID_CONFLICT, NODE_DELETED];
/** The node reported more VMs than it may hold; the excess was not stored. */
export const VM_CAP_EXCEEDED = "vm_cap_exceeded";

/** What became of a report: UUIDs another node (or no node) holds, which this node did not take;
 *  how many new VMs were stored; UUIDs not stored because the node is at its cap; VMs flagged
 *  running after a forced reset (with the flag's message). */
export type ReportOutcome = {
  claimed: string[];
  added: number;
  refused: string[];
  flagged: { vmId: string; message: string }[];
};

const nodeLabel = (n: { id: string; name: string }) => `${n.name} (${n.id})`;

/** A deleted node's VMs: on no node from now on, flagged, with an event each (statements for the
 *  delete's batch, which runs them before the node row goes). */
export function orphanStatements(node: { id: string; name: string }, actor: string, now: number) {
  const message = `its node ${nodeLabel(node)} was deleted; re-homed only by an admin (POST /api/vms/:id/rehome)`;
  return [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT id, ${now}, ${actor}, 'node_deleted', state, state, 'control_plane', ${`node ${node.name} was deleted; the VM stays on no node until an admin re-homes it`}
      FROM vms WHERE node_id = ${node.id}`,
    sql`UPDATE vms SET node_id = NULL, claimant_node_id = NULL, flag_code = ${NODE_DELETED}, flag_message = ${message}, flag_at = ${now}, updated_at = ${now}
      WHERE node_id = ${node.id}`,
  ];
}

/** After a report was stored: claims are logged, and VMs refused for the cap are said to the agent
 *  (an error frame naming the frame they came in) and flagged on the node. */
export async function settleReport(
  db: Database,
  send: (frame: ServerMessage) => void,
  nodeId: string,
  frameId: string,
  report: ReportOutcome,
  maxVms: number,
) {
  if (report.claimed.length)
    console.warn(
      `node ${nodeId} reported ${report.claimed.length} VM(s) it does not hold; flagged for an admin, not taken`,
    );
  if (report.refused.length === 0) {
    // Room again: the flag goes with the first new VMs that fit.
    if (report.added > 0) {
      await db
        .update(nodes)
        .set({ flagCode: null, flagMessage: null, flagAt: null })
        .where(and(eq(nodes.id, nodeId), eq(nodes.flagCode, VM_CAP_EXCEEDED)));
    }
    return;
  }
  const message =
    `this node may hold at most ${maxVms} VMs (MAX_VMS_PER_NODE): ${report.refused.length} reported VM(s) were not stored, ` +
    `e.g. ${report.refused.slice(0, 3).join(", ")}`;
  console.warn(`node ${nodeId}: ${message}`);
  await db
    .update(nodes)
    .set({ flagCode: VM_CAP_EXCEEDED, flagMessage: message, flagAt: Date.now() })
    .where(eq(nodes.id, nodeId));
  try {
    send({ type: "error", id: frameId, payload: { code: VM_CAP_EXCEEDED, message } });
  } catch {
    // the link is closing: the flag on the node says it all the same
  }
}

/** Puts the VM on `target` (an admin's decision): its claim and ownership flag cleared, an event
 *  naming both nodes. A transition begun on its old node no longer applies (its generation moves
 *  on and the state is left to the new node's next report). 409 when the VM changed meanwhile or
 *  the target holds as many VMs as it may. */
export async function rehomeVm(
  db: Database,
  vm: typeof vms.$inferSelect,
  target: { id: string; name: string },
  actor: string,
  maxVms: number,
  reason: string | null,
): Promise<void> {
  if (vm.nodeId !== target.id) {
    const held = await db.select({ n: count() }).from(vms).where(eq(vms.nodeId, target.id)).get();
    if ((held?.n ?? 0) >= maxVms)
      throw new ApiError(409, VM_CAP_EXCEEDED, `node ${target.name} holds ${held?.n} VMs, the most one node may hold`);
  }
  const from = vm.nodeId
    ? ((await db.select({ id: nodes.id, name: nodes.name }).from(nodes).where(eq(nodes.id, vm.nodeId)).get()) ?? {
        id: vm.nodeId,
        name: "?",
      })
    : null;
  const now = Date.now();
  const message = `re-homed from ${from ? `node ${nodeLabel(from)}` : "no node"} to node ${nodeLabel(target)}`;
  const sameAsRead = sql`id = ${vm.id} AND generation = ${vm.generation} AND node_id IS ${vm.nodeId}`;
  const [event, moved] = await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, reason)
      SELECT id, ${now}, ${actor}, 'rehomed', state, state, 'control_plane', ${message}, ${reason} FROM vms WHERE ${sameAsRead}`,
    sql`UPDATE vms SET node_id = ${target.id}, claimant_node_id = NULL,
        flag_code = CASE WHEN flag_code IN (${UUID_CONFLICT}, ${NODE_DELETED}) THEN NULL ELSE flag_code END,
        flag_message = CASE WHEN flag_code IN (${UUID_CONFLICT}, ${NODE_DELETED}) THEN NULL ELSE flag_message END,
        flag_at = CASE WHEN flag_code IN (${UUID_CONFLICT}, ${NODE_DELETED}) THEN NULL ELSE flag_at END,
        generation = generation + 1, transition_request_id = NULL, last_sync_id = NULL, updated_at = ${now}
      WHERE ${sameAsRead}`,
  ]);
  if (changes(moved) === 0 || changes(event) === 0)
    throw new ApiError(409, "conflict", `VM ${vm.name} changed while it was being re-homed; try again`);
}
