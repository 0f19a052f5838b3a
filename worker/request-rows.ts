// The request-row ledger: every write to the `requests` table (queued, sent, acked, finished, and a
// query's row written whole once it has ended) goes through here.
import { eq, sql, type SQL } from "drizzle-orm";
import type { Database } from "./db/client.ts";
import { requests, type VmRecord } from "./db/schema.ts";

export type RequestRow = typeof requests.$inferInsert;
export type AgentFailure = { code: string; message: string };

/** How a request ends; `result` is what the agent answered, stored as JSON. */
export type RequestFinish =
  | { status: "done"; result?: object }
  | { status: "failed" | "expired"; error: AgentFailure };

const resultColumns = (f: RequestFinish) =>
  f.status === "done"
    ? { result: f.result === undefined ? null : JSON.stringify(f.result), error: null }
    : { result: null, error: JSON.stringify(f.error) };

/** Inserts the queued request row of a reconciler's state query; the session sends it next. */
export async function queueStateQuery(db: Database, vm: Pick<VmRecord, "id" | "nodeId">, actor: string, deadlineAt: number): Promise<string> {
  const id = crypto.randomUUID();
  const now = Date.now();
  await db.insert(requests).values({
    id,
    kind: "vm.state",
    vmId: vm.id,
    nodeId: vm.nodeId,
    params: JSON.stringify({ reconcile: true }),
    status: "queued",
    deadlineAt,
    requestedBy: actor,
    createdAt: now,
  });
  return id;
}

/** A power action's queued row, inserted only while `guard` (a condition on the VM) holds: it goes in
 *  the same batch as the transition it belongs to. */
export function queuePowerRequestIf(
  guard: SQL,
  r: { id: string; kind: string; vmId: string; nodeId: string | null; params: Record<string, unknown>; deadlineAt: number; actor: string; generation: number; at: number },
): SQL {
  return sql`INSERT INTO requests (id, kind, vm_id, node_id, params, status, deadline_at, requested_by, vm_generation, created_at)
    SELECT ${r.id}, ${r.kind}, ${r.vmId}, ${r.nodeId}, ${JSON.stringify(r.params)}, 'queued', ${r.deadlineAt}, ${r.actor}, ${r.generation}, ${r.at}
    WHERE EXISTS (SELECT 1 FROM vms WHERE ${guard})`;
}

export function markRequestSent(db: Database, id: string, now = Date.now()) {
  return db.update(requests).set({ status: "sent", sentAt: now }).where(sql`${requests.id} = ${id} AND ${requests.status} = 'queued'`);
}

export function markRequestAcked(db: Database, id: string, deadlineAt: number, now = Date.now()) {
  return db.update(requests).set({ ackedAt: now, deadlineAt }).where(eq(requests.id, id));
}

/** Closes a request row once; a row already finished keeps its first outcome. */
export function finishRequest(db: Database, id: string, f: RequestFinish, now = Date.now()) {
  return db
    .update(requests)
    .set({ status: f.status, ...resultColumns(f), finishedAt: now })
    .where(sql`${requests.id} = ${id} AND ${requests.status} IN ('queued', 'sent')`);
}

/** A route's query (vm.state / vm.logs), final: the node's session keeps it and writes many at once
 *  instead of an insert as it sends and an update as it ends. */
export function finishedQueryRow(
  r: { id: string; kind: string; vmId: string; nodeId: string; params: Record<string, unknown>; requestedBy: string; createdAt: number; deadlineAt: number; sentAt: number | null },
  f: RequestFinish,
  now = Date.now(),
): RequestRow {
  return {
    id: r.id,
    kind: r.kind,
    vmId: r.vmId,
    nodeId: r.nodeId,
    params: JSON.stringify(r.params),
    status: f.status,
    deadlineAt: r.deadlineAt,
    requestedBy: r.requestedBy,
    createdAt: r.createdAt,
    sentAt: r.sentAt,
    ...resultColumns(f),
    finishedAt: now,
  };
}

/** Rows per INSERT: 13 columns each, within D1's 100 bound parameters per statement. */
const ROWS_PER_INSERT = Math.floor(100 / 13);

/** Statements inserting finished query rows; a row written before is left as it is. */
export function insertFinishedRows(db: Database, rows: RequestRow[]) {
  const statements = [];
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    statements.push(db.insert(requests).values(rows.slice(i, i + ROWS_PER_INSERT)).onConflictDoNothing());
  }
  return statements;
}
