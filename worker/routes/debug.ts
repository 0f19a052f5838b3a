// GET /api/debug/counts[?node=<id>[&cost=1]]: the debug counts of a local soak run (admin only): this
// isolate's module-level collections and, with `node`, that node session's rooms; with `cost=1`
// also its cost counts for the bench (cost-meter.ts). A 404 like any unknown route unless
// QX_DEBUG_COUNTS is "1".
import { Hono } from "hono";
import type { AppEnv } from "../app-env.ts";
import { requireRole } from "../auth.ts";
import { callsTo } from "../cost-meter.ts";
import { debugCountsEnabled, isolateCounts } from "../debug-counts.ts";
import { errorResponse } from "../errors.ts";
import { nodeSession } from "../session/calls.ts";

export const debugRoutes = new Hono<AppEnv>().get("/counts", requireRole("admin"), async (c) => {
  if (!debugCountsEnabled(c.env)) return errorResponse(c, 404, "not_found", `no route GET ${c.req.path}`);
  const node = c.req.query("node");
  const stub = node ? nodeSession(c.env, node) : null;
  return c.json({
    worker: isolateCounts(),
    ...(stub ? { session: await stub.debugCounts() } : {}),
    ...(stub && node && c.req.query("cost") === "1"
      ? { cost: { session: await stub.costCounts(), calls: callsTo(node) } }
      : {}),
  });
});
