// The request-row ledger: every write to the `requests` table (queued, sent, acked, finished, and a
// query's row written whole once it has ended) goes through here.
import { eq, sql, type SQL } from "drizzle-orm";
import { raw, type Raw } from "./db/batch.ts";
import type { Database } from "./db/client.ts";
import { requests, type VmRecord } from "./db/schema.ts";

export type RequestRow = typeof requests.$inferInsert;
export type AgentFailure = { code: string; message: string };

/** How a request ends; `result` is what the agent answered, stored as JSON. */
export type RequestFinish = { status: "done"; result?: object } | { status: "failed" | "expired"; error: AgentFailure };

const resultColumns = (f: RequestFinish) =>
  f.status === "done"
    ? { result: f.result === undefined ? null : JSON.stringify(f.result), error: null }
    : { result: null, error: JSON.stringify(f.error) };

/** Inserts the queued request row of a reconciler's state query; the session sends it next. */
export async function queueStateQuery(
  db: Database,
  vm: Pick<VmRecord, "id" | "nodeId">,
  actor: string,
  deadlineAt: number,
): Promise<string> {
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
  r: {
    id: string;
    kind: string;
    vmId: string;
    nodeId: string | null;
    params: Record<string, unknown>;
    deadlineAt: number;
    actor: string;
    generation: number;
    at: number;
  },
): SQL {
  return sql`INSERT INTO requests (id, kind, vm_id, node_id, params, status, deadline_at, requested_by, vm_generation, created_at)
    SELECT ${r.id}, ${r.kind}, ${r.vmId}, ${r.nodeId}, ${JSON.stringify(r.params)}, 'queued', ${r.deadlineAt}, ${r.actor}, ${r.generation}, ${r.at}
    WHERE EXISTS (SELECT 1 FROM vms WHERE ${guard})`;
}

export function markRequestSent(db: Database, id: string, now = Date.now()) {
  return db
    .update(requests)
    .set({ status: "sent", sentAt: now })
    .where(sql`${requests.id} = ${id} AND ${requests.status} = 'queued'`);
}

export function markRequestAcked(db: Database, id: string, deadlineAt: number, now = Date.now()) {
  return db.update(requests).set({ ackedAt: now, deadlineAt }).where(eq(requests.id, id));
}

/** A power action the agent reports still under way: its row's deadline moves with the session's. */
export function extendRequestDeadline(db: Database, id: string, deadlineAt: number) {
  return db
    .update(requests)
    .set({ deadlineAt })
    .where(sql`${requests.id} = ${id} AND ${requests.status} IN ('queued', 'sent')`);
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
  r: {
    id: string;
    kind: string;
    vmId: string;
    nodeId: string;
    params: Record<string, unknown>;
    requestedBy: string;
    createdAt: number;
    deadlineAt: number;
    sentAt: number | null;
  },
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

/** The columns of a finished query's row, in the order each row travels in the JSON array. */
const FINISHED_COLUMNS = [
  ["id", "id"],
  ["kind", "kind"],
  ["vmId", "vm_id"],
  ["nodeId", "node_id"],
  ["params", "params"],
  ["status", "status"],
  ["deadlineAt", "deadline_at"],
  ["requestedBy", "requested_by"],
  ["result", "result"],
  ["error", "error"],
  ["createdAt", "created_at"],
  ["sentAt", "sent_at"],
  ["finishedAt", "finished_at"],
] as const satisfies readonly (readonly [keyof RequestRow, string])[];
const FINISHED_INSERT =
  `INSERT INTO requests (${FINISHED_COLUMNS.map(([, c]) => c).join(", ")}) ` +
  `SELECT ${FINISHED_COLUMNS.map((_, i) => `json_extract(value, '$[${i}]')`).join(", ")} FROM json_each(?) WHERE true ON CONFLICT (id) DO NOTHING`;

const FINISHED_INSERT_ONE =
  `INSERT INTO requests (${FINISHED_COLUMNS.map(([, c]) => c).join(", ")}) ` +
  `VALUES (${FINISHED_COLUMNS.map(() => "?").join(", ")}) ON CONFLICT (id) DO NOTHING`;

/** One finished query row, its values bound one by one (no JSON for SQLite to take apart); a row
 *  written before is left as it is. */
export const insertFinishedRow = (row: RequestRow): Raw =>
  raw(
    FINISHED_INSERT_ONE,
    FINISHED_COLUMNS.map(([key]) => row[key] ?? null),
  );

/** One statement inserting finished query rows, all of them in ONE bound JSON parameter (many rows
 *  per statement whatever D1's 100 parameters); a row written before is left as it is. */
export function insertFinishedRows(rows: RequestRow[]): Raw[] {
  if (rows.length === 0) return [];
  return [raw(FINISHED_INSERT, [JSON.stringify(rows.map((r) => FINISHED_COLUMNS.map(([key]) => r[key] ?? null)))])];
}
