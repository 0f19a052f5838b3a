// The VM state machine on D1. Every state change goes through writeVmState: the new state, a new
// generation (so any answer to an older command is void) and the event (the audit trail) in one
// batch, applied only while the caller's guard holds. vmEventIf is the one way an event is written.
import { sql } from "drizzle-orm";
import { canStart, canStop, type VmState } from "../protocol/wire.ts";
import type { Database } from "./db/client.ts";
import { raw, runBatch, type Raw, type Statement } from "./db/batch.ts";
import { vmFromRow } from "./db/rows.ts";
import type { VmRecord } from "./db/schema.ts";
import { ApiError } from "./errors.ts";
import { queuePowerRequestIf, type AgentFailure } from "./request-rows.ts";

export const POWER_KINDS = ["vm.start", "vm.stop", "vm.forceStop"] as const;
export type PowerKind = (typeof POWER_KINDS)[number];
export const isPowerKind = (k: string): k is PowerKind => (POWER_KINDS as readonly string[]).includes(k);

/** What must still hold of the VM for a write to apply: nobody changed it since it was read (its
 *  generation), it is still in this request's transition, it is still on this node, the flag is the
 *  one the operator saw. Unset fields are not checked. */
export type VmGuard = {
  vmId: string;
  generation?: number;
  transitionRequestId?: string;
  nodeId?: string;
  flag?: { code: string; at: number | null };
  /** nobody changed the VM's state at or after this time (a reset asking the hypervisor since then) */
  unchangedSince?: number;
};

// The hot writes below are SQL text (`raw`): they run on every state change and every reset.
function guardSql(g: VmGuard): { text: string; params: unknown[] } {
  const parts = ["id = ?"];
  const params: unknown[] = [g.vmId];
  if (g.generation !== undefined) {
    parts.push("generation = ?");
    params.push(g.generation);
  }
  if (g.unchangedSince !== undefined) {
    parts.push("state_updated_at < ?");
    params.push(g.unchangedSince);
  }
  if (g.transitionRequestId !== undefined) {
    parts.push("transition_request_id = ?");
    params.push(g.transitionRequestId);
  }
  if (g.nodeId !== undefined) {
    parts.push("node_id = ?");
    params.push(g.nodeId);
  }
  if (g.flag !== undefined) {
    parts.push("flag_code = ? AND flag_at IS ?");
    params.push(g.flag.code, g.flag.at);
  }
  return { text: parts.join(" AND "), params };
}

/** The state the VM has when the event is written (under the guard). */
export const AS_STORED = "as stored";

/** One event of the trail. `fromState` is always the VM's state as stored when it is written. */
export type VmEvent = {
  actor: string;
  action: string;
  /** AS_STORED: an event that does not change the state */
  toState: string;
  source: string;
  message?: string | null;
  reason?: string | null;
  requestId?: string | null;
  /** what the control plane believed (AS_STORED: the state it holds), and what the hypervisor said */
  expectedState?: string | null;
  observedState?: string | null;
  logExcerpt?: string | null;
};

/** The event, inserted only while `guard` holds: put it before the guarded write in the same batch,
 *  and it is written exactly when that write applies. Its result row carries `id` and `from_state`. */
export function vmEventIf(guard: VmGuard, at: number, e: VmEvent): Raw {
  const where = guardSql(guard);
  // AS_STORED reads the VM's own state column; anything else is a parameter.
  const toState = e.toState === AS_STORED ? "state" : "?";
  const expected = e.expectedState === AS_STORED ? "state" : "?";
  const params: unknown[] = [at, e.actor, e.action];
  if (e.toState !== AS_STORED) params.push(e.toState);
  params.push(e.source, e.message ?? null, e.reason ?? null, e.requestId ?? null);
  if (e.expectedState !== AS_STORED) params.push(e.expectedState ?? null);
  params.push(e.observedState ?? null, e.logExcerpt ?? null, ...where.params);
  return raw(
    "INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message, reason, request_id, expected_state, observed_state, log_excerpt) " +
      `SELECT id, ?, ?, ?, state, ${toState}, ?, ?, ?, ?, ${expected}, ?, ? FROM vms WHERE ${where.text} RETURNING id, from_state`,
    params,
  );
}

export type StateChange = {
  state: VmState;
  /** what libvirt reported, when it was asked (else the stored one stays) */
  libvirtState?: string | null;
  /** the request that holds the VM in a transition (none after the change when unset) */
  transitionRequestId?: string;
  /** when the VM was force-reset to STOPPED (null: not any more; unset: unchanged) */
  forcedResetAt?: number | null;
};

export type StateWritten = { vm: VmRecord; eventId: number; previousState: string };

