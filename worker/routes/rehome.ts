// POST /api/vms/:id/rehome {node_id, reason?} (admin): puts a VM on a node. How a UUID conflict
// (two nodes report the same UUID) or a deleted node's VM is resolved: never by the agents.
import { Hono } from "hono";
import { eq } from "drizzle-orm";
import { z } from "zod";
import type { AppEnv } from "../app-env.ts";
import { requireRole } from "../auth.ts";
import { sessionSettings } from "../config.ts";
import { database } from "../db/client.ts";
import { nodes, vms } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { IdParam } from "../params.ts";
import { nodeSession } from "../session/calls.ts";
import { vmView } from "../views.ts";
import { rehomeVm } from "../vm-ownership.ts";

export const RehomeBody = z
  .object({
    node_id: z.string().min(1, "must not be empty").max(128, "at most 128 characters"),
    reason: z.string().max(500, "at most 500 characters").optional(),
  })
  .strict();

export const rehomeRoutes = new Hono<AppEnv>().post(
  "/:id/rehome",
  requireRole("admin"),
  validate("param", IdParam),
  validate("json", RehomeBody),
  async (c) => {
    const db = database(c.env.DB);
    const id = c.req.valid("param").id.toLowerCase();
    const { node_id, reason } = c.req.valid("json");
    const vm = await db.select().from(vms).where(eq(vms.id, id)).get();
    if (!vm) throw new ApiError(404, "not_found", `no VM ${id}`);
    const target = await db.select({ id: nodes.id, name: nodes.name }).from(nodes).where(eq(nodes.id, node_id)).get();
    if (!target) throw new ApiError(404, "node_not_found", `no node ${node_id}`);
    await rehomeVm(db, vm, target, c.get("principal").actor, sessionSettings(c.env).maxVmsPerNode, reason ?? null);
    // Its new node reports it afresh (state, name, missing or not), if its agent is connected now.
    c.executionCtx.waitUntil(
      nodeSession(c.env, target.id)
        .resync()
        .catch((err) => console.error("rehome: resync failed", err)),
    );
    const moved = await db.select().from(vms).where(eq(vms.id, id)).get();
    return c.json({ success: true, vm: vmView(moved!) });
  },
);
