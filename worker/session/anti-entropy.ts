// Anti-entropy: the agent's digest of its whole inventory against the node's records in D1 (one
// read of the node's rows), and what to do about a difference: a scoped resync of the differing
// buckets, and an immediate look at VMs left in a transition with no request in flight.
import { sql } from "drizzle-orm";
import { digestBucket, differingBuckets, inventoryDigest, type InventoryDigest } from "../../protocol/digest.ts";
import { TRANSITIONAL_STATES } from "../../protocol/wire.ts";
import type { Database } from "../db/client.ts";
import { vms } from "../db/schema.ts";

/** What a digest comparison calls for. `resync`: buckets whose records differ from the host and can
 *  be settled by a report (none holds a VM whose power action is still in flight: its record
 *  differs from the host on purpose until the action ends). `transitionsLeftOpen`: a differing VM is
 *  in STARTING / STOPPING with no request in flight, which a report does not settle: the reconciler
 *  asks the hypervisor about it. */
export type DigestVerdict = { resync: string[]; heldBack: string[]; transitionsLeftOpen: boolean };

/** Compares the agent's digest with the node's non-missing records; `inFlight` holds the request ids
 *  the session has in flight. */
export async function compareDigest(
  db: Database,
  nodeId: string,
  agent: InventoryDigest,
  inFlight: ReadonlySet<string>,
): Promise<DigestVerdict> {
  const rows = await db
    .select({
      uuid: vms.id,
      name: vms.name,
      state: vms.state,
      vcpus: vms.vcpus,
      memoryMiB: vms.memoryMiB,
      transitionRequestId: vms.transitionRequestId,
    })
    .from(vms)
    .where(sql`${vms.nodeId} = ${nodeId} AND ${vms.missing} = 0`)
    .all();
  const differing = new Set(differingBuckets(agent, inventoryDigest(rows)));
  const verdict: DigestVerdict = { resync: [], heldBack: [], transitionsLeftOpen: false };
  if (differing.size === 0) return verdict;
  const held = new Set<string>();
  for (const row of rows) {
    const bucket = digestBucket(row.uuid);
    if (!differing.has(bucket) || !row.transitionRequestId) continue;
    if (inFlight.has(row.transitionRequestId)) held.add(bucket);
    else if ((TRANSITIONAL_STATES as readonly string[]).includes(row.state)) verdict.transitionsLeftOpen = true;
  }
  for (const bucket of differing) (held.has(bucket) ? verdict.heldBack : verdict.resync).push(bucket);
  verdict.resync.sort();
  return verdict;
}
