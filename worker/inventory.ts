// Agent inventory -> D1: upsert a node's VMs by libvirt UUID, only ever for that node, and never
// taking a UUID another node (or no node) holds.
// Each chunk travels as ONE bound JSON parameter expanded with json_each, so a 500-VM chunk costs
// one batch (never near D1's 100 bound parameters) and a 5,000-domain host syncs in ten.
import { sql, type SQL } from "drizzle-orm";
import type { VmInfo } from "../protocol/wire.ts";
import type { Database } from "./db/client.ts";
import { changes, runBatch } from "./db/batch.ts";
import { vms } from "./db/schema.ts";
import { NODE_DELETED, UUID_CONFLICT, type ReportOutcome } from "./vm-ownership.ts";

const rowsOf = (list: VmInfo[]) => {
  // One row per UUID (the last report wins), UUIDs lower-cased as the primary key is.
  const byId = new Map<string, VmInfo>();
  for (const v of list) byId.set(v.uuid.toLowerCase(), v);
  return JSON.stringify(
    [...byId].map(([id, v]) => ({
      id,
      name: v.name,
      state: v.state,
      libvirtState: v.libvirtState,
      vcpus: v.vcpus,
      memoryMiB: v.memoryMiB,
    })),
  );
};

/** Reported states that mean the domain is alive: after a forced reset to STOPPED, that is worth a flag. */
const ALIVE = sql`('RUNNING', 'PAUSED')`;
/** Reported states that settle a forced reset one way or the other (a transitional or unknown one does not). */
const SETTLED = sql`('RUNNING', 'PAUSED', 'STOPPED', 'SUSPENDED', 'ERROR')`;
export const RUNNING_AFTER_FORCED_RESET = "running_after_forced_reset";

/** The reported rows. Joined to vms with CROSS JOIN, which keeps them the outer loop: a plain JOIN
 *  filtered on `v.node_id = ?` lets SQLite walk all of the node's VMs by that index and scan the
 *  reported rows for each (5,000 x 500 per chunk). */
const reported = (json: string) => sql`(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.name') AS name,
  json_extract(value, '$.state') AS state, json_extract(value, '$.libvirtState') AS libvirt_state,
  json_extract(value, '$.vcpus') AS vcpus, json_extract(value, '$.memoryMiB') AS memory_mib FROM json_each(${json}))`;

/** Upserts reported VMs for `nodeId`. A UUID held by another node, or by none (its node was
 *  deleted), is never taken: the VM is flagged (`uuid_conflict` naming both nodes, or
 *  `node_deleted` naming the reporter) with one event per new claimant, for an admin to re-home.
 *  New VMs are stored while the node holds fewer than `maxVms`; the rest come back in `refused`.
 *  The state is taken only when no control-plane transition holds the VM; libvirt_state always.
 *  `syncId` stamps the rows of a full sync (null for `vm.changed`).
 *  A VM force-reset to STOPPED that the host reports alive is flagged `running_after_forced_reset`
 *  for the operator (never stopped by us): its state follows the hypervisor, an event says so. */
