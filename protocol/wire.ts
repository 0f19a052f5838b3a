// The one wire protocol between the Worker (NodeSession), the agent and the web: every frame is
// `{type, id, payload}`, validated with zod. A message shape is defined here; the agent, which does
// not load zod, checks what it receives with server-frames.ts, held to these schemas by tests.
import { z } from "zod";
import { DIGEST_BUCKETS } from "./digest.ts";
import { MetricsPayload } from "./metrics.ts";
import {
  DOMAIN_NAME_MAX,
  DOMAIN_NAME_RULE,
  EXCERPT_MAX_BYTES,
  EXCERPT_MAX_LINES,
  INVENTORY_CHUNK,
  LIBVIRT_STATES,
  LIVE_METRICS_MAX_LEASE_MS,
  LOG_CHUNK_BYTES,
  MAX_FRAME_BYTES,
  MAX_LOG_BYTES,
  MAX_POLL_MESSAGES,
  MAX_SEND_MESSAGES,
  VM_STATES,
  domainNameAllowed,
} from "./wire-constants.ts";

export * from "./wire-constants.ts";

export const VmState = z.enum(VM_STATES);
export type VmState = z.infer<typeof VmState>;
export const LibvirtState = z.enum(LIBVIRT_STATES);
export type LibvirtState = z.infer<typeof LibvirtState>;
const features = z.array(z.string().max(64)).max(64).optional();

const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, "a UUID");
/** See domainNameAllowed. */
export const DomainName = z.string().min(1).max(DOMAIN_NAME_MAX).refine(domainNameAllowed, DOMAIN_NAME_RULE);

export const VmInfo = z.object({
  uuid,
  name: DomainName,
  state: VmState,
  libvirtState: LibvirtState,
  vcpus: z.number().int().min(0).max(4096),
  memoryMiB: z
    .number()
    .int()
    .min(0)
    .max(64 * 1024 * 1024),
});
export type VmInfo = z.infer<typeof VmInfo>;

const frame = <T extends string, P extends z.ZodTypeAny>(type: T, payload: P) =>
  z.object({ type: z.literal(type), id: z.string().min(1).max(64), payload });

/** Every command carries the request id (frame id) and an absolute deadline in the control
 *  plane's clock (epoch ms); the agent corrects for skew with `welcome.serverTime`. */
const commandTarget = { vmId: uuid, name: DomainName, deadline: z.number().int().positive() };

// ---- Worker -> agent -------------------------------------------------------------------------
/** `reconnectSpreadMs`: after losing this link, the agent spreads its reconnect attempts over at
 *  least this window (full jitter), sized by the control plane to its fleet so that a restart or
 *  deploy, which drops every agent at once, does not bring them all back in the same second. */
export const Welcome = frame(
  "welcome",
  z.object({
    nodeId: z.string(),
    serverTime: z.number().int(),
    heartbeatMs: z.number().int().positive(),
    reconnectSpreadMs: z.number().int().min(0).max(600_000).optional(),
    /** ping the liveness socket once per this many heartbeats (livenessHeartbeats; 1 if absent) */
    livenessHeartbeats: z.number().int().min(1).max(16).optional(),
    /** the WIRE_FEATURES this control plane understands */
    features,
  }),
);
/** A reset's vm.state also asks for the log's last `excerptLines` lines (≤ EXCERPT_MAX_BYTES) for its
 *  event: one round trip instead of a state query followed by a log read. */
