// Debug counts for a local soak run: the size of every in-memory collection this isolate keeps at
// module level. Answered only when the QX_DEBUG_COUNTS var is "1" (set by the bench's control plane,
// never by the shipped wrangler.toml); otherwise the route is the API's ordinary 404.
import { keySetsSize } from "./access/verify.ts";
import { tokenCacheSize } from "./auth.ts";
import { livenessChainsSize } from "./notifications/notify.ts";
import { vmHomesSize } from "./vms/lookup.ts";

export const debugCountsEnabled = (env: Pick<Env, "QX_DEBUG_COUNTS">): boolean => env.QX_DEBUG_COUNTS === "1";

/** Module-level collections of this isolate (the drizzle clients are a WeakMap: not countable). */
export function isolateCounts(): Record<string, number> {
  return {
    tokenCache: tokenCacheSize(),
    vmHomes: vmHomesSize(),
    accessKeySets: keySetsSize(),
    livenessChains: livenessChainsSize(),
  };
}