export async function upsertReportedVms(
  db: Database,
  nodeId: string,
  list: VmInfo[],
  syncId: string | null,
  actor: string,
  maxVms: number,
  muted: readonly string[] = [],
): Promise<ReportOutcome & EventsWritten> {
  if (list.length === 0) return { claimed: [], added: 0, refused: [], flagged: [], changed: [], recorded: [] };
  const json = rowsOf(list);
  const quiet = JSON.stringify(muted);
  const now = Date.now();
  // In the upsert's SET, `vms.*` is the row before the update: the flag sees the forced reset it
  // settles. An ownership flag outranks it (it stays until an admin re-homes the VM).
  const flagNow = sql`vms.forced_reset_at IS NOT NULL AND vms.transition_request_id IS NULL AND excluded.state IN ${ALIVE}
    AND (vms.flag_code IS NULL OR vms.flag_code = ${RUNNING_AFTER_FORCED_RESET})`;
  const newClaim = sql`(v.node_id IS NULL OR v.node_id != ${nodeId}) AND (v.claimant_node_id IS NULL OR v.claimant_node_id != ${nodeId})`;
  const reporter = sql`(SELECT name || ' (' || id || ')' FROM nodes WHERE id = ${nodeId})`;
  const holder = sql`coalesce((SELECT name || ' (' || id || ')' FROM nodes WHERE nodes.id = v.node_id), v.node_id)`;
  const results = await runBatch(db, [
    sql`SELECT v.id FROM ${reported(json)} r CROSS JOIN vms v ON v.id = r.id WHERE v.node_id IS NULL OR v.node_id != ${nodeId}`,
    // A claim is recorded once per claimant: the event first (it reads the claimant before the flag sets it).
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT v.id, ${now}, ${actor}, 'uuid_conflict', v.state, v.state, 'agent',
        CASE WHEN v.node_id IS NULL
          THEN 'node ' || ${reporter} || ' reports this UUID, but the VM is on no node (its node was deleted): not adopted; an admin re-homes it'
          ELSE 'node ' || ${reporter} || ' reports this UUID, held by node ' || ${holder} || ': not taken over; an admin re-homes it to the right node' END
      FROM ${reported(json)} r CROSS JOIN vms v ON v.id = r.id WHERE ${newClaim}`,
    sql`UPDATE vms AS v SET
        claimant_node_id = ${nodeId},
        flag_code = CASE WHEN v.node_id IS NULL THEN ${NODE_DELETED} ELSE ${UUID_CONFLICT} END,
        flag_message = CASE WHEN v.node_id IS NULL
          THEN coalesce(CASE WHEN v.flag_code = ${NODE_DELETED} THEN v.flag_message END, 'its node was deleted') || '; node ' || ${reporter} || ' reports this UUID'
          ELSE 'UUID held by node ' || ${holder} || ' is also reported by node ' || ${reporter} || ': not taken over; an admin re-homes it' END,
        flag_at = ${now},
        updated_at = ${now}
      WHERE v.id IN (SELECT id FROM ${reported(json)}) AND ${newClaim}`,
    // Events first: they compare what is stored with what is reported, before the upsert changes it.
    // Every change is returned for the session's count; a muted VM's (flapping) gets no event of its own.
    sql`SELECT r.id, v.state AS fromState FROM ${reported(json)} r CROSS JOIN vms v ON v.id = r.id
      WHERE v.node_id = ${nodeId} AND (v.missing = 1 OR (v.transition_request_id IS NULL AND v.state != r.state))`,
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT r.id, ${now}, ${actor},
        CASE WHEN v.missing = 1 THEN 'reappeared' ELSE 'state_changed' END,
        v.state,
        CASE WHEN v.transition_request_id IS NULL THEN r.state ELSE v.state END,
        'agent',
        CASE WHEN v.missing = 1 THEN 'the host reports this domain again' ELSE 'libvirt state ' || r.libvirt_state END
      FROM ${reported(json)} r CROSS JOIN vms v ON v.id = r.id
      WHERE v.node_id = ${nodeId} AND (v.missing = 1 OR (v.transition_request_id IS NULL AND v.state != r.state))
        AND r.id NOT IN (SELECT value FROM json_each(${quiet}))
      RETURNING vm_id AS id`,
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, expected_state, observed_state)
      SELECT v.id, ${now}, ${actor}, 'flagged', v.state, r.state, 'agent',
        'force-reset to STOPPED, but the hypervisor reports it ' || r.state || ' (libvirt ' || r.libvirt_state ||
        '); left as it is, not stopped by the control plane: check the VM, then clear the flag',
        v.state, r.state
      FROM ${reported(json)} r CROSS JOIN vms v ON v.id = r.id
      WHERE v.node_id = ${nodeId} AND v.forced_reset_at IS NOT NULL AND v.transition_request_id IS NULL AND r.state IN ${ALIVE}
        AND (v.flag_code IS NULL OR v.flag_code = ${RUNNING_AFTER_FORCED_RESET})
      RETURNING vm_id AS vmId, message`,
    // This node's VMs: updated.
    sql`INSERT INTO vms (id, name, node_id, state, libvirt_state, vcpus, memory_mib, state_updated_at, created_at, updated_at, last_sync_id)
      SELECT r.id, r.name, ${nodeId}, r.state, r.libvirt_state, r.vcpus, r.memory_mib, ${now}, ${now}, ${now}, ${syncId}
      FROM ${reported(json)} r WHERE EXISTS (SELECT 1 FROM vms v WHERE v.id = r.id AND v.node_id = ${nodeId})
      ON CONFLICT (id) DO UPDATE SET
        name = excluded.name,
        libvirt_state = excluded.libvirt_state,
        vcpus = excluded.vcpus,
        memory_mib = excluded.memory_mib,
        missing = 0,
        missing_since = NULL,
        last_sync_id = COALESCE(excluded.last_sync_id, vms.last_sync_id),
        state_updated_at = CASE WHEN vms.transition_request_id IS NULL AND vms.state != excluded.state THEN ${now} ELSE vms.state_updated_at END,
        state = CASE WHEN vms.transition_request_id IS NULL THEN excluded.state ELSE vms.state END,
        flag_code = CASE WHEN ${flagNow} THEN ${RUNNING_AFTER_FORCED_RESET} ELSE vms.flag_code END,
        flag_message = CASE WHEN ${flagNow} THEN 'force-reset to STOPPED, but the hypervisor reports it ' || excluded.state || ' (libvirt ' ||
          excluded.libvirt_state || ')' ELSE vms.flag_message END,
        flag_at = CASE WHEN ${flagNow} THEN ${now} ELSE vms.flag_at END,
        forced_reset_at = CASE WHEN vms.transition_request_id IS NULL AND excluded.state IN ${SETTLED} THEN NULL ELSE vms.forced_reset_at END,
        updated_at = ${now}
      WHERE vms.node_id = ${nodeId}`,
    // New UUIDs: stored while the node holds fewer than maxVms (a negative LIMIT would mean none).
    sql`INSERT INTO vms (id, name, node_id, state, libvirt_state, vcpus, memory_mib, state_updated_at, created_at, updated_at, last_sync_id)
      SELECT r.id, r.name, ${nodeId}, r.state, r.libvirt_state, r.vcpus, r.memory_mib, ${now}, ${now}, ${now}, ${syncId}
      FROM ${reported(json)} r WHERE NOT EXISTS (SELECT 1 FROM vms v WHERE v.id = r.id)
      LIMIT max(0, ${maxVms} - (SELECT count(*) FROM vms WHERE node_id = ${nodeId}))`,
    // ...each with its first event (a VM stored just now has none yet).
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT v.id, ${now}, ${actor}, 'discovered', NULL, v.state, 'agent', 'reported by the agent'
      FROM ${reported(json)} r CROSS JOIN vms v ON v.id = r.id
      WHERE v.node_id = ${nodeId} AND v.created_at = ${now} AND NOT EXISTS (SELECT 1 FROM vm_events e WHERE e.vm_id = v.id)`,
    sql`SELECT r.id FROM ${reported(json)} r WHERE NOT EXISTS (SELECT 1 FROM vms v WHERE v.id = r.id)`,
  ]);
  const ids = (r: D1Result | undefined) => ((r?.results ?? []) as { id: string }[]).map((row) => row.id);
  const flagged = (results[5]?.results ?? []) as { vmId: string; message: string }[];
  return {
    claimed: ids(results[0]),
    added: changes(results[7]),
    refused: ids(results[9]),
    flagged,
    changed: (results[3]?.results ?? []) as StateChange[],
    recorded: ids(results[4]),
  };
}

