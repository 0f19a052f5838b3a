// The wire protocol's plain values: limits, timings, close codes, feature names, state tables and
// HTTP paths. No zod here, so the agent loads them without building a schema; wire.ts re-exports all.

export const PROTOCOL_VERSION = 1;

/** Largest frame either side accepts; anything bigger is refused with CLOSE.tooLarge. */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Log text per answer: at most 8 MiB, sent as `log.chunk` frames under MAX_FRAME_BYTES. */
export const MAX_LOG_BYTES = 8 * 1024 * 1024;
/** Text per `log.chunk` frame, leaving room for the envelope and JSON escaping. */
export const LOG_CHUNK_BYTES = 256 * 1024;
/** VMs per `inventory` frame: keeps a 5,000-domain host well under MAX_FRAME_BYTES per frame. */
export const INVENTORY_CHUNK = 500;

/** Liveness: the agent sends PING_FRAME every HEARTBEAT_MS; the Durable Object answers PONG_FRAME
 *  through setWebSocketAutoResponse (exact string match), so pings never wake it. */
export const HEARTBEAT_MS = 20_000;
export const PING_FRAME = '{"type":"ping"}';
export const PONG_FRAME = '{"type":"pong"}';
/** No sign of life for this long: the node is offline. */
export const OFFLINE_AFTER_MS = 60_000;
/** How many of its link's heartbeats the agent lets pass between two pings of its liveness socket
 *  (the welcome's `livenessHeartbeats`): as many as leave a heartbeat to spare inside OFFLINE_AFTER_MS
 *  (2 at the defaults: a ping every 40 s), so one ping late by a heartbeat still does not let the
 *  shard call a live node silent. A shard's lapse only makes the node's object look at its link's own
 *  last sign (pinged every heartbeat), and each ping is a billed message. */
export function livenessHeartbeats(offlineAfterMs: number, heartbeatMs: number): number {
  return Math.max(1, Math.min(16, Math.floor(offlineAfterMs / heartbeatMs) - 1));
}
/** A link watched by a liveness shard is still checked by its node's own object once per this many
 *  LAST_SEEN_WRITE_MS (six hours by default): should the shard be lost without a word (its sockets
 *  gone, the agent unable to open another), a dead link still ends and its node goes offline. */
export const WATCHED_CHECK_INTERVALS = 6;

/** Default deadlines: 10 s for an answer or an acknowledgement, 60 s for a guest to shut down. */
export const QUERY_TIMEOUT_MS = 10_000; // vm.state, vm.logs
/** A reset event's log excerpt: at most this many last lines and bytes of the VM's log. */
export const EXCERPT_MAX_LINES = 50;
export const EXCERPT_MAX_BYTES = 4 * 1024;
export const ACK_TIMEOUT_MS = 10_000; // power actions: time for the agent to acknowledge
export const STOP_GRACE_MS = 60_000; // graceful stop: how long the agent waits for the guest
/** Long operations: an agent reports progress this often by default while a power action is under
 *  way, and the control plane gives an operation at most OPERATION_CAP_MS from its request. */
export const PROGRESS_INTERVAL_MS = 3_000;
export const OPERATION_CAP_MS = 600_000;

/** The longest live-metrics lease a `metrics.live` may give (see MetricsLiveCommand). */
export const LIVE_METRICS_MAX_LEASE_MS = 120_000;

/** Custom WebSocket close codes (4000-4999 are the application's). */
/** What each side of a link understands beyond PROTOCOL_VERSION 1, announced in `hello.features`
 *  (the agent's) and `welcome.features` (the control plane's). A side sends a frame or value named
 *  here only when the other side announced it, so an older peer never sees what it would refuse:
 *  - `progress`: `progress` frames while a power action is queued or working (agent → worker);
 *  - `digest`: `inventory.digest` frames (agent → worker);
 *  - `override`: `vm.forceStop` ends a graceful stop still waiting for the guest, which is answered
 *    `error` code `overridden` (the agent announces the behaviour; it uses the code only when the
 *    worker announced it, else `not_allowed` with the same message);
 *  - `scopedResync`: `resync` with `vmIds` / `buckets`, answered by a scoped `inventory` (agent);
 *  - `metrics`: `metrics` frames, running VMs' figures, a batch of sample ticks each (protocol/metrics.ts);
 *  - `liveMetrics`: `metrics.live` (worker → agent): someone is watching the node's charts, so send
 *    each tick as it is taken, for the lease given, then go back to batches (agent);
 *  - `update`: `agent.update` (worker → agent: replace yourself with the bundle this control plane
 *    serves) and `agent.update.status` (agent → worker: how it went);
 *  An agent error on a power action carries `state` / `libvirtState` whatever was announced: an
 *  - `console`: serial consoles (`console.*` frames and binary frames, protocol/console.ts), on the
 *    WebSocket link only;
 *  - `vnc`: graphical consoles, a `console.open` with `display` (agent);
 *  - `livenessWatch`: the control plane takes a second, ping-only socket at AGENT_LIVENESS_PATH for
 *    the link's liveness (worker); an agent that opens none is watched by its node's own alarm;
 *  - `metricsAck`: a `metrics` frame may carry `batch` (its batch and whether it is the last frame),
 *    and the control plane answers a batch's last frame with `metrics.stored` once the whole batch is
 *    stored (worker): the agent keeps a batch's ticks until then, so the control plane may hold a
 *    batch's frames in memory and write its hours once instead of once per frame;
 *  - `logText`: a `vm.logs` result may carry the whole text itself (`text`, with `chunks` 0) when it
 *    fits in one frame (agent): one frame to read instead of a `log.chunk` and a `result`.
 *  An agent error on a power action carries `state` / `libvirtState` whatever was announced: an
 *  older parser drops unknown fields. Unknown feature names are ignored. */
