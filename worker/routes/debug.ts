// GET /api/debug/counts[?node=<id>[&cost=1]][&liveness=1]: the debug counts of a local soak run (admin
// only): this isolate's module-level collections and, with `node`, that node session's rooms; with
// `cost=1` its cost counts for the bench (cost-meter.ts) instead; with `liveness=1` the cost counts of
// every liveness shard of the fleet's current size. A 404 like any unknown route unless
// QX_DEBUG_COUNTS is "1".
import { Hono } from "hono";
import type { AppEnv } from "../app-env.ts";
import { requireRole } from "../auth.ts";
import { callsTo } from "../cost-meter.ts";
import { debugCountsEnabled, isolateCounts } from "../debug-counts.ts";
import { errorResponse } from "../errors.ts";
import { nodeSession } from "../session/calls.ts";
import { livenessNodesPerShard } from "../config.ts";
import { database } from "../db/client.ts";
import { nodes } from "../db/schema.ts";
import { count } from "drizzle-orm";

/** Every shard's cost counts, by name (liveness-watch.ts names them liveness-0, liveness-1, …). */
async function livenessShards(env: Env) {
  const fleet = (await database(env.DB).select({ n: count() }).from(nodes).get())?.n ?? 0;
  const shards = Math.max(1, Math.ceil(fleet / livenessNodesPerShard(env)));
  const names = Array.from({ length: shards }, (_, i) => `liveness-${i}`);
  const counts = await Promise.all(
    names.map((name) => env.LIVENESS_WATCH.get(env.LIVENESS_WATCH.idFromName(name)).costCounts()),
  );
  return { nodesPerShard: livenessNodesPerShard(env), shards: Object.fromEntries(names.map((n, i) => [n, counts[i]])) };
}

export const debugRoutes = new Hono<AppEnv>().get("/counts", requireRole("admin"), async (c) => {
  if (!debugCountsEnabled(c.env)) return errorResponse(c, 404, "not_found", `no route GET ${c.req.path}`);
  const node = c.req.query("node");
  const stub = node ? nodeSession(c.env, node) : null;
  // The cost counts alone when asked for: the debug counts read the object's stored families through
  // its metered storage, rows the bench would bill to the node.
  const cost = c.req.query("cost") === "1";
  return c.json({
    worker: isolateCounts(),
    ...(stub && !cost ? { session: await stub.debugCounts() } : {}),
    ...(stub && node && cost ? { cost: { session: await stub.costCounts(), calls: callsTo(node) } } : {}),
    ...(c.req.query("liveness") === "1" ? { liveness: await livenessShards(c.env) } : {}),
  });
});
