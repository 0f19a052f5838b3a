// Agent inventory -> D1: upsert a node's VMs by libvirt UUID, only ever for that node.
// Each chunk travels as ONE bound JSON parameter expanded with json_each, so a 500-VM chunk costs
// three statements (never near D1's 100 bound parameters) and a 5,000-domain host syncs in ~30.
import { sql } from "drizzle-orm";
import type { VmInfo } from "../protocol/wire.ts";
import type { Database } from "./db/client.ts";
import { runBatch } from "./db/batch.ts";

const rowsOf = (list: VmInfo[]) => {
  // One row per UUID (the last report wins), UUIDs lower-cased as the primary key is.
  const byId = new Map<string, VmInfo>();
  for (const v of list) byId.set(v.uuid.toLowerCase(), v);
  return JSON.stringify(
    [...byId].map(([id, v]) => ({ id, name: v.name, state: v.state, libvirtState: v.libvirtState, vcpus: v.vcpus, memoryMiB: v.memoryMiB })),
  );
};

/** Reported states that mean the domain is alive: after a forced reset to STOPPED, that is worth a flag. */
const ALIVE = sql`('RUNNING', 'PAUSED')`;
/** Reported states that settle a forced reset one way or the other (a transitional or unknown one does not). */
const SETTLED = sql`('RUNNING', 'PAUSED', 'STOPPED', 'SUSPENDED', 'ERROR')`;
export const RUNNING_AFTER_FORCED_RESET = "running_after_forced_reset";

const reported = (json: string) => sql`(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.name') AS name,
  json_extract(value, '$.state') AS state, json_extract(value, '$.libvirtState') AS libvirt_state,
  json_extract(value, '$.vcpus') AS vcpus, json_extract(value, '$.memoryMiB') AS memory_mib FROM json_each(${json}))`;

/** Upserts reported VMs for `nodeId`. A UUID that belongs to another node is left alone (isolation:
 *  an agent can never move or overwrite another node's VM) and counted in `foreign`; a VM on no node
 *  (its node was deleted) is adopted. The state is
 *  taken only when no control-plane transition holds the VM; libvirt_state always. `syncId` stamps
 *  the rows of a full sync (null for `vm.changed`).
 *  A VM force-reset to STOPPED that the host reports alive is flagged `running_after_forced_reset`
 *  for the operator (never stopped by us): its state follows the hypervisor, an event says so. */
export async function upsertReportedVms(db: Database, nodeId: string, list: VmInfo[], syncId: string | null, actor: string) {
  if (list.length === 0) return { foreign: [] as string[], flagged: [] as { vmId: string; message: string }[] };
  const json = rowsOf(list);
  const now = Date.now();
  // In the upsert's SET, `vms.*` is the row before the update: the flag sees the forced reset it settles.
  const flagNow = sql`vms.forced_reset_at IS NOT NULL AND vms.transition_request_id IS NULL AND excluded.state IN ${ALIVE}`;
  const [foreign, , flagged] = await runBatch(db, [
    sql`SELECT v.id FROM vms v JOIN ${reported(json)} r ON r.id = v.id
      WHERE v.node_id IS NOT NULL AND v.node_id != ${nodeId}`,
    // Events first: they compare what is stored with what is reported, before the upsert changes it.
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT r.id, ${now}, ${actor},
        CASE WHEN v.id IS NULL THEN 'discovered' WHEN v.node_id IS NULL THEN 'adopted' WHEN v.missing = 1 THEN 'reappeared'
             ELSE 'state_changed' END,
        v.state,
        CASE WHEN v.transition_request_id IS NULL THEN r.state ELSE v.state END,
        'agent',
        CASE WHEN v.id IS NULL THEN 'reported by the agent' WHEN v.node_id IS NULL THEN 'a VM on no node, now reported by this node'
             WHEN v.missing = 1 THEN 'the host reports this domain again' ELSE 'libvirt state ' || r.libvirt_state END
      FROM ${reported(json)} r LEFT JOIN vms v ON v.id = r.id
      WHERE v.id IS NULL
         OR ((v.node_id = ${nodeId} OR v.node_id IS NULL)
             AND (v.missing = 1 OR v.node_id IS NULL OR (v.transition_request_id IS NULL AND v.state != r.state)))`,
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, expected_state, observed_state)
      SELECT v.id, ${now}, ${actor}, 'flagged', v.state, r.state, 'agent',
        'force-reset to STOPPED, but the hypervisor reports it ' || r.state || ' (libvirt ' || r.libvirt_state ||
        '); left as it is, not stopped by the control plane: check the VM, then clear the flag',
        v.state, r.state
      FROM ${reported(json)} r JOIN vms v ON v.id = r.id
      WHERE (v.node_id = ${nodeId} OR v.node_id IS NULL) AND v.forced_reset_at IS NOT NULL AND v.transition_request_id IS NULL AND r.state IN ${ALIVE}
      RETURNING vm_id AS vmId, message`,
    sql`INSERT INTO vms (id, name, node_id, state, libvirt_state, vcpus, memory_mib, state_updated_at, created_at, updated_at, last_sync_id)
      SELECT r.id, r.name, ${nodeId}, r.state, r.libvirt_state, r.vcpus, r.memory_mib, ${now}, ${now}, ${now}, ${syncId}
      FROM ${reported(json)} r WHERE true
      ON CONFLICT (id) DO UPDATE SET
        name = excluded.name,
        node_id = ${nodeId},
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
      WHERE vms.node_id = ${nodeId} OR vms.node_id IS NULL`,
  ]);
  return { foreign: (foreign!.results as { id: string }[]).map((r) => r.id), flagged: flagged!.results as { vmId: string; message: string }[] };
}

/** After a completed full sync: the node's VMs it did not report are marked missing (kept). */
export async function markUnreportedMissing(db: Database, nodeId: string, syncId: string, actor: string) {
  const now = Date.now();
  const unreported = sql`node_id = ${nodeId} AND missing = 0 AND (last_sync_id IS NULL OR last_sync_id != ${syncId})`;
  await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT id, ${now}, ${actor}, 'missing', state, state, 'agent', 'the host no longer reports this domain' FROM vms WHERE ${unreported}`,
    sql`UPDATE vms SET missing = 1, missing_since = ${now}, updated_at = ${now} WHERE ${unreported}`,
  ]);
}

/** `vm.changed.removed`: those of this node's VMs are marked missing. */
export async function markRemoved(db: Database, nodeId: string, uuids: string[], actor: string) {
  if (uuids.length === 0) return;
  const now = Date.now();
  const ids = JSON.stringify(uuids.map((u) => u.toLowerCase()));
  const target = sql`node_id = ${nodeId} AND missing = 0 AND id IN (SELECT value FROM json_each(${ids}))`;
  await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT id, ${now}, ${actor}, 'missing', state, state, 'agent', 'the host no longer reports this domain' FROM vms WHERE ${target}`,
    sql`UPDATE vms SET missing = 1, missing_since = ${now}, updated_at = ${now} WHERE ${target}`,
  ]);
}
