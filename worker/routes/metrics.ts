// GET /api/vms/:id/metrics and GET /api/nodes/:id/metrics?range=1h|24h|7d|30d[&watch=1] (viewer): a
// VM's, or a node's total, resource figures over a range, read from the node's Durable Object, which
// keeps them; with watch=1 the read also keeps the node's samples coming live (a viewer may: it only
// changes how soon figures a viewer can read arrive).
import { Hono } from "hono";
import { eq } from "drizzle-orm";
import { METRIC_RANGES, MetricsQuery, type MetricRange, type MetricsAnswer } from "../../protocol/metrics.ts";

import type { AppEnv } from "../app-env.ts";
import { database } from "../db/client.ts";
import { nodes } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { IdParam } from "../params.ts";
import { nodeSession } from "../session/calls.ts";
import { loadVm } from "../vms/lookup.ts";

/** The series from the node's session; a session that cannot be reached is a 503, never a 500. */
async function readMetrics(
  env: Env,
  nodeId: string,
  vmId: string | null,
  { range, watch }: MetricsQuery,
): Promise<MetricsAnswer> {
  try {
    return await nodeSession(env, nodeId).readMetrics(vmId, range, watch === "1");
  } catch (err) {
    console.error("metrics read failed", err);
    throw new ApiError(503, "metrics_unavailable", "the node's metrics could not be read just now; try again");
  }
}

const noSeries = (range: MetricRange): MetricsAnswer => {
  const now = Date.now();
  return { range, stepMs: METRIC_RANGES[range].stepMs, from: now - METRIC_RANGES[range].spanMs, to: now, points: [] };
};

export const metricRoutes = new Hono<AppEnv>()
  .get("/vms/:id/metrics", validate("param", IdParam), validate("query", MetricsQuery), async (c) => {
    const vm = await loadVm(database(c.env.DB), c.req.valid("param").id);
    const query = c.req.valid("query");
    // A VM on no node has no history the control plane can read (it stays with the node it ran on).
    return c.json(vm.nodeId ? await readMetrics(c.env, vm.nodeId, vm.id, query) : noSeries(query.range));
  })
  .get("/nodes/:id/metrics", validate("param", IdParam), validate("query", MetricsQuery), async (c) => {
    const { id } = c.req.valid("param");
    const node = await database(c.env.DB).select({ id: nodes.id }).from(nodes).where(eq(nodes.id, id)).get();
    if (!node) throw new ApiError(404, "not_found", `no node ${id}`);
    return c.json(await readMetrics(c.env, node.id, null, c.req.valid("query")));
  });