export const WIRE_FEATURES = [
  "progress",
  "digest",
  "override",
  "scopedResync",
  "metrics",
  "update",
  "console",
  "vnc",
  "liveMetrics",
  "livenessWatch",
  "metricsAck",
  "logText",
] as const;
export type WireFeature = (typeof WIRE_FEATURES)[number];

export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 4000,
  unauthorized: 4001, // credential refused or revoked: the agent must not retry it
  replaced: 4002, // a newer connection for the same node took over
  tooLarge: 4003,
  nodeDeleted: 4004,
  dead: 4008, // no heartbeat in time
  flood: 4009, // too many messages
  overloaded: 4010, // over the node's work budget, or its inbox backlog full: the reason says which
} as const;

export const VM_STATES = [
  "CREATING",
  "STARTING",
  "RUNNING",
  "STOPPING",
  "STOPPED",
  "PAUSED",
  "SUSPENDED",
  "ERROR",
  "UNKNOWN",
] as const;
export type VmState = (typeof VM_STATES)[number];

export const TRANSITIONAL_STATES: readonly VmState[] = ["CREATING", "STARTING", "STOPPING"];
export const canStart = (s: VmState) => s === "STOPPED" || s === "PAUSED";
export const canStop = (s: VmState) => s === "RUNNING" || s === "PAUSED";

/** libvirt virDomainState names as the agent reports them. */
export const LIBVIRT_STATES = [
  "nostate",
  "running",
  "blocked",
  "paused",
  "shutdown",
  "shutoff",
  "crashed",
  "pmsuspended",
] as const;
export type LibvirtState = (typeof LIBVIRT_STATES)[number];

/** libvirt's domain state as the control plane's VM state (blocked counts as running, a domain
 *  shutting down as STOPPING, crashed as ERROR). */
export function mapLibvirtState(s: LibvirtState): VmState {
  switch (s) {
    case "running":
    case "blocked":
      return "RUNNING";
    case "paused":
      return "PAUSED";
    case "shutdown":
      return "STOPPING";
    case "shutoff":
      return "STOPPED";
    case "crashed":
      return "ERROR";
    case "pmsuspended":
      return "SUSPENDED";
    case "nostate":
      return "UNKNOWN";
  }
}

/** libvirt domain names as libvirt allows them: spaces, Unicode (in whichever normal form it was
 *  given), quotes, `%`, dots, even `..`. Only what libvirt itself refuses is refused (a `/`, NUL); a
 *  log path made from a name is confined where the file is opened (the agent's log-path.ts). */
export const DOMAIN_NAME_MAX = 1000;
export const DOMAIN_NAME_RULE = "a domain name holds no '/' or NUL (libvirt refuses both)";
export const domainNameAllowed = (n: string) => !n.includes("/") && !n.includes("\0");

// ---- HTTP between agent and Worker (outside /api: a node credential cannot call /api/*) --------
/** `POST AGENT_ENROLL_PATH` with `{joinToken, hostname}` answers `{nodeId, credential}`; 401 when
 *  the join token is unknown, used or expired. */
export const AGENT_ENROLL_PATH = "/agent/enroll";
/** WebSocket upgrade with `Authorization: Bearer <node credential>`; 401 when refused. */
export const AGENT_CONNECT_PATH = "/agent/connect";
/** The link's liveness socket (feature `livenessWatch`): a WebSocket upgrade with the same node
 *  credential and `?conn=<the link's connId, welcome.id>`. It carries only PING_FRAME (answered
 *  PONG_FRAME); the control plane watches many nodes' pings in one place instead of waking each
 *  node's object every minute. 409 when `conn` is not the node's current link. */
export const AGENT_LIVENESS_PATH = "/agent/liveness";
/** The agent bundle for a connected agent updating itself, behind its node credential. */
export const AGENT_UPDATE_PATH = "/agent/update/quantix-agent.mjs";

// ---- Long-poll transport (networks that block WebSockets) ------------------------------------
// The same frames over plain HTTPS, with the node credential of AGENT_CONNECT_PATH. A poll without
// `connId` opens a new link (replacing the node's socket or older poll link); its answer carries the
// `welcome` frame, whose id is the link's `connId`. A poll or send naming a link that is no longer
// current is answered 409 `link_replaced`, 410 `link_closed` (no poll in time, a protocol error) or
// 401 (credential revoked): the agent then starts a new link.
/** `POST` with PollRequest: waits up to `waitMs` (capped by the server) for frames, answers PollResponse. */
export const AGENT_POLL_PATH = "/agent/poll";
/** `POST` with SendRequest: each message handled exactly as the same frame on the socket. */
export const AGENT_SEND_PATH = "/agent/send";
/** The longest a poll is held open when no frame is due (many proxies cut idle requests at 30 s+). */
export const LONG_POLL_WAIT_MS = 25_000;
/** Messages per send, and a send's whole body (each message also stays under MAX_FRAME_BYTES). */
export const MAX_SEND_MESSAGES = 64;
export const MAX_SEND_BYTES = 1024 * 1024;
/** Frames handed out per poll answer; the rest come with the next poll. */
export const MAX_POLL_MESSAGES = 100;
