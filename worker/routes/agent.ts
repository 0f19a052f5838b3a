// The agent's side door (outside /api): trade a join token for a node credential, and open the
// node's WebSocket, authenticated here and then handed to that node's NodeSession.
import { Hono } from "hono";
import type { z } from "zod";
import { and, count, eq, gt } from "drizzle-orm";
import { EnrollRequest, EnrollResponse } from "../../protocol/wire.ts";
import type { AppEnv } from "../app-env.ts";
import { bearer, hashSecret, newSecret, TOKEN_PREFIX } from "../auth.ts";
import { database } from "../db/client.ts";
import { nodes } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { clientIp, enforceLimit } from "../rate-limit.ts";
import { NODE_ID_HEADER, RECONNECT_SPREAD_HEADER } from "../node-session.ts";
import { reconnectSpreadMs } from "../config.ts";
import { nodeSession } from "../session-calls.ts";

// The fleet's size, per isolate for a minute: every connect needs it, and it changes slowly.
const FLEET_SIZE_CACHE_MS = 60_000;
let fleet: { nodes: number; until: number } | null = null;

async function fleetSize(env: Env): Promise<number> {
  const now = Date.now();
  if (fleet && fleet.until > now) return fleet.nodes;
  const row = await database(env.DB).select({ nodes: count() }).from(nodes).get();
  fleet = { nodes: row?.nodes ?? 0, until: now + FLEET_SIZE_CACHE_MS };
  return fleet.nodes;
}

export const agentRoutes = new Hono<AppEnv>()
  .post(
    "/enroll",
    async (c, next) => {
      await enforceLimit(c.env, "ENROLL_LIMITER", `enroll:${clientIp(c.req.raw)}`);
      await next();
    },
    validate("json", EnrollRequest),
    async (c) => {
      const { joinToken, hostname } = c.req.valid("json");
      const credential = newSecret("node");
      const now = Date.now();
      // One statement: the join token is spent exactly when the credential is issued, so a second
      // use (even a concurrent one) finds no row.
      const [row] = await database(c.env.DB)
        .update(nodes)
        .set({
          joinTokenHash: null,
          joinTokenExpiresAt: null,
          credentialHash: await hashSecret(credential),
          ...(hostname ? { hostname } : {}),
          updatedAt: now,
        })
        .where(and(eq(nodes.joinTokenHash, await hashSecret(joinToken)), gt(nodes.joinTokenExpiresAt, now)))
        .returning({ id: nodes.id });
      if (!row) throw new ApiError(401, "join_token_invalid", "join token unknown, already used or expired; ask an admin for a new one");
      const answer: z.infer<typeof EnrollResponse> = { nodeId: row.id, credential };
      return c.json(answer);
    },
  )
  .get("/connect", async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new ApiError(426, "upgrade_required", "this endpoint only accepts a WebSocket upgrade");
    }
    const token = bearer(c.req.header("authorization"));
    if (!token?.startsWith(TOKEN_PREFIX.node)) throw new ApiError(401, "unauthorized", "a node credential (Bearer qxn_...) is required");
    const node = await database(c.env.DB).select({ id: nodes.id }).from(nodes).where(eq(nodes.credentialHash, await hashSecret(token))).get();
    if (!node) throw new ApiError(401, "credential_invalid", "node credential refused (revoked, rotated or unknown); enroll again with a new join token");
    const headers = new Headers(c.req.raw.headers);
    headers.set(NODE_ID_HEADER, node.id);
    headers.set(RECONNECT_SPREAD_HEADER, String(reconnectSpreadMs(await fleetSize(c.env))));
    headers.delete("authorization"); // the session never needs the secret
    return nodeSession(c.env, node.id).fetch(new Request(c.req.raw.url, { method: "GET", headers }));
  });
