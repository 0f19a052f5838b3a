// /api/nodes: list and show nodes (any role); create, rotate the credential, delete (admin).
import { Hono } from "hono";
import { asc, desc, eq, sql } from "drizzle-orm";
import { z } from "zod";
import { INSTALL_MANIFEST_PATH, InstallManifest, installCommand } from "../../protocol/install.ts";
import { CLOSE } from "../../protocol/wire.ts";
import type { AppEnv } from "../app-env.ts";
import { hashSecret, newId, newSecret, requireRole } from "../auth.ts";
import { joinTokenTtlMs, sessionSettings } from "../config.ts";
import { database, type Database } from "../db/client.ts";
import { runBatch } from "../db/batch.ts";
import { nodeEvents, nodes } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { IdParam } from "../params.ts";
import { nodeSession } from "../session/calls.ts";
import { nodeColumns, nodeEventView, nodeView } from "../views.ts";
import { installAsset } from "./install.ts";
import { orphanStatements } from "../vm-ownership.ts";

export const CreateNode = z.object({
  name: z
    .string()
    .trim()
    .min(1, "must not be empty")
    .max(64, "at most 64 characters")
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "letters, digits, '.', '_' and '-', starting with a letter or digit"),
});

// Written out in full: drizzle renders a column of the outer table unqualified, which the subquery would read as vms.id.
const vmCount = sql<number>`(SELECT count(*) FROM vms WHERE vms.node_id = "nodes"."id")`.mapWith(Number);

async function nodeWithCount(db: Database, id: string) {
  return db.select({ node: nodeColumns, vmCount }).from(nodes).where(eq(nodes.id, id)).get();
}

async function issueJoinToken(env: Env) {
  const joinToken = newSecret("join");
  return {
    joinToken,
    joinTokenHash: await hashSecret(joinToken),
    joinTokenExpiresAt: Date.now() + joinTokenTtlMs(env),
  };
}

