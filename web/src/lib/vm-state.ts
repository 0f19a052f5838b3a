// VM state rules the UI needs beyond start/stop: when a transitional state counts as stuck.
import { TRANSITIONAL_STATES, type VmState } from "../../../protocol/wire.ts";

/** A VM still CREATING / STARTING / STOPPING after this long is marked stuck. */
export const STUCK_AFTER_MS = 60_000;

export function isStuck(vm: { state: VmState; stateUpdatedAt?: string | null }, now: number = Date.now()): boolean {
  if (!TRANSITIONAL_STATES.includes(vm.state) || !vm.stateUpdatedAt) return false;
  const since = Date.parse(vm.stateUpdatedAt);
  return !Number.isNaN(since) && now - since > STUCK_AFTER_MS;
}
