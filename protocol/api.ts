// REST API rules and request shapes shared by the Worker's routes, the agent's local API, the web and
// the CLI (the answers' shapes are in rest.ts).
import { z } from "zod";
import { LOG_LINES_RULE, logLinesOf } from "./log-lines.ts";

export { LOG_LINES_DEFAULT, LOG_LINES_MAX, LOG_LINES_MIN } from "./log-lines.ts";

export const ROLES = ["viewer", "operator", "admin"] as const;
export const Role = z.enum(ROLES);
export type Role = z.infer<typeof Role>;
export const roleRank: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export const REQUEST_STATUSES = ["queued", "sent", "done", "failed", "expired"] as const;
export const RequestStatus = z.enum(REQUEST_STATUSES);
export type RequestStatus = z.infer<typeof RequestStatus>;

/** A VM in a transitional state (CREATING, STARTING, STOPPING) for longer than this is stuck: the
 *  dashboard marks it and the reconciler asks its hypervisor. The control plane's `STUCK_AFTER_MS`
 *  var overrides it, and `GET /api/me` says which value applies. */
export const STUCK_AFTER_MS = 120_000;

// ---- live follow: `GET /api/vms/:id/logs/follow` (WebSocket) -----------------------------------
/** Browsers cannot set headers on a WebSocket and a token never goes in a URL: the client offers
 *  `[FOLLOW_SUBPROTOCOL, FOLLOW_TOKEN_PREFIX + token]`, the Worker answers with FOLLOW_SUBPROTOCOL. */
export const FOLLOW_SUBPROTOCOL = "qx.follow.v1";
export const FOLLOW_TOKEN_PREFIX = "bearer.";
export const FOLLOW_STATUSES = [
  "following",
  "rotated",
  "truncated",
  "appeared",
  "missing",
  "node_offline",
  "stopped",
] as const;
export type FollowStatus = (typeof FOLLOW_STATUSES)[number];
/** Close code after `node_offline`. */
export const FOLLOW_CLOSE_NODE_OFFLINE = 4503;
/** Close code after the error `token_revoked`: the token the follow was opened with was revoked. */
export const FOLLOW_CLOSE_REVOKED = 4401;
/** JSON text frames from the Worker to a following browser. */
export type FollowMessage =
  | { type: "append"; text: string }
  | { type: "status"; status: FollowStatus }
  | { type: "error"; code: string; message: string };

/** `?lines=` for every logs route (control plane and agent local API): an integer 1..10000. */
export const LogLinesQuery = z.object({
  lines: z
    .string()
    .optional()
    .transform((v, ctx) => {
      const n = logLinesOf(v);
      if (n === null) {
        ctx.addIssue({ code: "custom", message: LOG_LINES_RULE });
        return z.NEVER;
      }
      return n;
    }),
});
