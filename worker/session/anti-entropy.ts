// Anti-entropy: the agent's digest of its whole inventory against the node's records in D1, and
// what to do about a difference: a scoped resync of the differing buckets, and an immediate look at
// VMs left in a transition with no request in flight. The records' digest is kept with the node's
// revision of them (`nodes.vms_rev`, set anew by D1 triggers on every change the digest covers, by
// any writer), so an unchanged node costs one row read per digest, not one per VM.
import { eq, sql } from "drizzle-orm";
import { digestBucket, differingBuckets, inventoryDigest, type InventoryDigest } from "../../protocol/digest.ts";
import { TRANSITIONAL_STATES } from "../../protocol/wire.ts";
import type { Database } from "../db/client.ts";
import { nodes, vms } from "../db/schema.ts";

/** What a digest comparison calls for. `resync`: buckets whose records differ from the host and can
 *  be settled by a report (none holds a VM whose power action is still in flight: its record
 *  differs from the host on purpose until the action ends). `transitionsLeftOpen`: a differing VM is
 *  in STARTING / STOPPING with no request in flight, which a report does not settle: the reconciler
 *  asks the hypervisor about it. */
export type DigestVerdict = { resync: string[]; heldBack: string[]; transitionsLeftOpen: boolean };

/** The digest of the node's records as they were at revision `rev` of them. */
export type RecordsDigest = { rev: number; digest: InventoryDigest };

/** Where the session keeps the last RecordsDigest it computed (its own storage: it outlives a wake). */
export type RecordsDigestMemo = {
  get(): RecordsDigest | undefined;
  put(known: RecordsDigest): void;
};

const sameDigest = (a: InventoryDigest, b: InventoryDigest) => a.count === b.count && !differingBuckets(a, b).length;

/** Compares the agent's digest with the node's non-missing records; `inFlight` holds the request ids
 *  the session has in flight. With a `memo`, an agent's digest equal to the one kept at the node's
 *  current revision reads only the node's row; anything else reads the VM rows (with the revision,
 *  in one batch: one snapshot) and keeps their digest when it changed. */
export async function compareDigest(
  db: Database,
  nodeId: string,
  agent: InventoryDigest,
  inFlight: ReadonlySet<string>,
  memo?: RecordsDigestMemo,
): Promise<DigestVerdict> {
  const verdict: DigestVerdict = { resync: [], heldBack: [], transitionsLeftOpen: false };
  const known = memo?.get();
  if (known && sameDigest(agent, known.digest)) {
    const node = await db.select({ rev: nodes.vmsRev }).from(nodes).where(eq(nodes.id, nodeId)).get();
    if (node?.rev === known.rev) return verdict;
  }
  const rowsQuery = db
    .select({
      uuid: vms.id,
      name: vms.name,
      state: vms.state,
      vcpus: vms.vcpus,
      memoryMiB: vms.memoryMiB,
      transitionRequestId: vms.transitionRequestId,
    })
    .from(vms)
    .where(sql`${vms.nodeId} = ${nodeId} AND ${vms.missing} = 0`);
  let rows: Awaited<typeof rowsQuery>;
  let rev: number | undefined;
  if (memo) {
    const [node, read] = await db.batch([
      db.select({ rev: nodes.vmsRev }).from(nodes).where(eq(nodes.id, nodeId)),
      rowsQuery,
    ]);
    [rows, rev] = [read, node[0]?.rev];
  } else rows = await rowsQuery.all();
  const records = inventoryDigest(rows);
  if (memo && rev !== undefined && !(known?.rev === rev && sameDigest(records, known.digest)))
    memo.put({ rev, digest: records });
  const differing = new Set(differingBuckets(agent, records));
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
