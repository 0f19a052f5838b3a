// The agent's side door (outside /api): trade a join token for a node credential, and open the
// node's WebSocket — or, where WebSockets are blocked, its long-poll link (poll + send) — each
// authenticated here and then handed to that node's NodeSession.
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { createMiddleware } from "hono/factory";
import type { z } from "zod";
import { and, count, eq, gt } from "drizzle-orm";
import {
  AgentMessage,
  CLOSE,
  EnrollRequest,
  EnrollResponse,
  MAX_SEND_BYTES,
  PollRequest,
  SendRequest,
  type PollResponse,
  type SendResponse,
} from "../../protocol/wire.ts";
import type { AppEnv } from "../app-env.ts";
import { AGENT_UPDATE_PATH, INSTALL_AGENT_PATH } from "../../protocol/install.ts";
import { installAsset } from "./install.ts";
import { bearer, hashSecret, newSecret, TOKEN_PREFIX } from "../auth.ts";
import { database } from "../db/client.ts";
import { nodes } from "../db/schema.ts";
import { ApiError, errorResponse, validate } from "../errors.ts";
import { clientIp, enforceLimit } from "../rate-limit.ts";
import { NODE_ID_HEADER, RECONNECT_SPREAD_HEADER, WATCH_CONN_HEADER, WATCH_SHARD_HEADER } from "../session/headers.ts";
import { livenessNodesPerShard, reconnectSpreadMs } from "../config.ts";
import { livenessShard } from "../session/liveness-watch.ts";
import { nodeSession } from "../session/calls.ts";
import { locationHintFor } from "../session/placement.ts";

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

type AgentEnv = AppEnv & { Variables: { nodeId: string; credentialHash: string } };

const credentialRefused = () =>
  new ApiError(
    401,
    "credential_invalid",
    "node credential refused (revoked, rotated or unknown); enroll again with a new join token",
  );

/** The node whose credential (`Authorization: Bearer qxn_...`) the request carries; 401 otherwise. */
async function authenticatedNode(c: Context<AgentEnv>): Promise<{ nodeId: string; credentialHash: string }> {
  const token = bearer(c.req.header("authorization"));
  if (!token?.startsWith(TOKEN_PREFIX.node))
    throw new ApiError(401, "unauthorized", "a node credential (Bearer qxn_...) is required");
  const credentialHash = await hashSecret(token);
  const node = await database(c.env.DB)
    .select({ id: nodes.id })
    .from(nodes)
    .where(eq(nodes.credentialHash, credentialHash))
    .get();
  if (!node) throw credentialRefused();
  return { nodeId: node.id, credentialHash };
}

const nodeCredential = createMiddleware<AgentEnv>(async (c, next) => {
  const { nodeId, credentialHash } = await authenticatedNode(c);
  c.set("nodeId", nodeId);
  c.set("credentialHash", credentialHash);
  await next();
});

/** A rotate or delete that ran while a new link was being opened found no link to close: checked
 *  again once the link is open, a credential revoked meanwhile closes it at once. */
async function closedIfRevoked(env: Env, nodeId: string, credentialHash: string): Promise<boolean> {
  const node = await database(env.DB)
    .select({ credentialHash: nodes.credentialHash })
    .from(nodes)
    .where(eq(nodes.id, nodeId))
    .get();
  if (node?.credentialHash === credentialHash) return false;
  if (node) await nodeSession(env, nodeId).disconnect(CLOSE.unauthorized, "node credential rotated");
  else await nodeSession(env, nodeId).disconnect(CLOSE.nodeDeleted, "node deleted", true);
  return true;
}

/** The headers of the agent's upgrade as the node's session gets them: built from nothing but the
 *  upgrade itself and what this route vouches for. Forwarding the client's headers would let a
 *  node credential pass as anything the session trusts a header for (a dashboard's log follow). */
function sessionUpgradeHeaders(client: Headers, nodeId: string, reconnectSpreadMs: number): Headers {
  const headers = new Headers({ upgrade: "websocket" });
  for (const [name, value] of client) if (name.startsWith("sec-websocket-")) headers.set(name, value);
  headers.set(NODE_ID_HEADER, nodeId);
  headers.set(RECONNECT_SPREAD_HEADER, String(reconnectSpreadMs));
  return headers;
}

/** A send carries at most a few frames of at most MAX_FRAME_BYTES together (the rest of /agent/*
 *  keeps the Worker's small limit). */
const limitSendBody = bodyLimit({
  maxSize: MAX_SEND_BYTES,
  onError: (c) =>
    errorResponse(
      c,
      413,
      "payload_too_large",
      `a send's body is limited to ${MAX_SEND_BYTES} bytes; send fewer messages per call`,
    ),
});

