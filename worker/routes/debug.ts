// GET /api/debug/counts[?node=<id>]: the debug counts of a local soak run (admin only): this
// isolate's module-level collections and, with `node`, that node session's rooms. A 404 like any
// unknown route unless QX_DEBUG_COUNTS is "1".
import { Hono } from "hono";
import type { AppEnv } from "../app-env.ts";
import { requireRole } from "../auth.ts";
import { debugCountsEnabled, isolateCounts } from "../debug-counts.ts";
import { errorResponse } from "../errors.ts";
import { nodeSession } from "../session/calls.ts";

export const debugRoutes = new Hono<AppEnv>().get("/counts", requireRole("admin"), async (c) => {
  if (!debugCountsEnabled(c.env)) return errorResponse(c, 404, "not_found", `no route GET ${c.req.path}`);
  const node = c.req.query("node");
  return c.json({
    worker: isolateCounts(),
    ...(node ? { session: await nodeSession(c.env, node).debugCounts() } : {}),
  });
});
