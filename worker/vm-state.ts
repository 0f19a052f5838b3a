// The VM state machine on D1: power transitions guarded by the VM's generation, their outcomes,
// reset_state, and the events (audit trail) each change writes in the same batch.
import { eq, getTableColumns, sql, type Column } from "drizzle-orm";
import { canStart, canStop, type VmState } from "../protocol/wire.ts";
import type { Database } from "./db/client.ts";
import { changes, runBatch, type Statement } from "./db/batch.ts";
import { requests, vmLogSnapshots, vms } from "./db/schema.ts";
import { upsertSnapshot } from "./last-known-log.ts";
import { ApiError } from "./errors.ts";

export type VmRow = typeof vms.$inferSelect;
export const POWER_KINDS = ["vm.start", "vm.stop", "vm.forceStop"] as const;
export type PowerKind = (typeof POWER_KINDS)[number];
export const isPowerKind = (k: string): k is PowerKind => (POWER_KINDS as readonly string[]).includes(k);

export type EventFields = {
  vmId: string;
  at: number;
  actor: string;
  action: string;
  fromState?: string | null;
  toState?: string | null;
  source?: string | null;
  message?: string | null;
  reason?: string | null;
  requestId?: string | null;
  expectedState?: string | null;
  observedState?: string | null;
};

/** An event inserted only while the VM still has `generation`: put it before the guarded UPDATE in
 *  the same batch, and it is written exactly when that UPDATE wins. Its result row carries the id. */
export function eventIfGeneration(db: Database, e: EventFields, generation: number) {
  return sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, reason, request_id, expected_state, observed_state)
    SELECT ${e.vmId}, ${e.at}, ${e.actor}, ${e.action}, ${e.fromState ?? null}, ${e.toState ?? null}, ${e.source ?? null},
           ${e.message ?? null}, ${e.reason ?? null}, ${e.requestId ?? null}, ${e.expectedState ?? null}, ${e.observedState ?? null}
    WHERE EXISTS (SELECT 1 FROM vms WHERE id = ${e.vmId} AND generation = ${generation})
    RETURNING id`;
}

const VM_COLUMNS = Object.entries(getTableColumns(vms)) as [keyof VmRow, Column][];

/** A `RETURNING *` row of `vms` as D1 gives it (column names, driver values) as a VmRow. */
export function vmFromReturning(raw: Record<string, unknown>): VmRow {
  const row: Record<string, unknown> = {};
  for (const [key, col] of VM_COLUMNS) {
    const v = raw[col.name];
    row[key] = v === null || v === undefined ? null : col.mapFromDriverValue(v);
  }
  return row as VmRow;
}

const ACTION_OF: Record<PowerKind, string> = { "vm.start": "start", "vm.stop": "stop", "vm.forceStop": "force_stop" };

/** 409 naming the current state unless the power action is allowed from it. */
export function assertPowerAllowed(vm: VmRow, kind: PowerKind): void {
  const state = vm.state as VmState;
  const allowed = kind === "vm.start" ? canStart(state) : canStop(state);
  if (!allowed) {
    const verb = kind === "vm.start" ? "start" : "stop";
    const from = kind === "vm.start" ? "STOPPED or PAUSED" : "RUNNING or PAUSED";
    throw new ApiError(
      409,
      "invalid_state",
      `cannot ${verb} VM ${vm.name}: it is ${state} (${verb} is allowed from ${from}); if it is stuck, use POST /api/vms/${vm.id}/reset_state`,
    );
  }
}

/** Puts the VM in STARTING / STOPPING, bumps its generation, records the transition's request and
 *  queues that request, all in one batch that only applies if nobody changed the VM since we read it. */
export async function beginPowerAction(
  db: Database,
  vm: VmRow,
  kind: PowerKind,
  by: { actor: string },
  deadlineAt: number,
  params: Record<string, unknown>,
): Promise<{ requestId: string; generation: number; vm: VmRow }> {
  assertPowerAllowed(vm, kind);
  const now = Date.now();
  const requestId = crypto.randomUUID();
  const generation = vm.generation + 1;
  const to: VmState = kind === "vm.start" ? "STARTING" : "STOPPING";
  const [, , update] = await runBatch(db, [
    sql`INSERT INTO requests (id, kind, vm_id, node_id, params, status, deadline_at, requested_by, vm_generation, created_at)
      SELECT ${requestId}, ${kind}, ${vm.id}, ${vm.nodeId}, ${JSON.stringify(params)}, 'queued', ${deadlineAt}, ${by.actor}, ${generation}, ${now}
      WHERE EXISTS (SELECT 1 FROM vms WHERE id = ${vm.id} AND generation = ${vm.generation})`,
    eventIfGeneration(
      db,
      { vmId: vm.id, at: now, actor: by.actor, action: ACTION_OF[kind], fromState: vm.state, toState: to, source: "control_plane", requestId },
      vm.generation,
    ),
    db
      .update(vms)
      .set({ state: to, generation, transitionRequestId: requestId, stateUpdatedAt: now, updatedAt: now })
      .where(sql`${vms.id} = ${vm.id} AND ${vms.generation} = ${vm.generation}`)
      .returning(),
  ]);
  const returned = update?.results[0] as Record<string, unknown> | undefined;
  const updated = returned ? vmFromReturning(returned) : undefined;
  if (!updated) throw new ApiError(409, "conflict", `VM ${vm.name} changed while this request was being made; read it again and retry`);
  return { requestId, generation, vm: updated };
}

/** The agent's outcome of a power action: the reported state, applied only if the VM is still in
 *  the transition this request started (same generation, same transition request). */
export async function applyPowerOutcome(
  db: Database,
  r: { id: string; vmId: string; vmGeneration: number; kind: PowerKind },
  outcome: { state: VmState; libvirtState: string; timedOut?: boolean },
  actor: string,
): Promise<boolean> {
  const now = Date.now();
  const message = outcome.timedOut ? "the guest did not shut down within the grace period" : null;
  const guard = sql`id = ${r.vmId} AND generation = ${r.vmGeneration} AND transition_request_id = ${r.id}`;
  const [, update] = await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, request_id)
      SELECT id, ${now}, ${actor}, ${ACTION_OF[r.kind] + "_done"}, state, ${outcome.state}, 'hypervisor', ${message}, ${r.id}
      FROM vms WHERE ${guard}`,
    sql`UPDATE vms SET state = ${outcome.state}, libvirt_state = ${outcome.libvirtState}, generation = generation + 1,
      transition_request_id = NULL, forced_reset_at = NULL, state_updated_at = ${now}, updated_at = ${now} WHERE ${guard}`,
  ]);
  return changes(update) > 0;
}

