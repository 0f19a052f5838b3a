// The REST API's answers, each defined once as a zod schema: the Worker's views and routes are typed
// by them, the OpenAPI document is generated from them, and the web, the CLI and the agent's local
// API read the same types.
import { z } from "zod";
import { RequestStatus, Role } from "./api.ts";
import { MetricsAnswer } from "./metrics.ts";
import { VmState } from "./wire.ts";

const iso = z.string().describe("ISO 8601 time");
const failure = z.object({ code: z.string(), message: z.string() });

/** Every error: `{success: false, error: {code, message}}`. */
export const ErrorBody = z.object({ success: z.literal(false), error: failure });
export type ErrorBody = z.infer<typeof ErrorBody>;

export const VmFlag = z.object({ code: z.string(), message: z.string(), at: iso });
export type VmFlag = z.infer<typeof VmFlag>;

export const VmView = z.object({
  id: z.string(),
  name: z.string(),
  state: VmState,
  node_id: z.string().nullable(),
  vcpus: z.number().int(),
  memoryMiB: z.number().int(),
  stateUpdatedAt: iso,
  updatedAt: iso,
  missing: z.boolean().describe("the host no longer reports this domain (kept, not deleted)"),
  flag: VmFlag.nullable()
    .optional()
    .describe(
      "something the operator must look at, e.g. running_after_forced_reset; cleared by POST /api/vms/:id/clear_flag",
    ),
  libvirtState: z.string().nullable().optional().describe("the state libvirt last reported, whatever `state` says"),
});
export type VmView = z.infer<typeof VmView>;

export const NodeView = z.object({
  id: z.string(),
  name: z.string(),
  connected: z.boolean(),
  lastSeenAt: iso.nullable(),
  hostname: z.string().nullable(),
  agentVersion: z.string().nullable(),
  libvirtVersion: z.string().nullable(),
  vmCount: z.number().int(),
  flag: VmFlag.nullable()
    .optional()
    .describe("something an admin must look at, e.g. vm_cap_exceeded (VMs reported past the cap were not stored)"),
});
export type NodeView = z.infer<typeof NodeView>;

/** A node's audit trail: agent updates asked for (naming who asked) and how they went. */
export const NodeEventView = z.object({
  at: iso,
  actor: z.string(),
  action: z.string().describe("update_requested, updated, update_failed or update_rolled_back"),
  fromVersion: z.string().nullable(),
  toVersion: z.string().nullable(),
  message: z.string().nullable(),
});
export type NodeEventView = z.infer<typeof NodeEventView>;

export const NodeUpdateResponse = z.object({
  success: z.literal(true),
  node: NodeView,
  targetVersion: z.string().describe("the version of the agent this control plane serves"),
  upToDate: z.boolean().describe("true: the agent runs that version already, nothing was sent"),
});
export type NodeUpdateResponse = z.infer<typeof NodeUpdateResponse>;

export const RequestView = z.object({
  id: z.string(),
  kind: z.string(),
  vm_id: z.string().nullable(),
  node_id: z.string().nullable(),
  status: RequestStatus,
  error: failure.nullable(),
  createdAt: iso,
  finishedAt: iso.nullable(),
});
export type RequestView = z.infer<typeof RequestView>;

export const VmEventView = z.object({
  at: iso,
  actor: z.string(),
  action: z.string(),
  fromState: VmState.nullable(),
  toState: VmState.nullable(),
  source: z.string().nullable(),
  message: z.string().nullable(),
  // Verified resets: what the control plane believed, what the hypervisor said (null when forced
  // without asking), the reason the user typed, the last lines of the VM's log.
  expectedState: VmState.nullable().optional(),
  observedState: VmState.nullable().optional(),
  reason: z.string().nullable().optional(),
  logExcerpt: z.string().nullable().optional(),
  /** console.opened: which console */
  type: z.enum(["serial", "vnc"]).optional(),
});
export type VmEventView = z.infer<typeof VmEventView>;

export const ResetStateResponse = z.object({
  success: z.literal(true),
  message: z.string(),
  vm: VmView.pick({ id: true, name: true, state: true, node_id: true }),
  previousState: VmState,
  source: z.enum(["hypervisor", "forced"]),
});
export type ResetStateResponse = z.infer<typeof ResetStateResponse>;

export const PowerResponse = z.object({
  success: z.literal(true),
  vm: VmView,
  request: z.object({ id: z.string(), status: RequestStatus }),
});

export const LogsResponse = z.object({
  qemuLog: z.string(),
  logPath: z.string(),
  logSizeBytes: z.number().int(),
  linesReturned: z.number().int(),
  truncated: z.boolean(),
  lastModified: iso.nullable(),
  files: z
    .array(z.string())
    .optional()
    .describe("files read, newest first: `<name>.log`, then virtlogd's rotated `<name>.log.1`, …"),
  skipped: z
    .array(z.object({ file: z.string(), reason: z.enum(["compressed", "outside_log_dir", "unreadable"]) }))
    .optional()
    .describe("rotated files that exist but were not read (compressed, outside the log dir, unreadable)"),
  capturedAt: iso.optional().describe("when the control plane read this answer from the node"),
});
export type LogsResponse = z.infer<typeof LogsResponse>;

/** `GET /api/vms/:id/logs/last_known`: the latest answer kept, readable while the node is offline. */
export const LastKnownLogResponse = LogsResponse.extend({ capturedAt: iso });
export type LastKnownLogResponse = z.infer<typeof LastKnownLogResponse>;

export const TokenView = z.object({
  id: z.string(),
  name: z.string(),
  role: Role,
  createdAt: iso,
  revokedAt: iso.nullable(),
});
export const JoinTokenResponse = z.object({
  node: NodeView,
  joinToken: z.string(),
  joinTokenExpiresAt: iso,
  installCommand: z
    .string()
    .describe("run as root on the host: installs the agent served by this control plane and enrolls it with joinToken"),
});
export type JoinTokenResponse = z.infer<typeof JoinTokenResponse>;

export const HealthResponse = z.object({ ok: z.literal(true), version: z.string() });

/** `GET /api/me`: who the token is, and the rules the dashboard shows by. */
export const MeResponse = z.object({
  role: Role,
  name: z.string(),
  stuckAfterMs: z
    .number()
    .int()
    .describe("a VM in a transitional state for longer than this is stuck (the reconciler then asks its hypervisor)"),
  via: z.literal("access").optional().describe("present when the caller signed in through Cloudflare Access"),
  email: z.string().nullable().optional().describe("the Access identity's email"),
});
export type MeResponse = z.infer<typeof MeResponse>;

/** `GET /api/vms/:id/metrics` and `GET /api/nodes/:id/metrics` (and the host view's
 *  `/api/v1/vms/:vm_id/metrics`): a range's points, oldest first; an all-null point is a gap. */
export const MetricsResponse = MetricsAnswer.describe(
  "points oldest first, averaged over stepMs; a point whose figures are all null marks a gap (node offline, VM not running)",
);
export type MetricsResponse = z.infer<typeof MetricsResponse>;