/** A reported change of a VM's state (or presence), with the state it had before. */
export type StateChange = { id: string; fromState: string };
/** The state changes a report made, and those of them that got an event of their own (a muted VM's
 *  did not: the session's event coalescer counts them into one summary event). */
export type EventsWritten = { changed: StateChange[]; recorded: string[] };

/** Marks `target` VMs missing with an event each (none for a muted VM); returns what changed. */
async function markMissing(db: Database, target: SQL, actor: string, muted: readonly string[]): Promise<EventsWritten> {
  const now = Date.now();
  const quiet = JSON.stringify(muted);
  const [event, update] = await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT id, ${now}, ${actor}, 'missing', state, state, 'agent', 'the host no longer reports this domain' FROM vms
      WHERE ${target} AND id NOT IN (SELECT value FROM json_each(${quiet}))
      RETURNING vm_id AS id`,
    sql`UPDATE vms SET missing = 1, missing_since = ${now}, updated_at = ${now} WHERE ${target} RETURNING id, state AS fromState`,
  ]);
  const rows = <T>(r: D1Result | undefined) => (r?.results ?? []) as T[];
  return { changed: rows<StateChange>(update), recorded: rows<{ id: string }>(event).map((r) => r.id) };
}

/** After a completed full sync: the node's VMs it did not report are marked missing (kept). */
export function markUnreportedMissing(
  db: Database,
  nodeId: string,
  syncId: string,
  actor: string,
  muted: readonly string[] = [],
) {
  const unreported = sql`node_id = ${nodeId} AND missing = 0 AND (last_sync_id IS NULL OR last_sync_id != ${syncId})`;
  return markMissing(db, unreported, actor, muted);
}

/** `vm.changed.removed`: those of this node's VMs are marked missing. */
export async function markRemoved(
  db: Database,
  nodeId: string,
  uuids: string[],
  actor: string,
  muted: readonly string[] = [],
): Promise<EventsWritten> {
  if (uuids.length === 0) return { changed: [], recorded: [] };
  const ids = JSON.stringify(uuids.map((u) => u.toLowerCase()));
  const target = sql`node_id = ${nodeId} AND missing = 0 AND id IN (SELECT value FROM json_each(${ids}))`;
  return markMissing(db, target, actor, muted);
}

/** A state the control plane wrote on its own, checked with the hypervisor: the VM's answer is
 *  applied exactly as the agent's report of it would be (its state when no transition holds it, and
 *  `running_after_forced_reset` when a forced reset to STOPPED meets a live domain). False when the
 *  VM is not this node's any more (nothing written). */
export async function applyObservedState(
  db: Database,
  nodeId: string,
  vmId: string,
  observed: { state: VmInfo["state"]; libvirtState: VmInfo["libvirtState"] },
  actor: string,
  maxVms: number,
): Promise<ReportOutcome | null> {
  const row = await db
    .select({ name: vms.name, vcpus: vms.vcpus, memoryMiB: vms.memoryMiB })
    .from(vms)
    .where(sql`${vms.id} = ${vmId} AND ${vms.nodeId} = ${nodeId} AND ${vms.missing} = 0`)
    .get();
  if (!row) return null;
  const info: VmInfo = { uuid: vmId, ...row, ...observed };
  return upsertReportedVms(db, nodeId, [info], null, actor, maxVms);
}

/** After a completed scoped inventory (the answer to a scoped resync): the node's VMs inside the
 *  scope that it did not report are marked missing; VMs outside the scope are left alone. */
export async function markUnreportedMissingInScope(
  db: Database,
  nodeId: string,
  syncId: string,
  scope: { vmIds?: string[]; buckets?: string[] },
  actor: string,
  muted: readonly string[] = [],
) {
  const ids = JSON.stringify((scope.vmIds ?? []).map((u) => u.toLowerCase()));
  const buckets = JSON.stringify(scope.buckets ?? []);
  const unreported = sql`node_id = ${nodeId} AND missing = 0 AND (last_sync_id IS NULL OR last_sync_id != ${syncId})
    AND (id IN (SELECT value FROM json_each(${ids})) OR substr(id, 1, 1) IN (SELECT value FROM json_each(${buckets})))`;
  return markMissing(db, unreported, actor, muted);
}