/** A power action that was never carried out (agent refused it, node gone at dispatch): the VM goes
 *  back to where it was, if it is still in this request's transition. */
export async function undoPowerAction(
  db: Database,
  r: { id: string; vmId: string; vmGeneration: number; prevState: string },
  why: { code: string; message: string },
  actor: string,
): Promise<void> {
  const now = Date.now();
  const guard = sql`id = ${r.vmId} AND generation = ${r.vmGeneration} AND transition_request_id = ${r.id}`;
  await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, request_id)
      SELECT id, ${now}, ${actor}, 'power_failed', state, ${r.prevState}, 'control_plane', ${`${why.code}: ${why.message}`}, ${r.id}
      FROM vms WHERE ${guard}`,
    sql`UPDATE vms SET state = ${r.prevState}, generation = generation + 1, transition_request_id = NULL,
      state_updated_at = ${now}, updated_at = ${now} WHERE ${guard}`,
  ]);
}

/** reset_state's write: the new state, a new generation (so any answer to an older command is
 *  void), no transition, and the event, together or not at all. The event keeps what the control
 *  plane believed (`expectedState`) and what the hypervisor said (`observedState`, null when forced
 *  without asking); a forced reset is remembered until the hypervisor next reports the VM. */
export async function resetVmState(
  db: Database,
  vm: VmRow,
  change: {
    to: VmState;
    libvirtState?: string | null;
    source: "hypervisor" | "forced";
    observedState: VmState | null;
    message: string;
    actor: string;
    reason: string | null;
  },
): Promise<{ vm: VmRow; eventId: number; previousState: string }> {
  const now = Date.now();
  const [event, update] = await runBatch(db, [
    eventIfGeneration(
      db,
      {
        vmId: vm.id,
        at: now,
        actor: change.actor,
        action: "reset_state",
        fromState: vm.state,
        toState: change.to,
        source: change.source,
        message: change.message,
        reason: change.reason,
        expectedState: vm.state,
        observedState: change.observedState,
      },
      vm.generation,
    ),
    db
      .update(vms)
      .set({
        state: change.to,
        ...(change.libvirtState ? { libvirtState: change.libvirtState } : {}),
        generation: vm.generation + 1,
        transitionRequestId: null,
        forcedResetAt: change.source === "forced" ? now : null,
        stateUpdatedAt: now,
        updatedAt: now,
      })
      .where(sql`${vms.id} = ${vm.id} AND ${vms.generation} = ${vm.generation}`)
      .returning(),
  ]);
  const returned = update?.results[0] as Record<string, unknown> | undefined;
  if (!returned) throw new ApiError(409, "conflict", `VM ${vm.name} changed during reset_state; try again`);
  return { vm: vmFromReturning(returned), eventId: (event!.results[0] as { id: number }).id, previousState: vm.state };
}

export type HypervisorReset = {
  to: VmState;
  libvirtState?: string | null;
  source: "hypervisor";
  observedState: VmState;
  message: string;
  actor: string;
  reason: string | null;
  /** the log's last lines, when the agent sent them with its answer */
  logExcerpt?: string | null;
};

/** reset_state's write after asking the hypervisor (which took time): against the VM as it is at
 *  the write, whatever changed meanwhile, in one batch: the event takes its from/expected state from
 *  the row it supersedes, the update bumps that row's generation. No re-read before or after.
 *  With `onNode` (the node that was asked, known before any read) only if the VM is still on it:
 *  null when it is not (or is gone), for the caller to read it and decide. */
export async function resetVmStateNow(
  db: Database,
  vm: Pick<VmRow, "id" | "name">,
  change: HypervisorReset,
): Promise<{ vm: VmRow; eventId: number; previousState: string }>;
export async function resetVmStateNow(
  db: Database,
  vm: Pick<VmRow, "id" | "name">,
  change: HypervisorReset,
  onNode: string,
): Promise<{ vm: VmRow; eventId: number; previousState: string } | null>;
export async function resetVmStateNow(
  db: Database,
  vm: Pick<VmRow, "id" | "name">,
  change: HypervisorReset,
  onNode?: string,
): Promise<{ vm: VmRow; eventId: number; previousState: string } | null> {
  const now = Date.now();
  const where = onNode === undefined ? sql`id = ${vm.id}` : sql`id = ${vm.id} AND node_id = ${onNode}`;
  const [event, update] = await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, reason, request_id, expected_state, observed_state, log_excerpt)
      SELECT id, ${now}, ${change.actor}, 'reset_state', state, ${change.to}, ${change.source}, ${change.message}, ${change.reason}, NULL,
        state, ${change.observedState}, ${change.logExcerpt ?? null}
      FROM vms WHERE ${where}
      RETURNING id, from_state`,
    sql`UPDATE vms SET state = ${change.to}, libvirt_state = coalesce(${change.libvirtState ?? null}, libvirt_state), generation = generation + 1,
      transition_request_id = NULL, forced_reset_at = NULL, state_updated_at = ${now}, updated_at = ${now}
      WHERE ${where} RETURNING *`,
  ]);
  const ev = event?.results[0] as { id: number; from_state: string } | undefined;
  const returned = update?.results[0] as Record<string, unknown> | undefined;
  if (!ev || !returned) {
    if (onNode !== undefined) return null;
    throw new ApiError(404, "not_found", `VM ${vm.name} is gone`);
  }
  return { vm: vmFromReturning(returned), eventId: ev.id, previousState: ev.from_state };
}

