// Quantix Edge control plane Worker: the Hono app (REST API + agent endpoint) and the NodeSession
// Durable Object class. Static dashboard files are served by the assets binding before this runs.
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { AppEnv } from "./app-env.ts";
import { authenticate } from "./auth.ts";
import { AGENT_SEND_PATH } from "../protocol/wire.ts";
import { ApiError, errorResponse } from "./errors.ts";
import { agentRoutes } from "./routes/agent.ts";
import { consoleSocketRoutes, consoleTicketRoutes } from "./routes/console.ts";
import { debugRoutes } from "./routes/debug.ts";
import { healthRoutes } from "./routes/health.ts";
import { installRoutes } from "./routes/install.ts";
import { meRoutes } from "./routes/me.ts";
import { metricRoutes } from "./routes/metrics.ts";
import { openApiDocument } from "./openapi.ts";
import { nodeRoutes } from "./routes/nodes.ts";
import { notificationRoutes } from "./routes/notifications.ts";
import { reportStuckVms } from "./notifications/stuck-scan.ts";
import { applyRetention } from "./retention.ts";
import { rehomeRoutes } from "./routes/rehome.ts";
import { requestRoutes } from "./routes/requests.ts";
import { tokenRoutes } from "./routes/tokens.ts";
import { vmRoutes } from "./routes/vms.ts";

export { NodeSession } from "./session/node-session.ts";
export { NotificationOutbox } from "./notifications/outbox.ts";
export { LivenessWatch } from "./session/liveness-watch.ts";

/** No request of this API needs more than a few KiB; refuse big bodies before parsing them. */
const MAX_BODY_BYTES = 64 * 1024;
const limitBody = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: (c) => errorResponse(c, 413, "payload_too_large", `request bodies are limited to ${MAX_BODY_BYTES} bytes`),
});

// A long-poll send carries agent frames (up to MAX_SEND_BYTES): its route sets its own limit.
const limitAgentBody: MiddlewareHandler<AppEnv> = (c, next) =>
  c.req.path === AGENT_SEND_PATH ? next() : limitBody(c, next);

const app = new Hono<AppEnv>()
  .use("/api/*", limitBody)
  .use("/agent/*", limitAgentBody)
  .route("/api/health", healthRoutes) // before authentication: the open /api routes
  .get("/api/openapi.json", (c) => c.json(openApiDocument()))
  .route("/", installRoutes) // the installer and the agent bundle: open, nothing in them is secret
  // A console socket is authorized by the ticket in its first message, not by a header.
  .route("/api/vms", consoleSocketRoutes)
  .use("/api/*", authenticate)
  .route("/api/me", meRoutes)
  .route("/api/tokens", tokenRoutes)
  .route("/api/nodes", nodeRoutes)
  .route("/api/vms", vmRoutes)
  .route("/api/vms", rehomeRoutes)
  .route("/api/vms", consoleTicketRoutes)
  .route("/api", metricRoutes)
  .route("/api/requests", requestRoutes)
  .route("/api/notifications", notificationRoutes)
  .route("/api/debug", debugRoutes)
  .route("/agent", agentRoutes);

app.notFound((c) => errorResponse(c, 404, "not_found", `no route ${c.req.method} ${new URL(c.req.url).pathname}`));

app.onError((err, c) => {
  if (err instanceof ApiError) return errorResponse(c, err.status, err.code, err.message, err.headers);
  // Hono's own 4xx (e.g. a body that is not JSON) keep their status, in our envelope.
  if (err instanceof HTTPException && err.status < 500) {
    return errorResponse(
      c,
      err.status,
      err.status === 400 ? "invalid_request" : "http_error",
      err.message || "bad request",
    );
  }
  console.error(`unhandled error on ${c.req.method} ${new URL(c.req.url).pathname}`, err);
  return errorResponse(c, 500, "internal", "internal error");
});

/** The Worker: the app's fetch, and the once-a-minute cron (wrangler.toml `[triggers]`) that reports
 *  VMs stuck on nodes whose agent is away (the reconciler covers connected ones) and applies the VM
 *  events' retention. */
export default Object.assign(app, {
  scheduled(_controller: ScheduledController, env: Env, ctx: ExecutionContext) {
    ctx.waitUntil(reportStuckVms(env));
    ctx.waitUntil(
      applyRetention(env).catch((err) => {
        console.error("vm events retention run failed", err);
      }),
    );
  },
});
