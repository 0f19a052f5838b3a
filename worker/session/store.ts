// The one table of what a node's session keeps in its Durable Object storage (synchronous KV of the
// SQLite-backed object: it survives eviction and costs no await per frame), with the type of each
// key. Nothing else in the session names a storage key.
import type { PowerKind } from "../vm-state.ts";
import type { RequestRow } from "../request-rows.ts";
import type { SnapshotRow } from "../last-known-log.ts";
import type { RecordsDigest } from "./anti-entropy.ts";
import type { LinkEnded } from "./poll-outbox.ts";
import type { NewRequest } from "./dispatch.ts";
import type { Role } from "../../protocol/api.ts";
import type { ConsoleMode } from "../../protocol/console.ts";

/** The agent's link as a socket attachment (and, for a long-poll link, under `pollLink`). */
export type AgentAttachment = {
  kind?: "agent";
  nodeId: string;
  connId: string;
  connectedAt: number;
  lastMessageAt: number;
  clock: number;
  /** absent on sockets accepted before the long-poll transport existed */
  transport?: "socket" | "poll";
};

/** A VM the reconciler asks the hypervisor about: the stuck transition, applied only if still that one. */
export type StuckVm = {
  vmId: string;
  generation: number;
  transitionRequestId: string;
  expectedState: string;
  stuckSince: number;
};

type InFlightBase = { id: string; vmId: string; connId: string; deadline: number };
/** In-flight requests, one shape per kind, in storage so a deadline survives eviction. */
/** `createdAt`: when the request was made (the operation cap counts from it; absent on entries
 *  stored before the cap existed, which then count from their deadline). */
export type PowerInFlight = InFlightBase & {
  kind: PowerKind;
  vmGeneration: number | null;
  prevState: string | null;
  phase: "sent" | "acked";
  createdAt?: number;
  newRequest?: undefined;
  reconcile?: undefined;
};
export type StateInFlight = InFlightBase & {
  kind: "vm.state";
  phase: "sent";
  newRequest: NewRequest & { sentAt: number };
  reconcile?: undefined;
  verify?: undefined;
};
export type ReconcileInFlight = InFlightBase & {
  kind: "vm.state";
  phase: "sent";
  reconcile: StuckVm;
  newRequest?: undefined;
  verify?: undefined;
};
/** A state the control plane wrote on its own (an undo, a forced reset), checked with the hypervisor:
 *  the answer is applied as the agent's report of that VM would be. */
export type VerifyInFlight = InFlightBase & {
  kind: "vm.state";
  phase: "sent";
  verify: true;
  newRequest?: undefined;
  reconcile?: undefined;
};
export type LogsInFlight = InFlightBase & {
  kind: "vm.logs";
  phase: "sent";
  newRequest: NewRequest & { sentAt: number };
  keepAsLastKnown?: boolean;
  reconcile?: undefined;
};
export type InFlight = PowerInFlight | StateInFlight | ReconcileInFlight | VerifyInFlight | LogsInFlight;

/** The one agent follow of a VM (frame id = follow id), shared by all of that VM's viewers. */
export type Follow = {
  followId: string;
  vmId: string;
  name: string;
  connId: string;
  acked: boolean;
  ackDeadline: number;
};

/** A VM's current window of reported state changes (event-coalescer.ts). */
export type FlapWindow = {
  vmId: string;
  start: number;
  /** changes reported in the window, and how many of them got an event of their own */
  changes: number;
  written: number;
  /** the state before the first change that got no event */
  fromState: string | null;
};

/** Who opened a console, as the Worker authenticated them. */
export type ConsolePrincipal = {
  id: string;
  name: string;
  actor: string;
  role: Role;
  via: "token" | "access";
  /** Access sign-in: what its role is looked up by (email or service name, and groups) */
  roleNames?: string[];
};

/** A console ticket, kept under the hash of its secret until used or expired. */
export type ConsoleTicket = {
  vmId: string;
  mode: ConsoleMode;
  /** a graphical console's ticket (vnc-relay.ts); absent for a serial console */
  type?: "vnc";
  force: boolean;
  principal: ConsolePrincipal;
  expiresAt: number;
};

/** One person's console session, over its sockets (a resume continues it). `resumeHash`: the hash
 *  of the current resume token; `resumeUntil`: null while a socket carries it, else when the token
 *  expires and the session ends (`pendingReason` then says why it left). */
export type ConsoleSession = {
  sessionId: string;
  vmId: string;
  mode: ConsoleMode;
  principal: ConsolePrincipal;
  openedAt: number;
  bytesIn: number;
  bytesOut: number;
  resumeHash: string;
  resumeUntil: number | null;
  pendingReason: string | null;
  force: boolean;
};

/** A VM's console stream on the agent (frame id = consoleId), kept after it ends for its offsets.
 *  `head`: the offset of the next byte (counted from the VM's first stream); `agentNext`: the next
 *  byte in the agent's own count, which acks name; `writer`: the session holding the writer role. */
export type ConsoleStream = {
  vmId: string;
  name: string;
  consoleId: string;
  channel: number;
  connId: string;
  phase: "opening" | "open" | "ended";
  head: number;
  agentNext: number;
  openDeadline: number;
  lingerUntil: number | null;
  writer: string | null;
  lastOutputAt: number;
};