export const VmStateCommand = frame(
  "vm.state",
  z.object({ ...commandTarget, excerptLines: z.number().int().min(1).max(EXCERPT_MAX_LINES).optional() }),
);
export const VmLogsCommand = frame(
  "vm.logs",
  z.object({
    ...commandTarget,
    lines: z.number().int().min(1).max(10_000),
    maxBytes: z.number().int().positive().max(MAX_LOG_BYTES),
  }),
);
export const VmStartCommand = frame("vm.start", z.object(commandTarget));
/** Graceful stop: the agent acks at once, then reports the outcome within `graceMs`. */
export const VmStopCommand = frame(
  "vm.stop",
  z.object({ ...commandTarget, graceMs: z.number().int().positive().max(3_600_000) }),
);
export const VmForceStopCommand = frame("vm.forceStop", z.object(commandTarget));
/** A digest bucket: the first hex digit of a VM's UUID (protocol/digest.ts). */
export const DigestBucket = z.string().regex(/^[0-9a-f]$/, "a hex digit");
/** Which VMs a scoped resync or its inventory covers: these UUIDs and every VM whose UUID falls in
 *  these buckets (either may be empty). */
export const InventoryScope = z.object({
  vmIds: z.array(uuid).max(INVENTORY_CHUNK).optional(),
  buckets: z.array(DigestBucket).max(DIGEST_BUCKETS).optional(),
});
export type InventoryScope = z.infer<typeof InventoryScope>;
/** Ask the agent for a fresh full inventory (after a control-plane restart, or on demand). With
 *  `vmIds` / `buckets` (agent feature `scopedResync`): only those VMs, answered by an `inventory`
 *  whose `syncId` is this frame's id and whose `scope` repeats the request. */
export const ResyncCommand = frame("resync", InventoryScope);
/** Live follow (`tail -F`): the agent acks, then streams `log.append` frames with this frame's id
 *  (the follow id) through rotation and truncation until `vm.logs.unfollow` or the link drops. */
export const VmLogsFollowCommand = frame("vm.logs.follow", z.object(commandTarget));
export const VmLogsUnfollowCommand = frame("vm.logs.unfollow", z.object({}));
/** Something the agent sent was not taken, said once per frame concerned (`id` is that frame's):
 *  `vm_cap_exceeded` when the node would hold more VMs than the control plane allows. */
export const ServerError = frame("error", z.object({ code: z.string().max(64), message: z.string().max(2000) }));

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "a hex SHA-256");
/** Replace yourself (feature `update`): fetch the bundle from AGENT_UPDATE_PATH with the node
 *  credential, refuse it unless its size and SHA-256 are these, swap it in and exit for the service
 *  manager to start the new one. `requestedBy` is the admin who asked, for the agent's report. */
export const AgentUpdateCommand = frame(
  "agent.update",
  z.object({
    version: z.string().min(1).max(64),
    sha256: sha256Hex,
    size: z
      .number()
      .int()
      .positive()
      .max(64 * 1024 * 1024),
    requestedBy: z.string().max(200),
  }),
);
export type AgentUpdatePayload = z.infer<typeof AgentUpdateCommand>["payload"];
/** Opens a VM's serial console (feature `console`; the frame id is the console's id): one stream per
 *  VM, without taking it from another holder unless `force`. Output comes as binary frames on
 *  `channel`, at most `windowBytes` past the last `console.ack`; the agent answers `console.opened`,
 *  or `console.closed` when it cannot open it. */
export const ConsoleOpenCommand = frame(
  "console.open",
  z.object({
    vmId: uuid,
    name: DomainName,
    channel: z.number().int().min(1).max(0xffffffff),
    force: z.boolean(),
    windowBytes: z
      .number()
      .int()
      .positive()
      .max(16 * 1024 * 1024),
    /** a graphical console (feature `vnc`): one RFB connection to the domain's VNC server for one
     *  viewer; a read-only viewer's input events are dropped by the agent */
    display: z.object({ type: z.literal("vnc"), mode: z.enum(["rw", "ro"]) }).optional(),
  }),
);
/** Output up to agent offset `offset` is kept: the agent may send that much more. */
export const ConsoleAckCommand = frame("console.ack", z.object({ offset: z.number().int().min(0) }));
/** Nobody watches any more: the agent closes the stream (answered with `console.closed`). */
export const ConsoleCloseCommand = frame("console.close", z.object({}));

