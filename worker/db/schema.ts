// The one D1 schema (drizzle-orm). `npm run db:generate` writes migrations/ from it; review the SQL.
import { sqliteTable, text, integer, index, uniqueIndex } from "drizzle-orm/sqlite-core";

/** Times are epoch milliseconds (integers); the API renders them as ISO 8601. */
export const nodes = sqliteTable(
  "nodes",
  {
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    hostname: text("hostname"),
    agentVersion: text("agent_version"),
    libvirtVersion: text("libvirt_version"),
    protocolVersion: integer("protocol_version"),
    connected: integer("connected", { mode: "boolean" }).notNull().default(false),
    lastSeenAt: integer("last_seen_at"),
    /** the liveness shard that holds the node's liveness socket (its last sign of life is in that
     *  shard's `liveness_seen` row), set with the shard's first write of it after the socket opens */
    livenessShard: text("liveness_shard"),
    /** SHA-256 of the single-use join token; null once traded for a credential. */
    joinTokenHash: text("join_token_hash"),
    joinTokenExpiresAt: integer("join_token_expires_at"),
    /** SHA-256 of the node credential; null until enrolled, replaced on rotate. */
    credentialHash: text("credential_hash"),
    /** something an admin must look at on the node, e.g. `vm_cap_exceeded` (VMs it reported past
     *  MAX_VMS_PER_NODE were not stored); cleared when its next new VMs fit */
    flagCode: text("flag_code"),
    flagMessage: text("flag_message"),
    flagAt: integer("flag_at"),
    /** set to a new random value by triggers (migrations/0009) whenever a row of `vms` this node holds
     *  changes in what the inventory digest covers: an unchanged revision means unchanged records */
    vmsRev: integer("vms_rev").notNull().default(0),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    uniqueIndex("nodes_name_unique").on(t.name),
    uniqueIndex("nodes_join_token_hash_unique").on(t.joinTokenHash),
    uniqueIndex("nodes_credential_hash_unique").on(t.credentialHash),
  ],
);

/** Each liveness shard's last signs of life of the nodes it watches, one row per shard written once
 *  per LAST_SEEN_WRITE_MS: a row written a shard an hour, not one a node. */
export const livenessSeen = sqliteTable("liveness_seen", {
  shard: text("shard").primaryKey(),
  /** JSON: node id -> epoch ms of its last ping the shard saw */
  seen: text("seen").notNull().default("{}"),
  at: integer("at").notNull(),
});

export const vms = sqliteTable(
  "vms",
  {
    /** libvirt domain UUID */
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    nodeId: text("node_id").references(() => nodes.id, { onDelete: "set null" }),
    state: text("state").notNull(),
    /** last state the hypervisor reported, whatever `state` says */
    libvirtState: text("libvirt_state"),
    vcpus: integer("vcpus").notNull().default(0),
    memoryMiB: integer("memory_mib").notNull().default(0),
    /** bumped on every control-plane state change; a result applies only to its own generation */
    generation: integer("generation").notNull().default(0),
    /** the power action that put the VM in STARTING / STOPPING; inventory does not override it */
    transitionRequestId: text("transition_request_id"),
    missing: integer("missing", { mode: "boolean" }).notNull().default(false),
    missingSince: integer("missing_since"),
    /** the last full inventory sync that reported this VM: a completed sync marks the node's
     *  other VMs missing without holding the set of UUIDs in memory */
    lastSyncId: text("last_sync_id"),
    /** set by a forced reset_state (STOPPED without asking the hypervisor); the next hypervisor
     *  report settles it: STOPPED confirms it, a live domain raises `running_after_forced_reset` */
    forcedResetAt: integer("forced_reset_at"),
    /** something the operator must look at; cleared by POST /api/vms/:id/clear_flag */
    flagCode: text("flag_code"),
    flagMessage: text("flag_message"),
    flagAt: integer("flag_at"),
    /** a node that reported this UUID while the VM was another node's or on no node: it did not
     *  take the VM (flag `uuid_conflict` / `node_deleted`); an admin re-homes it */
    claimantNodeId: text("claimant_node_id"),
    stateUpdatedAt: integer("state_updated_at").notNull(),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    index("vms_node_name_idx").on(t.nodeId, t.name, t.id),
    index("vms_state_name_idx").on(t.state, t.name, t.id),
    index("vms_name_idx").on(t.name, t.id),
  ],
);

export const apiTokens = sqliteTable(
  "api_tokens",
  {
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    role: text("role").notNull(),
    tokenHash: text("token_hash").notNull(),
    createdBy: text("created_by").notNull(),
    createdAt: integer("created_at").notNull(),
    revokedAt: integer("revoked_at"),
  },
  (t) => [uniqueIndex("api_tokens_hash_unique").on(t.tokenHash)],
);

/** The queue: one row per command sent (or to be sent) to an agent. */
export const requests = sqliteTable(
  "requests",
  {
    id: text("id").primaryKey(),
    kind: text("kind").notNull(),
    vmId: text("vm_id"),
    nodeId: text("node_id"),
    params: text("params"), // JSON
    status: text("status").notNull(), // queued | sent | done | failed | expired
    deadlineAt: integer("deadline_at").notNull(),
    requestedBy: text("requested_by").notNull(),
    vmGeneration: integer("vm_generation"),
    result: text("result"), // JSON
    error: text("error"), // JSON {code, message}
    createdAt: integer("created_at").notNull(),
    sentAt: integer("sent_at"),
    ackedAt: integer("acked_at"),
    finishedAt: integer("finished_at"),
  },
  (t) => [index("requests_vm_idx").on(t.vmId, t.createdAt), index("requests_node_status_idx").on(t.nodeId, t.status)],
);