type Singles = {
  /** the current link's connId (socket or long-poll); absent while the node is offline */
  conn: string;
  nodeId: string;
  /** the long-poll link's attachment while it is the current connection, and the last one that ended */
  pollLink: AgentAttachment;
  pollEnded: { connId: string } & LinkEnded;
  /** when the kept D1 writes are due */
  keptAt: number;
  reconcileAt: number;
  /** false when the last reconciler pass saw no open transition and no power action was sent since */
  transitionsOpen: boolean;
  lastSeenWritten: number;
  ignoredAnswers: number;
  /** the WIRE_FEATURES the current link's agent announced in its hello */
  agentFeatures: string[];
  /** when the earliest window of a VM's state changes ends */
  flapDueAt: number;
  /** the last console channel number handed out */
  consoleChannel: number;
  /** the liveness shard's socket that watches the current link (liveness-watch.ts): while it does,
   *  this object sets no per-minute liveness alarm of its own */
  watch: { connId: string; watchId: string };
  /** the digest of the node's VM records at a revision of them (anti-entropy.ts) */
  recordsDigest: RecordsDigest;
};

type Families = {
  inFlight: InFlight;
  /** finished query rows, written to D1 together (see kept-writes.ts) */
  queryRow: RequestRow;
  /** each VM's newest last-known log, written to D1 together */
  snapshot: SnapshotRow;
  follow: Follow;
  flap: FlapWindow;
  console: ConsoleStream;
  consoleTicket: ConsoleTicket;
  consoleSession: ConsoleSession;
};

// The key strings are what objects already hold: changing one loses what is stored under it.
const SINGLE_KEYS: { [K in keyof Singles]: string } = {
  conn: "conn",
  nodeId: "nodeId",
  pollLink: "pollLink",
  pollEnded: "pollEnded",
  keptAt: "keptAt",
  reconcileAt: "reconcileAt",
  transitionsOpen: "transitionsOpen",
  watch: "watch",
  lastSeenWritten: "lastSeenWritten",
  ignoredAnswers: "ignoredAnswers",
  agentFeatures: "agentFeatures",
  flapDueAt: "flapDueAt",
  consoleChannel: "consoleChannel",
  recordsDigest: "recordsDigest",
};
const FAMILY_PREFIXES: { [F in keyof Families]: string } = {
  inFlight: "inflight:",
  queryRow: "queryrow:",
  snapshot: "snapshot:",
  follow: "follow:",
  flap: "flap:",
  console: "console:",
  consoleTicket: "consoleticket:",
  consoleSession: "consolesession:",
};

/** Singles read on every frame and command (which link is current, its node, what its agent
 *  understands) or every digest: held in memory as well, written through. Only this class writes them. */
const HELD: ReadonlySet<keyof Singles> = new Set<keyof Singles>([
  "conn",
  "nodeId",
  "pollLink",
  "agentFeatures",
  "watch",
  "recordsDigest",
]);
/** A held value is shared by every reader: frozen, so nobody changes it without a put. */
const frozen = <T>(v: T): T => (v !== null && typeof v === "object" ? Object.freeze(v) : v);

export class SessionStore {
  private readonly storage: DurableObjectStorage;
  private readonly kv: SyncKvStorage;
  // Bounded by HELD: one entry per single kept in memory.
  private readonly held = new Map<keyof Singles, unknown>();

  /** Singles held in memory (the debug counts of a local soak run). */
  get heldCount(): number {
    return this.held.size;
  }

  constructor(storage: DurableObjectStorage) {
    this.storage = storage;
    this.kv = storage.kv;
  }

  get<K extends keyof Singles>(key: K): Singles[K] | undefined {
    if (!HELD.has(key)) return this.kv.get<Singles[K]>(SINGLE_KEYS[key]);
    if (!this.held.has(key)) this.held.set(key, frozen(this.kv.get<Singles[K]>(SINGLE_KEYS[key])));
    return this.held.get(key) as Singles[K] | undefined;
  }

  put<K extends keyof Singles>(key: K, value: Singles[K]): void {
    this.kv.put(SINGLE_KEYS[key], value);
    if (HELD.has(key)) this.held.set(key, frozen(value));
  }

  delete(key: keyof Singles): void {
    this.kv.delete(SINGLE_KEYS[key]);
    if (HELD.has(key)) this.held.set(key, undefined);
  }

  /** Forgets everything stored (a deleted node). */
  async deleteAll(): Promise<void> {
    await this.storage.deleteAll();
    this.held.clear();
  }

  /** One entry of a family, by its id (a request id, a VM id). */
  entry<F extends keyof Families>(family: F, id: string): Families[F] | undefined {
    return this.kv.get<Families[F]>(FAMILY_PREFIXES[family] + id);
  }

  putEntry<F extends keyof Families>(family: F, id: string, value: Families[F]): void {
    this.kv.put(FAMILY_PREFIXES[family] + id, value);
  }

  /** Written like putEntry (the same table, read back at once), but the object's outgoing messages
   *  do not wait until it is durable: for what is kept as a caller is answered, whose answer must not
   *  wait for it. A write that then fails resets the object, as any failed write does. */
  putEntryUnconfirmed<F extends keyof Families>(family: F, id: string, value: Families[F]): void {
    void this.storage.put(FAMILY_PREFIXES[family] + id, value, { allowUnconfirmed: true });
  }

  deleteEntry(family: keyof Families, id: string): void {
    this.kv.delete(FAMILY_PREFIXES[family] + id);
  }

  /** The family's entries as [id, value], in key order. */
  entries<F extends keyof Families>(family: F, limit?: number): [string, Families[F]][] {
    const prefix = FAMILY_PREFIXES[family];
    return [...this.kv.list<Families[F]>({ prefix, ...(limit === undefined ? {} : { limit }) })].map(([key, value]) => [
      key.slice(prefix.length),
      value,
    ]);
  }

  all<F extends keyof Families>(family: F): Families[F][] {
    return this.entries(family).map(([, value]) => value);
  }
}