/** Someone watches this node's charts (feature `liveMetrics`): send each sample tick as it is taken
 *  for `leaseMs` from now (renewed while they watch), then batch again. A lease, not an on/off
 *  switch: a dashboard that leaves without a word costs at most one lease of single-tick frames. */
export const MetricsLiveCommand = frame(
  "metrics.live",
  z.object({ leaseMs: z.number().int().positive().max(LIVE_METRICS_MAX_LEASE_MS) }),
);

/** The batch of `metrics` frames named by `id` (its `batch.id`) is stored (feature `metricsAck`):
 *  the agent may forget its ticks. */
export const MetricsStoredCommand = frame("metrics.stored", z.object({}));

export const ServerMessage = z.discriminatedUnion("type", [
  Welcome,
  VmStateCommand,
  VmLogsCommand,
  VmStartCommand,
  VmStopCommand,
  VmForceStopCommand,
  ResyncCommand,
  VmLogsFollowCommand,
  VmLogsUnfollowCommand,
  ServerError,
  AgentUpdateCommand,
  ConsoleOpenCommand,
  ConsoleAckCommand,
  ConsoleCloseCommand,
  MetricsLiveCommand,
  MetricsStoredCommand,
]);
export type ServerMessage = z.infer<typeof ServerMessage>;
export type Command = Exclude<
  ServerMessage,
  {
    type:
      | "agent.update"
      | "welcome"
      | "resync"
      | "vm.logs.follow"
      | "vm.logs.unfollow"
      | "error"
      | "console.open"
      | "console.ack"
      | "console.close"
      | "metrics.live"
      | "metrics.stored";
  }
>;
export type CommandKind = Command["type"];
export const COMMAND_KINDS = ["vm.state", "vm.logs", "vm.start", "vm.stop", "vm.forceStop"] as const;

// ---- Agent -> worker -------------------------------------------------------------------------
export const Hello = frame(
  "hello",
  z.object({
    agentVersion: z.string().max(64),
    hostname: z.string().max(255),
    libvirtVersion: z.string().max(64),
    protocolVersion: z.number().int(),
    /** the WIRE_FEATURES this agent understands */
    features,
  }),
);
/** Full inventory, possibly over several frames: the same `syncId`, `seq` from 0, `done` on the
 *  last. VMs of the node missing from a completed sync are marked missing, never deleted. With
 *  `scope` (the answer to a scoped `resync`, sent only then) it is complete for that scope alone:
 *  the node's VMs inside the scope and missing from it are missing; VMs outside it are untouched. */
export const Inventory = frame(
  "inventory",
  z.object({
    syncId: z.string().max(64),
    seq: z.number().int().min(0).max(10_000),
    done: z.boolean(),
    vms: z.array(VmInfo).max(INVENTORY_CHUNK),
    scope: InventoryScope.optional(),
  }),
);
/** Anti-entropy (feature `digest`): every digest interval (default 60 s), after any `vm.changed` of
 *  the same look at libvirt, the digest of everything the agent has reported (protocol/digest.ts).
 *  The control plane computes the same over its records of the node (missing ones left out) and
 *  sends a scoped `resync` for the buckets that differ. */
export const InventoryDigestFrame = frame(
  "inventory.digest",
  z.object({
    count: z.number().int().min(0).max(1_000_000),
    buckets: z.array(z.string().regex(/^[0-9a-f]{16}$/)).length(DIGEST_BUCKETS),
  }),
);
/** Differences since the last report (the agent polls libvirt: the binding has no events). */
export const VmChanged = frame(
  "vm.changed",
  z.object({ vms: z.array(VmInfo).max(INVENTORY_CHUNK), removed: z.array(uuid).max(INVENTORY_CHUNK) }),
);
/** A power action was received in time and is being carried out. */
export const Ack = frame("ack", z.object({}));
/** A power action is still under way (feature `progress`): sent with the request's id from the ack
 *  until its `result` or `error`, at least every `nextWithinMs`. `queued`: waiting behind another
 *  action on the same VM (it is dropped as `expired` if its deadline passes there); `working`: being
 *  carried out (a start libvirt has not finished, a graceful stop waiting for the guest).
 *  `elapsedMs` counts from the ack; `state` / `libvirtState` when the agent just saw them. */
