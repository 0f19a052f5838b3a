// Deadlines, liveness and flood limits from wrangler `[vars]` (strings), with protocol/wire.ts defaults, so
// tests and end-to-end runs can shorten them with `--var` instead of sleeping a minute.
import { STUCK_AFTER_MS } from "../protocol/api.ts";
import { CONSOLE_IDLE_MS, CONSOLE_LINGER_MS, CONSOLE_SESSION_MAX_MS } from "../protocol/console.ts";
import {
  ACK_TIMEOUT_MS,
  LONG_POLL_WAIT_MS,
  OFFLINE_AFTER_MS,
  OPERATION_CAP_MS,
  QUERY_TIMEOUT_MS,
  STOP_GRACE_MS,
} from "../protocol/wire.ts";
import type { AdmissionLimits } from "./session/inbox.ts";

export type SessionSettings = {
  queryMs: number;
  ackMs: number;
  stopGraceMs: number;
  /** a power action that keeps reporting progress stays in flight at most this long from its request */
  operationCapMs: number;
  offlineAfterMs: number;
  /** how often a connected node's lastSeenAt is written to D1 (its session knows it to the second) */
  lastSeenWriteMs: number;
  /** a node row whose lastSeenAt is older than this is offline, whatever its session last wrote
   *  (the session may be gone with its host): past the latest due write (LAST_SEEN_WRITE_MS after
   *  the last, made at a liveness check, which comes at least every OFFLINE_AFTER_MS), with room */
  nodeStaleAfterMs: number;
  /** What an agent may cost its node's session: frames (the flood limit; a 5,000-VM sync is 10),
   *  VM state changes, D1 statements and bytes a second, and its inbox backlog (session/inbox.ts). */
  admission: AdmissionLimits;
  /** the reconciler's threshold and period */
  stuckAfterMs: number;
  reconcileIntervalMs: number;
  /** a VM left in a transition that no request holds any more is asked about after this long (0: at
   *  once); a demo keeps its stuck VM to try Reset State on by setting it */
  repairAfterMs: number;
  /** the longest a long-poll is held open with nothing due */
  longPollWaitMs: number;
  /** VMs one node may hold; new VMs it reports past this are not stored */
  maxVmsPerNode: number;
  /** a VM's reported state changes: the first `burstPerVm` in a window of `windowMs` get an event
   *  each, the rest one summary event when the window ends */
  events: { windowMs: number; burstPerVm: number };
  /** a console session with neither input nor output this long ends (idle_timeout), and one this old
   *  ends whatever it does (session_limit) */
  consoleIdleMs: number;
  consoleSessionMaxMs: number;
  /** the agent's stream of a VM stays open this long after its last console left */
  consoleLingerMs: number;
};

/** Default of MAX_VMS_PER_NODE: the largest host the inventory is built and measured for. */
export const MAX_VMS_PER_NODE = 5_000;

/** A connected node's lastSeenAt reaches D1 every hour, besides on connect and disconnect. A write
 *  per node every 20 s kept a 1,000-node fleet's D1 (one writer) busy with 50 liveness writes a
 *  second; one every 2 minutes was still 21,600 billed rows per node-month, more than the rest of an
 *  idle node's D1 writes. Going offline is decided by the node's session, not by this column; the
 *  column only catches a session that could not say so (a row staler than this + 2 ×
 *  OFFLINE_AFTER_MS is shown offline). */
export const LAST_SEEN_WRITE_MS = 3_600_000;

/** How often the self-healing reconciler looks (a stuck VM is left alone for STUCK_AFTER_MS first). */
export const RECONCILE_INTERVAL_MS = 60_000;

const positive = (v: string | undefined, fallback: number) => {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : fallback;
};