export const agentRoutes = new Hono<AgentEnv>()
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
      if (!row)
        throw new ApiError(
          401,
          "join_token_invalid",
          "join token unknown, already used or expired; ask an admin for a new one",
        );
      const answer: z.infer<typeof EnrollResponse> = { nodeId: row.id, credential };
      return c.json(answer);
    },
  )
  .get("/connect", async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new ApiError(426, "upgrade_required", "this endpoint only accepts a WebSocket upgrade");
    }
    const { nodeId, credentialHash } = await authenticatedNode(c);
    await enforceLimit(c.env, "CONNECT_LIMITER", `connect:${nodeId}`);
    const headers = sessionUpgradeHeaders(c.req.raw.headers, nodeId, reconnectSpreadMs(await fleetSize(c.env)));
    const opened = await nodeSession(c.env, nodeId, locationHintFor(c.req.raw.cf)).fetch(
      new Request(c.req.raw.url, { method: "GET", headers }),
    );
    if (opened.status === 101 && (await closedIfRevoked(c.env, nodeId, credentialHash))) throw credentialRefused();
    return opened;
  })
  // The link's liveness socket: the same credential, for the node's own current link only.
  .get("/liveness", async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new ApiError(426, "upgrade_required", "this endpoint only accepts a WebSocket upgrade");
    }
    const { nodeId } = await authenticatedNode(c);
    const node = c.req.query("node");
    if (node !== undefined && node !== nodeId)
      throw new ApiError(403, "forbidden", "a node credential opens the liveness socket of its own node only");
    const connId = c.req.query("conn");
    if (!connId || !/^[0-9a-f-]{36}$/i.test(connId))
      throw new ApiError(
        400,
        "invalid_request",
        "conn: the id of the node's current link (welcome.id, a UUID) is required",
      );
    await enforceLimit(c.env, "CONNECT_LIMITER", `liveness:${nodeId}`);
    const shard = livenessShard(nodeId, await fleetSize(c.env), livenessNodesPerShard(c.env));
    const headers = new Headers({
      upgrade: "websocket",
      [NODE_ID_HEADER]: nodeId,
      [WATCH_CONN_HEADER]: connId,
      [WATCH_SHARD_HEADER]: shard,
    });
    for (const [name, value] of c.req.raw.headers) if (name.startsWith("sec-websocket-")) headers.set(name, value);
    return c.env.LIVENESS_WATCH.get(c.env.LIVENESS_WATCH.idFromName(shard)).fetch(
      new Request(c.req.raw.url, { method: "GET", headers }),
    );
  })
  // Long-poll transport: the credential is checked before the body is looked at.
  .post("/poll", nodeCredential, validate("json", PollRequest), async (c) => {
    const nodeId = c.get("nodeId");
    await enforceLimit(c.env, "POLL_LIMITER", `poll:${nodeId}`);
    const req = c.req.valid("json");
    // Only a new link's welcome carries the reconnect window: the fleet's size is not read per poll.
    const spreadMs = req.connId ? undefined : reconnectSpreadMs(await fleetSize(c.env));
    const answer = await nodeSession(c.env, nodeId, locationHintFor(c.req.raw.cf)).poll(nodeId, req, spreadMs);
    if (!answer.ok) throw new ApiError(answer.status, answer.code, answer.message);
    if (!req.connId && (await closedIfRevoked(c.env, nodeId, c.get("credentialHash")))) throw credentialRefused();
    const body: PollResponse = { connId: answer.connId, cursor: answer.cursor, messages: answer.messages };
    return c.json(body);
  })
  // A connected agent updating itself: the served bundle, to nodes only.
  .get(AGENT_UPDATE_PATH.slice("/agent".length), nodeCredential, async (c) => {
    const res = await installAsset(c.env, c.req.url, INSTALL_AGENT_PATH);
    return new Response(res.body, { headers: { "content-type": "text/javascript", "cache-control": "no-store" } });
  })
  .post("/send", limitSendBody, nodeCredential, validate("json", SendRequest), async (c) => {
    const nodeId = c.get("nodeId");
    await enforceLimit(c.env, "SEND_LIMITER", `send:${nodeId}`);
    const { connId, messages } = c.req.valid("json");
    // All or nothing: a batch with one bad message is refused whole, naming it, before any is handled.
    for (const [i, message] of messages.entries()) {
      const parsed = AgentMessage.safeParse(message);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        const where = [`messages[${i}]`, ...(issue?.path ?? []).map(String)].join(".");
        throw new ApiError(400, "invalid_request", `${where}: ${issue?.message ?? "not an agent message"}`);
      }
    }
    // Handed on as the text a socket would carry, so the session parses it on the frame path.
    const answer = await nodeSession(c.env, nodeId, locationHintFor(c.req.raw.cf)).receivePolled(
      nodeId,
      connId,
      messages.map((m) => JSON.stringify(m)),
    );
    if (!answer.ok) throw new ApiError(answer.status, answer.code, answer.message);
    const body: SendResponse = { success: true };
    return c.json(body);
  });
