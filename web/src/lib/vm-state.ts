// VM state rules the UI needs beyond start/stop: when a transitional state counts as stuck, by the
// threshold the control plane uses (`GET /api/me` says it; the default until then).
import { createContext, useContext } from "react";
import { STUCK_AFTER_MS } from "../../../protocol/api.ts";
import { TRANSITIONAL_STATES, type VmState } from "../../../protocol/wire.ts";

export { STUCK_AFTER_MS };

/** The stuck threshold in force: the signed-in control plane's, else the default. */
export const StuckAfterContext = createContext<number>(STUCK_AFTER_MS);
export const useStuckAfterMs = () => useContext(StuckAfterContext);

export function isStuck(
  vm: { state: VmState; stateUpdatedAt?: string | null },
  now: number = Date.now(),
  stuckAfterMs: number = STUCK_AFTER_MS,
): boolean {
  if (!TRANSITIONAL_STATES.includes(vm.state) || !vm.stateUpdatedAt) return false;
  const since = Date.parse(vm.stateUpdatedAt);
  return !Number.isNaN(since) && now - since > stuckAfterMs;
}
