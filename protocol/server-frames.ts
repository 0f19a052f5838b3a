// The frames the control plane sends an agent, checked without zod (protocol/lean-check.ts) so that
// the agent never loads it: each check accepts and returns exactly what wire.ts's schema of the same
// name does (test/protocol/server-frames.test.ts holds the two together).
import { array, boolean, byType, literal, number, object, oneOf, optional, string, type Check } from "./lean-check.ts";
import { DIGEST_BUCKETS } from "./digest.ts";
import type { PollResponse as PollResponseType, ServerMessage as Message } from "./wire.ts";
import {
  DOMAIN_NAME_MAX,
  EXCERPT_MAX_LINES,
  INVENTORY_CHUNK,
  LIVE_METRICS_MAX_LEASE_MS,
  MAX_LOG_BYTES,
  MAX_POLL_MESSAGES,
  domainNameAllowed,
} from "./wire-constants.ts";

const uuid = string({ regex: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i });
/** wire.ts's DomainName. */
export const DomainName = string({ min: 1, max: DOMAIN_NAME_MAX, refine: domainNameAllowed });
const domainName = DomainName;
const empty = object({});

const frame = <T extends string, P>(type: T, payload: Check<P>) =>
  object({ type: literal(type), id: string({ min: 1, max: 64 }), payload });

const commandTarget = { vmId: uuid, name: domainName, deadline: number({ int: true, positive: true }) };

const checks = {
  welcome: frame(
    "welcome",
    object({
      nodeId: string(),
      serverTime: number({ int: true }),
      heartbeatMs: number({ int: true, positive: true }),
      reconnectSpreadMs: optional(number({ int: true, min: 0, max: 600_000 })),
      livenessHeartbeats: optional(number({ int: true, min: 1, max: 16 })),
      features: optional(array(string({ max: 64 }), { max: 64 })),
    }),
  ),
  "vm.state": frame(
    "vm.state",
    object({ ...commandTarget, excerptLines: optional(number({ int: true, min: 1, max: EXCERPT_MAX_LINES })) }),
  ),
  "vm.logs": frame(
    "vm.logs",
    object({
      ...commandTarget,
      lines: number({ int: true, min: 1, max: 10_000 }),
      maxBytes: number({ int: true, positive: true, max: MAX_LOG_BYTES }),
    }),
  ),
  "vm.start": frame("vm.start", object(commandTarget)),
  "vm.stop": frame(
    "vm.stop",
    object({ ...commandTarget, graceMs: number({ int: true, positive: true, max: 3_600_000 }) }),
  ),
  "vm.forceStop": frame("vm.forceStop", object(commandTarget)),
  resync: frame(
    "resync",
    object({
      vmIds: optional(array(uuid, { max: INVENTORY_CHUNK })),
      buckets: optional(array(string({ regex: /^[0-9a-f]$/ }), { max: DIGEST_BUCKETS })),
    }),
  ),
  "vm.logs.follow": frame("vm.logs.follow", object(commandTarget)),
  "vm.logs.unfollow": frame("vm.logs.unfollow", empty),
  error: frame("error", object({ code: string({ max: 64 }), message: string({ max: 2000 }) })),
  "agent.update": frame(
    "agent.update",
    object({
      version: string({ min: 1, max: 64 }),
      sha256: string({ regex: /^[0-9a-f]{64}$/ }),
      size: number({ int: true, positive: true, max: 64 * 1024 * 1024 }),
      requestedBy: string({ max: 200 }),
    }),
  ),
  "console.open": frame(
    "console.open",
    object({
      vmId: uuid,
      name: domainName,
      channel: number({ int: true, min: 1, max: 0xffffffff }),
      force: boolean,
      windowBytes: number({ int: true, positive: true, max: 16 * 1024 * 1024 }),
      display: optional(object({ type: literal("vnc"), mode: oneOf(["rw", "ro"]) })),
    }),
  ),
  "console.ack": frame("console.ack", object({ offset: number({ int: true, min: 0 }) })),
  "console.close": frame("console.close", empty),
  "metrics.live": frame(
    "metrics.live",
    object({ leaseMs: number({ int: true, positive: true, max: LIVE_METRICS_MAX_LEASE_MS }) }),
  ),
  "metrics.stored": frame("metrics.stored", empty),
} satisfies { [K in Message["type"]]: Check<Extract<Message, { type: K }>> };

/** wire.ts's ServerMessage. */
export const ServerMessage: Check<Message> = byType<Message>(checks);

/** wire.ts's PollResponse. */
export const PollResponse: Check<PollResponseType> = object({
  connId: string({ min: 1, max: 64 }),
  cursor: string({ max: 80 }),
  messages: array(ServerMessage, { max: MAX_POLL_MESSAGES }),
});

/** wire.ts's EnrollResponse. */
export const EnrollResponse: Check<{ nodeId: string; credential: string }> = object({
  nodeId: string(),
  credential: string(),
});

/** One text frame from the control plane; null when it is not JSON or not a known message. */
export function parseServerFrame(data: string): Message | null {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return null;
  }
  return ServerMessage(json)?.value ?? null;
}