/** The audit trail of a VM. */
export const vmEvents = sqliteTable(
  "vm_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    vmId: text("vm_id").notNull(),
    at: integer("at").notNull(),
    actor: text("actor").notNull(), // "token:<name>", "admin", "agent:<node>", "system"
    action: text("action").notNull(), // start, stop, force_stop, reset_state, discovered, state_changed, missing, ...
    fromState: text("from_state"),
    toState: text("to_state"),
    source: text("source"), // hypervisor | forced | agent | control_plane
    message: text("message"),
    reason: text("reason"),
    /** console.opened: which console, "serial" or "vnc" */
    consoleType: text("console_type"),
    requestId: text("request_id"),
    /** verified resets and repairs: what the control plane believed, what the hypervisor said
     *  (null when forced without asking), and the last lines of the VM's log at the time */
    expectedState: text("expected_state"),
    observedState: text("observed_state"),
    logExcerpt: text("log_excerpt"),
  },
  (t) => [
    index("vm_events_vm_at_idx").on(t.vmId, t.at),
    // retention walks old rows by source and age (host reports are kept shorter than the audit trail)
    index("vm_events_source_at_idx").on(t.source, t.at),
  ],
);

/** The audit trail of a node's agent: updates asked for (naming the admin) and how they went. */
export const nodeEvents = sqliteTable(
  "node_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    nodeId: text("node_id").notNull(),
    at: integer("at").notNull(),
    actor: text("actor").notNull(), // "token:<name>", "admin", "agent:<node>"
    action: text("action").notNull(), // update_requested, updated, update_failed, update_rolled_back
    fromVersion: text("from_version"),
    toVersion: text("to_version"),
    message: text("message"),
  },
  (t) => [index("node_events_node_at_idx").on(t.nodeId, t.at)],
);

/** The VM's last-known log: the latest successful logs answer, kept to show while the node is away. */
export const vmLogSnapshots = sqliteTable("vm_log_snapshots", {
  vmId: text("vm_id")
    .primaryKey()
    .references(() => vms.id, { onDelete: "cascade" }),
  capturedAt: integer("captured_at").notNull(),
  logPath: text("log_path").notNull(),
  logSizeBytes: integer("log_size_bytes").notNull(),
  linesReturned: integer("lines_returned").notNull(),
  truncated: integer("truncated", { mode: "boolean" }).notNull(),
  lastModified: text("last_modified"), // ISO 8601, as the agent reported it
  files: text("files").notNull(), // JSON string[]
  text: text("text").notNull(), // at most LAST_KNOWN_LOG_BYTES, the newest lines
});

/** A VM as stored (the REST shape is protocol/rest.ts's Vm). */
export type VmRecord = typeof vms.$inferSelect;

/** Webhook targets for notifications. The secret signs each delivery: it is kept sealed with a Worker
 *  key (notifications/secret-box.ts; never shown again after creation), and a deleted target keeps its
 *  row (its deliveries' history) without it. */
export const notificationTargets = sqliteTable("notification_targets", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  url: text("url").notNull(),
  /** base64 of IV + AES-GCM ciphertext; as given on rows from before sealing (secret_key_id null) */
  secret: text("secret").notNull(),
  /** the id of the key in SECRETS_KEYS that sealed `secret` */
  secretKeyId: text("secret_key_id"),
  events: text("events").notNull(), // JSON NotificationEvent[]
  format: text("format").notNull(), // json | slack
  createdBy: text("created_by").notNull(),
  createdAt: integer("created_at").notNull(),
  deletedAt: integer("deleted_at"),
});

/** One event for one target: its body is fixed when it is queued, so every retry sends the same
 *  bytes under the same delivery id. */
export const notificationDeliveries = sqliteTable(
  "notification_deliveries",
  {
    id: text("id").primaryKey(),
    targetId: text("target_id").notNull(),
    event: text("event").notNull(),
    body: text("body").notNull(),
    /** events that must reach a target once per occurrence (a stuck transition) carry a key */
    dedupeKey: text("dedupe_key"),
    status: text("status").notNull(), // pending | delivered | failed | cancelled
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: integer("next_attempt_at"),
    lastStatus: integer("last_status"),
    lastError: text("last_error"),
    createdAt: integer("created_at").notNull(),
    deliveredAt: integer("delivered_at"),
  },
  (t) => [
    index("notification_deliveries_target_idx").on(t.targetId, t.createdAt),
    index("notification_deliveries_due_idx").on(t.targetId, t.status, t.nextAttemptAt),
    uniqueIndex("notification_deliveries_dedupe_unique").on(t.targetId, t.dedupeKey),
  ],
);

/** Every try of a delivery: when, the receiver's HTTP status (none when it did not answer), why it failed. */
export const notificationAttempts = sqliteTable(
  "notification_attempts",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    deliveryId: text("delivery_id").notNull(),
    at: integer("at").notNull(),
    httpStatus: integer("http_status"),
    error: text("error"),
    durationMs: integer("duration_ms").notNull(),
  },
  (t) => [index("notification_attempts_delivery_idx").on(t.deliveryId, t.at)],
);

/** The last node liveness told to notification targets, so a replaced connection is no `node.online`. */
export const notificationNodeStatus = sqliteTable("notification_node_status", {
  nodeId: text("node_id").primaryKey(),
  online: integer("online", { mode: "boolean" }).notNull(),
  at: integer("at").notNull(),
});
