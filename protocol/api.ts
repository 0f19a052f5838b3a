// REST API shapes (SPEC §4) shared by the Worker's routes, the agent's local API, the web and the CLI.
import { z } from "zod";
import { VmState } from "./wire.ts";

export const ROLES = ["viewer", "operator", "admin"] as const;
export const Role = z.enum(ROLES);
export type Role = z.infer<typeof Role>;
export const roleRank: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export const REQUEST_STATUSES = ["queued", "sent", "done", "failed", "expired"] as const;
export const RequestStatus = z.enum(REQUEST_STATUSES);
export type RequestStatus = z.infer<typeof RequestStatus>;

export const LOG_LINES_MIN = 1;
export const LOG_LINES_MAX = 10_000;
export const LOG_LINES_DEFAULT = 100;

export type ApiError = { success: false; error: { code: string; message: string } };

export type NodeView = {
  id: string;
  name: string;
  connected: boolean;
  lastSeenAt: string | null; // ISO 8601
  hostname: string | null;
  agentVersion: string | null;
  libvirtVersion: string | null;
  vmCount: number;
  /** Something an admin must look at, e.g. `vm_cap_exceeded` (VMs it reported past the cap were
   *  not stored). Optional so older servers still type-check. */
  flag?: VmFlag | null;
};

export type VmView = {
  id: string;
  name: string;
  state: VmState;
  node_id: string | null;
  vcpus: number;
  memoryMiB: number;
  stateUpdatedAt: string; // ISO 8601
  updatedAt: string;
  /** The host no longer reports this domain (kept, not deleted). */
  missing: boolean;
  /** Something the operator must look at (issue 7), e.g. `running_after_forced_reset`; cleared by
   *  `POST /api/vms/:id/clear_flag`. Optional so older servers still type-check. */
  flag?: VmFlag | null;
};

export type VmFlag = { code: string; message: string; at: string };

export type RequestView = {
  id: string;
  kind: string;
  vm_id: string | null;
  node_id: string | null;
  status: RequestStatus;
  error: { code: string; message: string } | null;
  createdAt: string;
  finishedAt: string | null;
};

export type VmEventView = {
  at: string;
  actor: string;
  action: string;
  fromState: VmState | null;
  toState: VmState | null;
  source: string | null;
  message: string | null;
  /** Verified resets (issue 7): what the control plane believed, what the hypervisor said (null when
   *  forced without asking), the reason the user typed, the last lines of the VM's log (operators
   *  and admins only: log text never reaches a viewer). */
  expectedState?: VmState | null;
  observedState?: VmState | null;
  reason?: string | null;
  logExcerpt?: string | null;
};

export type ResetStateResponse = {
  success: true;
  message: string;
  vm: { id: string; name: string; state: VmState; node_id: string | null };
  previousState: VmState;
  source: "hypervisor" | "forced";
};

export type LogsResponse = {
  qemuLog: string;
  logPath: string;
  logSizeBytes: number;
  linesReturned: number;
  truncated: boolean;
  lastModified: string | null;
  /** Files read, newest first (`<name>.log`, `<name>.log.1`, …) when the answer continued into
   *  virtlogd's rotated files (issue 7). */
  files?: string[];
  /** A rotated file that exists but was not read (compressed, outside the log dir, unreadable). */
  skipped?: { file: string; reason: "compressed" | "outside_log_dir" | "unreadable" }[];
  /** When the control plane read this answer from the node (ISO 8601). */
  capturedAt?: string;
};

/** `GET /api/vms/:id/logs/last_known`: the latest answer kept while the node is offline. */
export type LastKnownLogResponse = Omit<LogsResponse, "capturedAt"> & { capturedAt: string };

// ---- live follow: `GET /api/vms/:id/logs/follow` (WebSocket) -----------------------------------
/** Browsers cannot set headers on a WebSocket and a token never goes in a URL: the client offers
 *  `[FOLLOW_SUBPROTOCOL, FOLLOW_TOKEN_PREFIX + token]`, the Worker answers with FOLLOW_SUBPROTOCOL. */
export const FOLLOW_SUBPROTOCOL = "qx.follow.v1";
export const FOLLOW_TOKEN_PREFIX = "bearer.";
export const FOLLOW_STATUSES = ["following", "rotated", "truncated", "appeared", "missing", "node_offline", "stopped"] as const;
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
      if (v === undefined || v === "") return LOG_LINES_DEFAULT;
      const n = /^\d{1,6}$/.test(v) ? Number(v) : NaN;
      if (!Number.isInteger(n) || n < LOG_LINES_MIN || n > LOG_LINES_MAX) {
        ctx.addIssue({ code: "custom", message: `lines must be an integer from ${LOG_LINES_MIN} to ${LOG_LINES_MAX}` });
        return z.NEVER;
      }
      return n;
    }),
});