export const nodeRoutes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const rows = await database(c.env.DB)
      .select({ node: nodeColumns, vmCount })
      .from(nodes)
      .orderBy(asc(nodes.name))
      .limit(10_000);
    const staleAfter = sessionSettings(c.env).nodeStaleAfterMs;
    return c.json({ nodes: rows.map((r) => nodeView(r.node, r.vmCount, staleAfter)) });
  })
  .get("/:id", validate("param", IdParam), async (c) => {
    const row = await nodeWithCount(database(c.env.DB), c.req.valid("param").id);
    if (!row) throw new ApiError(404, "not_found", `no node ${c.req.valid("param").id}`);
    return c.json({ node: nodeView(row.node, row.vmCount, sessionSettings(c.env).nodeStaleAfterMs) });
  })
  .post("/", requireRole("admin"), validate("json", CreateNode), async (c) => {
    const db = database(c.env.DB);
    const { name } = c.req.valid("json");
    if (await db.select({ id: nodes.id }).from(nodes).where(eq(nodes.name, name)).get()) {
      throw new ApiError(409, "node_exists", `a node named ${name} exists already`);
    }
    const { joinToken, joinTokenHash, joinTokenExpiresAt } = await issueJoinToken(c.env);
    const now = Date.now();
    const id = newId();
    try {
      await db.insert(nodes).values({ id, name, joinTokenHash, joinTokenExpiresAt, createdAt: now, updatedAt: now });
    } catch (err) {
      // Two creates racing for the name: the unique index decides.
      if (String(err).includes("UNIQUE")) throw new ApiError(409, "node_exists", `a node named ${name} exists already`);
      throw err;
    }
    const row = (await nodeWithCount(db, id))!;
    return c.json(
      {
        node: nodeView(row.node, 0, sessionSettings(c.env).nodeStaleAfterMs),
        joinToken,
        joinTokenExpiresAt: new Date(joinTokenExpiresAt).toISOString(),
        installCommand: installCommand(new URL(c.req.url).origin, joinToken),
      },
      201,
    );
  })
  .post("/:id/rotate_token", requireRole("admin"), validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const { id } = c.req.valid("param");
    const { joinToken, joinTokenHash, joinTokenExpiresAt } = await issueJoinToken(c.env);
    const updated = await db
      .update(nodes)
      .set({ joinTokenHash, joinTokenExpiresAt, credentialHash: null, updatedAt: Date.now() })
      .where(eq(nodes.id, id))
      .returning({ id: nodes.id, lastSeenAt: nodes.lastSeenAt });
    if (!updated.length) throw new ApiError(404, "not_found", `no node ${id}`);
    // The old credential is void; its live socket must not outlive it. A node that never connected
    // has no session to tell (and the call would create its object here, far from its agent).
    if (updated[0].lastSeenAt !== null)
      await nodeSession(c.env, id).disconnect(CLOSE.unauthorized, "node credential rotated");
    const row = (await nodeWithCount(db, id))!;
    return c.json({
      node: nodeView(row.node, row.vmCount, sessionSettings(c.env).nodeStaleAfterMs),
      joinToken,
      joinTokenExpiresAt: new Date(joinTokenExpiresAt).toISOString(),
      installCommand: installCommand(new URL(c.req.url).origin, joinToken),
    });
  })
  // The agent replaces itself with the bundle this control plane serves; how it went comes back as
  // node events (updated, update_failed, update_rolled_back).
  .post("/:id/update", requireRole("admin"), validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const { id } = c.req.valid("param");
    const row = await nodeWithCount(db, id);
    if (!row) throw new ApiError(404, "not_found", `no node ${id}`);
    const manifest = InstallManifest.parse(await (await installAsset(c.env, c.req.url, INSTALL_MANIFEST_PATH)).json());
    const node = nodeView(row.node, row.vmCount, sessionSettings(c.env).nodeStaleAfterMs);
    if (node.agentVersion === manifest.version)
      return c.json({ success: true, node, targetVersion: manifest.version, upToDate: true });
    const actor = c.get("principal").actor;
    const { version, sha256, size } = manifest;
    const sent = await nodeSession(c.env, id).requestUpdate({ version, sha256, size, requestedBy: actor });
    if (sent === "offline")
      throw new ApiError(
        409,
        "node_offline",
        `the agent of ${row.node.name} is not connected: it cannot be updated now`,
      );
    if (sent === "unsupported")
      throw new ApiError(
        409,
        "update_unsupported",
        `the agent of ${row.node.name} (${node.agentVersion ?? "unknown version"}) cannot update itself: run the install command on the host (Rotate token gives one)`,
      );
    await db.insert(nodeEvents).values({
      nodeId: id,
      at: Date.now(),
      actor,
      action: "update_requested",
      fromVersion: node.agentVersion,
      toVersion: version,
      message: `${actor} asked the agent to update from ${node.agentVersion ?? "unknown"} to ${version}`,
    });
    return c.json({ success: true, node, targetVersion: version, upToDate: false }, 202);
  })
  .get("/:id/events", validate("param", IdParam), async (c) => {
    const { id } = c.req.valid("param");
    const rows = await database(c.env.DB)
      .select()
      .from(nodeEvents)
      .where(eq(nodeEvents.nodeId, id))
      .orderBy(desc(nodeEvents.at), desc(nodeEvents.id))
      .limit(200);
    return c.json({ events: rows.map(nodeEventView) });
  })
  .delete("/:id", requireRole("admin"), validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const { id } = c.req.valid("param");
    const node = await db
      .select({ id: nodes.id, name: nodes.name, lastSeenAt: nodes.lastSeenAt })
      .from(nodes)
      .where(eq(nodes.id, id))
      .get();
    if (!node) throw new ApiError(404, "not_found", `no node ${id}`);
    if (node.lastSeenAt !== null) await nodeSession(c.env, id).disconnect(CLOSE.nodeDeleted, "node deleted", true);
    const now = Date.now();
    const actor = c.get("principal").actor;
    // Its VMs stay (history, events) but belong to no node from now on, flagged: no node that
    // reports them later takes them; an admin re-homes them.
    await runBatch(db, [...orphanStatements(node, actor, now), db.delete(nodes).where(eq(nodes.id, id))]);
    return c.json({ success: true, id });
  });