export function sessionSettings(
  env: Partial<
    Pick<
      Env,
      | "QUERY_TIMEOUT_MS"
      | "ACK_TIMEOUT_MS"
      | "STOP_GRACE_MS"
      | "OPERATION_CAP_MS"
      | "OFFLINE_AFTER_MS"
      | "LAST_SEEN_WRITE_MS"
      | "FLOOD_FRAMES_PER_SECOND"
      | "BUDGET_VM_CHANGES_PER_SECOND"
      | "BUDGET_STATEMENTS_PER_SECOND"
      | "BUDGET_BYTES_PER_SECOND"
      | "BUDGET_BURST_SECONDS"
      | "INBOX_MAX_FRAMES"
      | "INBOX_MAX_BYTES"
      | "STUCK_AFTER_MS"
      | "RECONCILE_INTERVAL_MS"
      | "REPAIR_AFTER_MS"
      | "LONG_POLL_WAIT_MS"
      | "MAX_VMS_PER_NODE"
      | "EVENT_WINDOW_MS"
      | "EVENT_BURST_PER_VM"
      | "CONSOLE_IDLE_MS"
      | "CONSOLE_SESSION_MAX_MS"
      | "CONSOLE_LINGER_MS"
    >
  >,
): SessionSettings {
  const floodPerSecond = positive(env.FLOOD_FRAMES_PER_SECOND, 200);
  const offlineAfterMs = positive(env.OFFLINE_AFTER_MS, OFFLINE_AFTER_MS);
  const lastSeenWriteMs = positive(env.LAST_SEEN_WRITE_MS, LAST_SEEN_WRITE_MS);
  const burstSeconds = positive(env.BUDGET_BURST_SECONDS, 30);
  const budget = (name: string | undefined, fallback: number) => {
    const perSecond = positive(name, fallback);
    return [perSecond, perSecond * burstSeconds] as const;
  };
  const [vmsPerSecond, vmsBurst] = budget(env.BUDGET_VM_CHANGES_PER_SECOND, 1_000);
  const [statementsPerSecond, statementsBurst] = budget(env.BUDGET_STATEMENTS_PER_SECOND, 100);
  const [bytesPerSecond, bytesBurst] = budget(env.BUDGET_BYTES_PER_SECOND, 1024 * 1024);
  return {
    admission: {
      framesPerSecond: floodPerSecond,
      framesBurst: floodPerSecond * 2,
      vmsPerSecond,
      vmsBurst,
      statementsPerSecond,
      statementsBurst,
      bytesPerSecond,
      bytesBurst,
      backlogFrames: positive(env.INBOX_MAX_FRAMES, 500),
      backlogBytes: positive(env.INBOX_MAX_BYTES, 16 * 1024 * 1024),
    },
    queryMs: positive(env.QUERY_TIMEOUT_MS, QUERY_TIMEOUT_MS),
    ackMs: positive(env.ACK_TIMEOUT_MS, ACK_TIMEOUT_MS),
    stopGraceMs: positive(env.STOP_GRACE_MS, STOP_GRACE_MS),
    operationCapMs: positive(env.OPERATION_CAP_MS, OPERATION_CAP_MS),
    offlineAfterMs,
    lastSeenWriteMs,
    nodeStaleAfterMs: lastSeenWriteMs + 2 * offlineAfterMs,
    stuckAfterMs: positive(env.STUCK_AFTER_MS, STUCK_AFTER_MS),
    reconcileIntervalMs: positive(env.RECONCILE_INTERVAL_MS, RECONCILE_INTERVAL_MS),
    repairAfterMs: positive(env.REPAIR_AFTER_MS, 0),
    longPollWaitMs: positive(env.LONG_POLL_WAIT_MS, LONG_POLL_WAIT_MS),
    maxVmsPerNode: positive(env.MAX_VMS_PER_NODE, MAX_VMS_PER_NODE),
    events: {
      windowMs: positive(env.EVENT_WINDOW_MS, 60_000),
      burstPerVm: positive(env.EVENT_BURST_PER_VM, 3),
    },
    consoleIdleMs: positive(env.CONSOLE_IDLE_MS, CONSOLE_IDLE_MS),
    consoleSessionMaxMs: positive(env.CONSOLE_SESSION_MAX_MS, CONSOLE_SESSION_MAX_MS),
    consoleLingerMs: positive(env.CONSOLE_LINGER_MS, CONSOLE_LINGER_MS),
  };
}

/** Reconnects per second the control plane wants at most after dropping every agent at once (a
 *  restart, a deploy): each agent's reconnect window is sized to the fleet to stay under it. Kept
 *  well below what it can take (~50 connects/s locally), since the attempts made while it was still
 *  coming up all land together in its first second. */
export const FLEET_RECONNECTS_PER_SECOND = 30;
/** The widest reconnect window a fleet is asked for: every agent is back within about this long. */
export const MAX_RECONNECT_SPREAD_MS = 45_000;

/** The window over which `nodes` agents should spread their reconnects. */
export function reconnectSpreadMs(nodes: number): number {
  return Math.min(MAX_RECONNECT_SPREAD_MS, Math.ceil(nodes / FLEET_RECONNECTS_PER_SECOND) * 1000);
}

/** Nodes per liveness shard (LIVENESS_NODES_PER_SHARD): a shard's alarm every OFFLINE_AFTER_MS / 4
 *  is shared by this many nodes; a fleet this small or smaller runs one. */
export const LIVENESS_NODES_PER_SHARD = 1_000;

export function livenessNodesPerShard(env: Partial<Pick<Env, "LIVENESS_NODES_PER_SHARD">>): number {
  return positive(env.LIVENESS_NODES_PER_SHARD, LIVENESS_NODES_PER_SHARD);
}

export function joinTokenTtlMs(env: Pick<Env, "JOIN_TOKEN_TTL_SECONDS">): number {
  return positive(env.JOIN_TOKEN_TTL_SECONDS, 3600) * 1000;
}

export const VERSION = "0.1.0";