/** The operator has looked at the VM's flag: clear it, with an event. False when there was none. */
export async function clearVmFlag(db: Database, vm: VmRow, actor: string): Promise<boolean> {
  if (!vm.flagCode) return false;
  const now = Date.now();
  const guard = sql`id = ${vm.id} AND flag_code = ${vm.flagCode} AND flag_at IS ${vm.flagAt}`;
  const [, update] = await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
      SELECT id, ${now}, ${actor}, 'flag_cleared', state, state, 'control_plane', ${`flag ${vm.flagCode} cleared: ${vm.flagMessage ?? ""}`}
      FROM vms WHERE ${guard}`,
    sql`UPDATE vms SET flag_code = NULL, flag_message = NULL, flag_at = NULL, updated_at = ${now} WHERE ${guard}`,
  ]);
  return changes(update) > 0;
}

/** The reconciler's repair of a VM stuck in a transition: the hypervisor's state, adopted only if
 *  the VM is still in that same transition (nobody acted on it meanwhile). */
export async function repairStuckVm(
  db: Database,
  stuck: { vmId: string; generation: number; transitionRequestId: string; expectedState: string; stuckForMs: number },
  observed: { state: VmState; libvirtState: string },
): Promise<boolean> {
  const now = Date.now();
  const guard = sql`id = ${stuck.vmId} AND generation = ${stuck.generation} AND transition_request_id = ${stuck.transitionRequestId}`;
  const message =
    `stuck in ${stuck.expectedState} for ${Math.round(stuck.stuckForMs / 1000)} s with no request in flight; ` +
    `the hypervisor reports libvirt ${observed.libvirtState} -> ${observed.state}`;
  const [, update] = await runBatch(db, [
    sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, request_id, expected_state, observed_state)
      SELECT id, ${now}, 'reconciler', 'auto_repair', state, ${observed.state}, 'hypervisor', ${message}, ${stuck.transitionRequestId},
        ${stuck.expectedState}, ${observed.state}
      FROM vms WHERE ${guard}`,
    sql`UPDATE vms SET state = ${observed.state}, libvirt_state = ${observed.libvirtState}, generation = generation + 1,
      transition_request_id = NULL, forced_reset_at = NULL, state_updated_at = ${now}, updated_at = ${now} WHERE ${guard}`,
  ]);
  return changes(update) > 0;
}