export const Progress = frame(
  "progress",
  z.object({
    phase: z.enum(["queued", "working"]),
    elapsedMs: z.number().int().min(0),
    nextWithinMs: z.number().int().positive(),
    state: VmState.optional(),
    libvirtState: LibvirtState.optional(),
  }),
);

/** `logExcerpt` only when the command asked for one: the log's last lines, or null when the VM has no
 *  log the agent can read (an agent from before this field leaves it out). */
const DomainState = z.object({ state: VmState, libvirtState: LibvirtState });
export const StateResult = DomainState.extend({ logExcerpt: z.string().max(EXCERPT_MAX_BYTES).nullable().optional() });
export type StateResult = z.infer<typeof StateResult>;
/** Outcome of start / stop / forceStop: the real state afterwards; `timedOut` when a graceful
 *  stop's grace ran out with the guest still up. */
export const PowerResult = DomainState.extend({ timedOut: z.boolean().default(false) });
export type PowerResult = z.infer<typeof PowerResult>;
export const LogsResult = z.object({
  logPath: z.string().max(4096),
  logSizeBytes: z.number().int().min(0),
  linesReturned: z.number().int().min(0),
  truncated: z.boolean(),
  lastModified: z.string().nullable(), // ISO 8601
  chunks: z.number().int().min(0).max(64), // `log.chunk` frames sent before this result
  /** the whole text, in this frame instead of `log.chunk` frames (`chunks` is then 0); sent only to a
   *  control plane that announced `logText` */
  text: z.string().optional(),
  /** the files read, newest first: `<name>.log`, then virtlogd's rotated `<name>.log.1`, `.2`, ... */
  files: z.array(z.string().max(4096)).max(32).optional(),
  /** rotated files that exist but were not read: compressed, pointing outside the log dir, or
   *  unreadable. The answer stops at the first one (`truncated` is then true). */
  skipped: z
    .array(z.object({ file: z.string().max(4096), reason: z.enum(["compressed", "outside_log_dir", "unreadable"]) }))
    .max(4)
    .optional(),
});
export type LogsResult = z.infer<typeof LogsResult>;

/** A result as received: which kind it is depends on its request, so the session parses the payload
 *  again with PowerResult, StateResult or LogsResult (the union keeps every field for that). */
export const Result = frame(
  "result",
  z.union([
    LogsResult,
    DomainState.extend({
      timedOut: z.boolean().optional(),
      logExcerpt: z.string().max(MAX_FRAME_BYTES).nullable().optional(),
    }),
  ]),
);
/** One piece of a log answer's text, in order; the final `result` says how many came. */
export const LogChunk = frame("log.chunk", z.object({ seq: z.number().int().min(0).max(63), text: z.string() }));

/** New text of a followed log, in order (`seq` counts per follow); `event` marks what happened to
 *  the file before this text: rotated (a new file under the name), truncated, or appeared. */
export const LogAppend = frame(
  "log.append",
  z.object({
    seq: z.number().int().min(0),
    text: z.string().max(LOG_CHUNK_BYTES),
    event: z.enum(["rotated", "truncated", "appeared", "missing"]).optional(),
  }),
);

export const AGENT_ERROR_CODES = [
  "expired", // deadline had passed when the command was read: not carried out
  "vm_not_found",
  "log_not_found",
  "invalid_name",
  "not_allowed", // e.g. start of a running domain
  "overridden", // a graceful stop ended by a force stop of the same VM (feature `override`)
  "libvirt_error",
  "internal",
] as const;
export const AgentErrorCode = z.enum(AGENT_ERROR_CODES);
/** On a power action, `state` / `libvirtState`: the domain as libvirt showed it right after the
 *  failure (absent when libvirt could not say, e.g. the domain is gone or libvirt is down). */