/** The one writer of a VM's state: the event, then the change with a new generation, in one batch,
 *  both only while `guard` holds (statements in `first` go before them in the same batch). Null
 *  when the guard no longer held (nothing was written). */
export async function writeVmState(
  db: Database,
  guard: VmGuard,
  change: StateChange,
  event: VmEvent,
  first: Statement[] = [],
): Promise<StateWritten | null> {
  const now = Date.now();
  const where = guardSql(guard);
  const set = ["state = ?"];
  const params: unknown[] = [change.state];
  if (change.libvirtState) {
    set.push("libvirt_state = ?");
    params.push(change.libvirtState);
  }
  set.push("generation = generation + 1", "transition_request_id = ?");
  params.push(change.transitionRequestId ?? null);
  if (change.forcedResetAt !== undefined) {
    set.push("forced_reset_at = ?");
    params.push(change.forcedResetAt);
  }
  // A write that leaves the state and its transition as they were changes nothing a reader waits
  // on: the state's time stays (two resets finding the same state do not conflict).
  set.push(
    "state_updated_at = CASE WHEN state = ? AND transition_request_id IS ? THEN state_updated_at ELSE ? END",
    "updated_at = ?",
  );
  params.push(change.state, change.transitionRequestId ?? null, now, now, ...where.params);
  const results = await runBatch(db, [
    ...first,
    vmEventIf(guard, now, event),
    raw(`UPDATE vms SET ${set.join(", ")} WHERE ${where.text} RETURNING *`, params),
  ]);
  const [written, updated] = results.slice(first.length);
  const ev = written?.results[0] as { id: number; from_state: string } | undefined;
  const row = updated?.results[0] as Record<string, unknown> | undefined;
  return ev && row ? { vm: vmFromRow(row), eventId: ev.id, previousState: ev.from_state } : null;
}

const ACTION_OF: Record<PowerKind, string> = { "vm.start": "start", "vm.stop": "stop", "vm.forceStop": "force_stop" };

/** 409 naming the current state unless the power action is allowed from it. With `overrideStopping`
 *  (the node's agent announced it can end a graceful stop's wait), a force stop is also allowed while
 *  the VM is STOPPING: it overrides the graceful stop. */
export function assertPowerAllowed(vm: VmRecord, kind: PowerKind, overrideStopping = false): void {
  const state = vm.state as VmState;
  const allowed =
    kind === "vm.start"
      ? canStart(state)
      : canStop(state) || (kind === "vm.forceStop" && overrideStopping && state === "STOPPING");
  if (!allowed) {
    const verb = kind === "vm.start" ? "start" : "stop";
    const from = kind === "vm.start" ? "STOPPED or PAUSED" : "RUNNING or PAUSED";
    throw new ApiError(
      409,
      "invalid_state",
      `cannot ${verb} VM ${vm.name}: it is ${state} (${verb} is allowed from ${from}` +
        (kind === "vm.forceStop" && state === "STOPPING"
          ? `; a force stop overrides a graceful stop only when the node's agent supports it`
          : "") +
        `); if it is stuck, use POST /api/vms/${vm.id}/reset_state`,
    );
  }
}

/** Puts the VM in STARTING / STOPPING, bumps its generation, records the transition's request and
 *  queues that request, all in one batch that only applies if nobody changed the VM since we read it. */
export async function beginPowerAction(
  db: Database,
  vm: VmRecord,
  kind: PowerKind,
  by: { actor: string },
  deadlineAt: number,
  params: Record<string, unknown>,
  overrideStopping = false,
): Promise<{ requestId: string; generation: number; vm: VmRecord }> {
  assertPowerAllowed(vm, kind, overrideStopping);
  const requestId = crypto.randomUUID();
  const generation = vm.generation + 1;
  const to: VmState = kind === "vm.start" ? "STARTING" : "STOPPING";
  const guard = { vmId: vm.id, generation: vm.generation };
  const request = {
    id: requestId,
    kind,
    vmId: vm.id,
    nodeId: vm.nodeId,
    params,
    deadlineAt,
    actor: by.actor,
    generation,
    at: Date.now(),
  };
  const written = await writeVmState(
    db,
    guard,
    { state: to, transitionRequestId: requestId },
    { actor: by.actor, action: ACTION_OF[kind], toState: to, source: "control_plane", requestId },
    [queuePowerRequestIf(sql`id = ${vm.id} AND generation = ${vm.generation}`, request)],
  );
  if (!written)
    throw new ApiError(
      409,
      "conflict",
      `VM ${vm.name} changed while this request was being made; read it again and retry`,
    );
  return { requestId, generation, vm: written.vm };
}