export type RequestFinish = { status: "done" | "failed" | "expired"; result?: unknown; error?: { code: string; message: string } };

/** Closes a request row once; a row already finished keeps its first outcome. */
export function finishRequest(db: Database, id: string, f: RequestFinish, now = Date.now()) {
  return db
    .update(requests)
    .set({
      status: f.status,
      result: f.result === undefined ? null : JSON.stringify(f.result),
      error: f.error ? JSON.stringify(f.error) : null,
      finishedAt: now,
    })
    .where(sql`${requests.id} = ${id} AND ${requests.status} IN ('queued', 'sent')`);
}

/** A query's (vm.state / vm.logs from a route) request row, final: the node's session keeps it and
 *  writes many at once (insertRequestRows) instead of an insert as it sends and an update as it ends. */
export function queryRequestRow(
  r: { id: string; kind: string; vmId: string; nodeId: string; params: Record<string, unknown>; requestedBy: string; createdAt: number; deadlineAt: number; sentAt: number | null },
  f: RequestFinish,
  now = Date.now(),
): typeof requests.$inferInsert {
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
    result: f.result === undefined ? null : JSON.stringify(f.result),
    error: f.error ? JSON.stringify(f.error) : null,
    finishedAt: now,
  };
}

/** Rows per INSERT: 13 columns each, within D1's 100 bound parameters per statement. */
const REQUEST_ROWS_PER_INSERT = Math.floor(100 / 13);

/** Writes finished query rows and last-known logs (built by last-known-log.ts) in one D1 batch; a
 *  request row written before is left as it is. */
export async function writeKeptRows(
  db: Database,
  rows: Array<typeof requests.$inferInsert>,
  snapshots: Array<typeof vmLogSnapshots.$inferInsert>,
): Promise<void> {
  const statements: Statement[] = [];
  for (let i = 0; i < rows.length; i += REQUEST_ROWS_PER_INSERT) {
    statements.push(db.insert(requests).values(rows.slice(i, i + REQUEST_ROWS_PER_INSERT)).onConflictDoNothing());
  }
  for (const row of snapshots) statements.push(upsertSnapshot(db, row));
  if (statements.length) await runBatch(db, statements);
}

export function markRequestSent(db: Database, id: string, now = Date.now()) {
  return db.update(requests).set({ status: "sent", sentAt: now }).where(sql`${requests.id} = ${id} AND ${requests.status} = 'queued'`);
}

export function markRequestAcked(db: Database, id: string, deadlineAt: number, now = Date.now()) {
  return db.update(requests).set({ ackedAt: now, deadlineAt }).where(eq(requests.id, id));
}