export const ErrorReply = frame(
  "error",
  z.object({
    code: AgentErrorCode,
    message: z.string().max(2000),
    state: VmState.optional(),
    libvirtState: LibvirtState.optional(),
  }),
);

export const MetricsFrame = frame("metrics", MetricsPayload);
/** How an `agent.update` went (feature `update`), sent by the agent that can say it: `failed` by the
 *  old agent (download or check failed: it keeps running), `updated` by the new one once connected,
 *  `rolled_back` by the old one again after the new one could not connect and was put back. */
export const UPDATE_OUTCOMES = ["updated", "failed", "rolled_back"] as const;
export const AgentUpdateStatus = frame(
  "agent.update.status",
  z.object({
    outcome: z.enum(UPDATE_OUTCOMES),
    fromVersion: z.string().max(64),
    toVersion: z.string().max(64),
    requestedBy: z.string().max(200).optional(),
    message: z.string().max(2000),
  }),
);
/** A console's stream is open (id: the console's). */
export const ConsoleOpened = frame("console.opened", z.object({}));
/** A console's stream ended or could not be opened, and why: `console_busy` (another client holds
 *  it on the host), `vm_stopped` (the domain is not running or stopped), `taken_over` (another
 *  client forced it open), `no_console` (the domain or driver has none), `closed` (asked to),
 *  `error` (anything else, said in `message`). */
export const CONSOLE_END_REASONS = [
  "console_busy",
  "vm_stopped",
  "taken_over",
  "no_console",
  "no_display",
  "password_required",
  "closed",
  "error",
] as const;
export const ConsoleClosed = frame(
  "console.closed",
  z.object({ reason: z.enum(CONSOLE_END_REASONS), message: z.string().max(2000).optional() }),
);
export const AgentMessage = z.discriminatedUnion("type", [
  Hello,
  Inventory,
  VmChanged,
  Ack,
  Result,
  LogChunk,
  LogAppend,
  ErrorReply,
  Progress,
  InventoryDigestFrame,
  MetricsFrame,
  AgentUpdateStatus,
  ConsoleOpened,
  ConsoleClosed,
]);
export type AgentMessage = z.infer<typeof AgentMessage>;

/** Parse one text frame; null when it is not JSON or not a known message. */
export function parseFrame<T extends z.ZodTypeAny>(schema: T, data: string): z.infer<T> | null {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return null;
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? parsed.data : null;
}

// ---- HTTP between agent and Worker: the paths are in wire-constants.ts ---------------------------
export const EnrollRequest = z.object({
  joinToken: z.string().min(1).max(200),
  hostname: z.string().max(255).optional(),
});
export const EnrollResponse = z.object({ nodeId: z.string(), credential: z.string() });

// ---- Long-poll transport: the same frames over plain HTTPS (paths and limits in wire-constants.ts)

const connId = z.string().min(1).max(64);
export const PollRequest = z.object({
  /** absent: open a new link */
  connId: connId.optional(),
  /** the `cursor` of the last answer received on this link: frames up to it are not handed out again
   *  (an answer lost on the way is delivered again with the next poll) */
  cursor: z.string().max(80).optional(),
  /** how long to hold the poll when nothing is due (the server caps it at its own maximum) */
  waitMs: z.number().int().min(0).max(120_000).optional(),
});
export type PollRequest = z.infer<typeof PollRequest>;
export const PollResponse = z.object({
  connId,
  cursor: z.string().max(80),
  messages: z.array(ServerMessage).max(MAX_POLL_MESSAGES),
});
export type PollResponse = z.infer<typeof PollResponse>;
/** `messages` are checked one by one against AgentMessage (a 400 names the first bad one). */
export const SendRequest = z.object({ connId, messages: z.array(z.unknown()).min(1).max(MAX_SEND_MESSAGES) });
export type SendRequest = z.infer<typeof SendRequest>;
export const SendResponse = z.object({ success: z.literal(true) });
export type SendResponse = z.infer<typeof SendResponse>;