type PowerRequest = { id: string; vmId: string; vmGeneration: number };
const inTransition = (r: PowerRequest): VmGuard => ({
  vmId: r.vmId,
  generation: r.vmGeneration,
  transitionRequestId: r.id,
});

/** The agent's outcome of a power action: the reported state, applied only if the VM is still in
 *  the transition this request started (same generation, same transition request). */
export async function applyPowerOutcome(
  db: Database,
  r: PowerRequest & { kind: PowerKind },
  outcome: { state: VmState; libvirtState: string; timedOut?: boolean },
  actor: string,
): Promise<boolean> {
  const message = outcome.timedOut ? "the guest did not shut down within the grace period" : null;
  const change = { state: outcome.state, libvirtState: outcome.libvirtState, forcedResetAt: null };
  const event = {
    actor,
    action: ACTION_OF[r.kind] + "_done",
    toState: outcome.state,
    source: "hypervisor",
    message,
    requestId: r.id,
  };
  return (await writeVmState(db, inTransition(r), change, event)) !== null;
}

/** A power action that was never carried out (agent refused it, node gone at dispatch): the VM goes
 *  back to where it was, if it is still in this request's transition. True when written: a state the
 *  control plane wrote on its own, which the caller has checked with the hypervisor. */
export async function undoPowerAction(
  db: Database,
  r: PowerRequest & { prevState: string },
  why: AgentFailure,
  actor: string,
): Promise<boolean> {
  const event = {
    actor,
    action: "power_failed",
    toState: r.prevState,
    source: "control_plane",
    message: `${why.code}: ${why.message}`,
    requestId: r.id,
  };
  return (await writeVmState(db, inTransition(r), { state: r.prevState as VmState }, event)) !== null;
}

/** A power action the agent answered with an error and the domain's state as libvirt showed it
 *  right after: the VM takes that state (not the one remembered from before), if it is still in
 *  this request's transition. */
export async function adoptStateAfterError(
  db: Database,
  r: PowerRequest,
  why: AgentFailure,
  observed: { state: VmState; libvirtState: string },
  actor: string,
): Promise<boolean> {
  const event = {
    actor,
    action: "power_failed",
    toState: observed.state,
    source: "hypervisor",
    message: `${why.code}: ${why.message}; the hypervisor reports libvirt ${observed.libvirtState}`,
    requestId: r.id,
    observedState: observed.state,
  };
  return (
    (await writeVmState(
      db,
      inTransition(r),
      { state: observed.state, libvirtState: observed.libvirtState, forcedResetAt: null },
      event,
    )) !== null
  );
}

/** The reconciler's repair of a VM stuck in a transition: the hypervisor's state, adopted only if
 *  the VM is still in that same transition (nobody acted on it meanwhile). */
export async function repairStuckVm(
  db: Database,
  stuck: { vmId: string; generation: number; transitionRequestId: string; expectedState: string; stuckForMs: number },
  observed: { state: VmState; libvirtState: string },
): Promise<boolean> {
  const message =
    `stuck in ${stuck.expectedState} for ${Math.round(stuck.stuckForMs / 1000)} s with no request in flight; ` +
    `the hypervisor reports libvirt ${observed.libvirtState} -> ${observed.state}`;
  const guard = { vmId: stuck.vmId, generation: stuck.generation, transitionRequestId: stuck.transitionRequestId };
  const event = {
    actor: "reconciler",
    action: "auto_repair",
    toState: observed.state,
    source: "hypervisor",
    message,
    requestId: stuck.transitionRequestId,
    expectedState: stuck.expectedState,
    observedState: observed.state,
  };
  return (
    (await writeVmState(
      db,
      guard,
      { state: observed.state, libvirtState: observed.libvirtState, forcedResetAt: null },
      event,
    )) !== null
  );
}

/** The operator has looked at the VM's flag: clear it, with an event. False when there was none. */
export async function clearVmFlag(db: Database, vm: VmRecord, actor: string): Promise<boolean> {
  if (!vm.flagCode) return false;
  const now = Date.now();
  const guard = { vmId: vm.id, flag: { code: vm.flagCode, at: vm.flagAt } };
  const message = `flag ${vm.flagCode} cleared: ${vm.flagMessage ?? ""}`;
  const where = guardSql(guard);
  const [, update] = await runBatch(db, [
    vmEventIf(guard, now, { actor, action: "flag_cleared", toState: AS_STORED, source: "control_plane", message }),
    raw(`UPDATE vms SET flag_code = NULL, flag_message = NULL, flag_at = NULL, updated_at = ? WHERE ${where.text}`, [
      now,
      ...where.params,
    ]),
  ]);
  return (update?.meta?.changes ?? 0) > 0;
}
