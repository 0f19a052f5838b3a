// The in-flight request ledger of a node's session: puts a command on the agent's link with its
// deadline, reads each answer once into its kind's shape (power, state, logs), applies it, and
// settles every request exactly once (answer, agent error, deadline, or the link going away).
import {
  LogsResult,
  MAX_LOG_BYTES,
  PROGRESS_INTERVAL_MS,
  PowerResult,
  StateResult,
  mapLibvirtState,
  type AgentMessage,
  type ServerMessage,
} from "../../protocol/wire.ts";
import { utf8Bytes } from "../../protocol/log-excerpt.ts";
import type { SessionSettings } from "../config.ts";
import type { Database } from "../db/client.ts";
import { logsAnswer, snapshotRow } from "../last-known-log.ts";
import {
  extendRequestDeadline,
  finishRequest,
  finishedQueryRow,
  markRequestAcked,
  markRequestSent,
  type AgentFailure,
  type RequestFinish,
  type RequestRow,
} from "../request-rows.ts";
import { applyObservedState } from "../inventory.ts";
import { adoptStateAfterError, applyPowerOutcome, isPowerKind, repairStuckVm, undoPowerAction } from "../vm-state.ts";
import type { LogsOutcome, PowerDispatch, PowerOutcome, QueryDispatch, StateOutcome } from "./dispatch.ts";
import type { KeptWrites } from "./kept-writes.ts";
import type { AgentLink } from "./links.ts";
import type { SessionNotices } from "./notices.ts";
import type {
  InFlight,
  LogsInFlight,
  PowerInFlight,
  ReconcileInFlight,
  SessionStore,
  StateInFlight,
  StuckVm,
  VerifyInFlight,
} from "./store.ts";

type ErrorPayload = Extract<AgentMessage, { type: "error" }>["payload"];
type ResultPayload = Extract<AgentMessage, { type: "result" }>["payload"];
type ChunkPayload = Extract<AgentMessage, { type: "log.chunk" }>["payload"];
type ProgressPayload = Extract<AgentMessage, { type: "progress" }>["payload"];

/** What the ledger asks of its session when a VM's record needs a look at the hypervisor: a power
 *  action ended without a state from the hypervisor (the VM may be left in its transition), or the
 *  control plane wrote a state on its own (an undo). */
export type VerifyHooks = {
  transitionLeftOpen: (vmIds: string[]) => Promise<void>;
  verifyVm: (vmId: string) => Promise<void>;
};

/** What settles a request: the answer in its kind's shape, or a failure. */
type Settlement =
  | { status: "done"; power: PowerResult }
  | { status: "done"; state: StateResult }
  | { status: "done"; logs: LogsResult; text: string }
  | { status: "failed" | "expired"; error: AgentFailure };

/** The callers waiting for an outcome (RPC calls still running, which keep the object awake). */
type Waiter =
  | { kind: "power"; wake: (o: PowerOutcome) => void }
  | { kind: "state"; wake: (o: StateOutcome) => void }
  | { kind: "logs"; wake: (o: LogsOutcome) => void };

export class RequestLedger {
  // In memory only: these belong to RPC calls that are still running, which keeps the object awake.
  // Each is bounded by the requests in flight (entries leave when the request settles, expires or
  // its link goes); an answer's chunks are bounded by the logs answer's byte cap.
  private readonly waiters = new Map<string, Waiter>();
  private readonly logChunks = new Map<string, Map<number, string>>();
  /** UTF-8 bytes of each answer's chunks so far (a chunk sent again replaces its count). */
  private readonly logBytes = new Map<string, number>();
  // A request's `sent` write, still running while its command is on the wire: the round trip need
  // not wait for it, only the request's final write must come after it (see settle).
  private readonly sentWrites = new Map<string, Promise<unknown>>();
  // A route's query (its caller waits on an RPC, which keeps the object awake) is in flight in memory
  // only, its deadline a timer: storage written before the frame leaves holds the frame until the
  // write is durable, and an eviction ends the caller's RPC anyway (the Worker then writes its row).
  // One timer serves them all, due at the earliest deadline it has seen: every query waits as long,
  // so queries one after another or in a burst set it about once a deadline, not a timer each (a
  // timer set and cleared cost about 0.1 ms of CPU in workerd). It is left to fire when the last
  // query is answered; firing with none waiting, it is not set again: it keeps the object awake at
  // most one query deadline after the last query.
  private readonly waited = new Map<string, StateInFlight | LogsInFlight>();
  private waitedTimer: { at: number; timer: ReturnType<typeof setTimeout> } | null = null;

  private readonly store: SessionStore;
  private readonly db: Database;
  private readonly limits: SessionSettings;
  private readonly kept: KeptWrites;
  private readonly armAlarm: () => Promise<void>;
  private readonly notices: SessionNotices;
  private readonly hooks: VerifyHooks;

  constructor(
    store: SessionStore,
    db: Database,
    limits: SessionSettings,
    kept: KeptWrites,
    armAlarm: () => Promise<void>,
    notices: SessionNotices,
    hooks: VerifyHooks,
  ) {
    this.store = store;
    this.db = db;
    this.limits = limits;
    this.kept = kept;
    this.armAlarm = armAlarm;
    this.notices = notices;
    this.hooks = hooks;
  }

  /** Sizes of the in-memory maps (the debug counts of a local soak run). */
  counts(): Record<string, number> {
    return {
      ledgerWaiters: this.waiters.size,
      ledgerLogChunks: this.logChunks.size,
      ledgerLogBytes: this.logBytes.size,
      ledgerSentWrites: this.sentWrites.size,
      ledgerWaited: this.waited.size,
    };
  }

  all(): InFlight[] {
    return [...this.store.all("inFlight"), ...this.waited.values()];
  }

  private entry(id: string): InFlight | undefined {
    return this.waited.get(id) ?? this.store.entry("inFlight", id);
  }

  /** The earliest deadline the alarm must keep (waited queries' deadlines have their own timer). */
  earliestDeadline(): number {
    let due = Infinity;
    for (const r of this.store.all("inFlight")) due = Math.min(due, r.deadline);
    return due;
  }

  /** Sends a power action; resolves when it is on the wire, or with `wait` when its outcome is known. */
  async power(link: AgentLink | null, d: PowerDispatch): Promise<PowerOutcome> {
    const error = {
      code: "node_offline",
      message: link ? "the node's agent connection is closing" : "the node's agent is not connected",
    };
    if (!link) return { status: "failed", error };
    // The waiter exists before the frame leaves: its answer can't be handled before we await.
    const outcome = d.wait
      ? new Promise<PowerOutcome>((wake) => this.waiters.set(d.id, { kind: "power", wake }))
      : null;
    const now = Date.now();
    const deadline = now + this.limits.ackMs;
    const target = { vmId: d.vmId, name: d.name, deadline };
    const frame: ServerMessage =
      d.kind === "vm.stop"
        ? { type: "vm.stop", id: d.id, payload: { ...target, graceMs: this.limits.stopGraceMs } }
        : { type: d.kind, id: d.id, payload: target };
    const r: PowerInFlight = {
      id: d.id,
      kind: d.kind,
      vmId: d.vmId,
      vmGeneration: d.vmGeneration,
      prevState: d.prevState,
      connId: link.att.connId,
      phase: "sent",
      deadline,
      createdAt: now,
    };
    this.store.put("transitionsOpen", true); // for the reconciler's next pass
    if (!(await this.send(link, r, frame))) {
      this.waiters.delete(d.id);
      return { status: "failed", error };
    }
    return outcome ?? { status: "sent" };
  }

  /** Asks a route's query (vm.state / vm.logs) and waits for its outcome. */
  query(link: AgentLink | null, d: Extract<QueryDispatch, { kind: "vm.state" }>): Promise<StateOutcome>;
  query(link: AgentLink | null, d: Extract<QueryDispatch, { kind: "vm.logs" }>): Promise<LogsOutcome>;
  async query(link: AgentLink | null, d: QueryDispatch): Promise<StateOutcome | LogsOutcome> {
    if (!link) return this.notSent(d, "the node's agent is not connected");
    const now = Date.now();
    const deadline = now + this.limits.queryMs;
    const target = { vmId: d.vmId, name: d.name, deadline };
    const newRequest = { ...d.newRequest, sentAt: now };
    const base = { id: d.id, vmId: d.vmId, connId: link.att.connId, phase: "sent" as const, deadline, newRequest };
    let outcome: Promise<StateOutcome | LogsOutcome>;
    let sent: boolean;
    if (d.kind === "vm.logs") {
      outcome = new Promise<LogsOutcome>((wake) => this.waiters.set(d.id, { kind: "logs", wake }));
      const r: LogsInFlight = { ...base, kind: "vm.logs", ...(d.keepAsLastKnown ? { keepAsLastKnown: true } : {}) };
      sent = await this.send(link, r, {
        type: "vm.logs",
        id: d.id,
        payload: { ...target, lines: d.lines, maxBytes: MAX_LOG_BYTES },
      });
    } else {
      outcome = new Promise<StateOutcome>((wake) => this.waiters.set(d.id, { kind: "state", wake }));
      const r: StateInFlight = { ...base, kind: "vm.state" };
      sent = await this.send(link, r, {
        type: "vm.state",
        id: d.id,
        payload: d.excerptLines ? { ...target, excerptLines: d.excerptLines } : target,
      });
    }
    if (!sent) {
      this.waiters.delete(d.id);
      return this.notSent(d, "the node's agent connection is closing");
    }
    return outcome;
  }

  /** The reconciler's state query (its request row is queued already); false if the link is closing. */
  reconcile(link: AgentLink, id: string, vm: { id: string; name: string }, stuck: StuckVm): Promise<boolean> {
    const deadline = Date.now() + this.limits.queryMs;
    const r: ReconcileInFlight = {
      id,
      kind: "vm.state",
      vmId: vm.id,
      connId: link.att.connId,
      phase: "sent",
      deadline,
      reconcile: stuck,
    };
    return this.send(link, r, { type: "vm.state", id, payload: { vmId: vm.id, name: vm.name, deadline } });
  }

  /** A check of a state the control plane wrote on its own (its request row is queued already). */
  verify(link: AgentLink, id: string, vm: { id: string; name: string }): Promise<boolean> {
    const deadline = Date.now() + this.limits.queryMs;
    const r: VerifyInFlight = {
      id,
      kind: "vm.state",
      vmId: vm.id,
      connId: link.att.connId,
      phase: "sent",
      deadline,
      verify: true,
    };
    return this.send(link, r, { type: "vm.state", id, payload: { vmId: vm.id, name: vm.name, deadline } });
  }

  /** A query that never left: its request row, which goes back to the caller, says so. */
  private notSent(d: QueryDispatch, message: string): { status: "failed"; error: AgentFailure; row: RequestRow } {
    const error = { code: "node_offline", message };
    const now = Date.now();
    const row = finishedQueryRow(
      { ...d.newRequest, id: d.id, kind: d.kind, vmId: d.vmId, deadlineAt: now, sentAt: null },
      { status: "failed", error },
      now,
    );
    return { status: "failed", error, row };
  }

  /** Puts the command on the wire and in flight (storage and the deadline alarm, or for a waited
   *  query memory and a timer); false if the link is closing. */
  private async send(link: AgentLink, r: InFlight, frame: ServerMessage): Promise<boolean> {
    const now = Date.now();
    if (r.newRequest) {
      this.waited.set(r.id, r);
      if (!this.waitedTimer || r.deadline < this.waitedTimer.at) this.armWaitedTimer(r.deadline);
    } else this.store.putEntry("inFlight", r.id, r);
    try {
      link.send(frame);
    } catch {
      this.forget(r.id);
      return false;
    }
    if (r.newRequest) return true;
    // Written while the agent works; markRequestSent only moves a queued row, so even a late write
    // can't undo a final status, and settle waits for it before writing that status.
    const sent = markRequestSent(this.db, r.id, now)
      .catch((err) => console.error("node session: could not mark request sent", r.id, err))
      .finally(() => this.sentWrites.delete(r.id));
    this.sentWrites.set(r.id, sent);
    await this.armAlarm();
    return true;
  }

  private armWaitedTimer(at: number): void {
    if (this.waitedTimer) clearTimeout(this.waitedTimer.timer);
    const timer = setTimeout(() => void this.expireWaited(), Math.max(0, at - Date.now()));
    this.waitedTimer = { at, timer };
  }

  /** The waited queries whose deadline passed without an answer fail; the timer moves to the next. */
  private async expireWaited(): Promise<void> {
    this.waitedTimer = null;
    const now = Date.now();
    const due: (StateInFlight | LogsInFlight)[] = [];
    let next = Infinity;
    for (const r of this.waited.values()) {
      if (r.deadline <= now) due.push(r);
      else next = Math.min(next, r.deadline);
    }
    if (next !== Infinity) this.armWaitedTimer(next);
    for (const r of due)
      await this.settle(r, {
        status: "failed",
        error: { code: "agent_timeout", message: `the agent did not answer ${r.kind} in time` },
      });
  }

  private forget(id: string): void {
    if (!this.waited.delete(id)) this.store.deleteEntry("inFlight", id);
  }

  onAck(id: string): Promise<void> | "ignored" {
    const r = this.entry(id);
    if (!r || !isPowerInFlight(r) || r.phase !== "sent") return "ignored";
    return this.acked(r);
  }

  private async acked(r: PowerInFlight): Promise<void> {
    const now = Date.now();
    // After the ack the agent reports the outcome: a graceful stop may take the whole grace. An agent
    // that reports progress gets until its first report is overdue (twice its usual interval).
    const work = r.kind === "vm.stop" ? this.limits.stopGraceMs : this.limits.queryMs;
    const reports = this.store.get("agentFeatures")?.includes("progress") ?? false;
    const due = now + Math.max(work + this.limits.ackMs, reports ? 2 * PROGRESS_INTERVAL_MS : 0);
    const acked: PowerInFlight = { ...r, phase: "acked", deadline: Math.min(due, this.capOf(r)) };
    this.store.putEntry("inFlight", r.id, acked);
    await markRequestAcked(this.db, r.id, acked.deadline, now);
    await this.armAlarm();
  }

  /** The latest a power action may stay in flight, however long the agent keeps reporting progress. */
  private capOf(r: PowerInFlight): number {
    return (r.createdAt ?? r.deadline) + this.limits.operationCapMs;
  }

  /** The agent says a power action is still under way: it stays `sent`, and its deadline moves to
   *  when the next report is overdue (twice the interval the agent announced), never past the cap. */
  onProgress(id: string, p: ProgressPayload): Promise<void> | "ignored" {
    const r = this.entry(id);
    if (!r || !isPowerInFlight(r)) return "ignored";
    const deadline = Math.min(Date.now() + 2 * p.nextWithinMs, this.capOf(r));
    if (deadline === r.deadline && r.phase === "acked") return Promise.resolve();
    this.store.putEntry("inFlight", id, { ...r, phase: "acked", deadline });
    return Promise.all([this.armAlarm(), extendRequestDeadline(this.db, id, deadline)]).then(() => undefined);
  }

  onChunk(id: string, chunk: ChunkPayload): Promise<void> | "ignored" {
    const r = this.entry(id);
    if (!r || r.kind !== "vm.logs") return "ignored";
    const chunks = this.logChunks.get(id) ?? new Map<number, string>();
    const replaced = chunks.get(chunk.seq);
    chunks.set(chunk.seq, chunk.text);
    this.logChunks.set(id, chunks);
    // An answer carries at most MAX_LOG_BYTES of text, counted in UTF-8 bytes; more is the agent misbehaving.
    const bytes =
      (this.logBytes.get(id) ?? 0) - (replaced === undefined ? 0 : utf8Bytes(replaced)) + utf8Bytes(chunk.text);
    this.logBytes.set(id, bytes);
    if (bytes > MAX_LOG_BYTES)
      return this.settle(r, {
        status: "failed",
        error: { code: "agent_error", message: `the agent sent more than ${MAX_LOG_BYTES} bytes of log text` },
      });
    return Promise.resolve();
  }

  /** An agent's result: read once, here, into its request's kind of answer, then applied and settled. */
  onResult(id: string, payload: ResultPayload, actor: string): Promise<void> | "ignored" {
    const r = this.entry(id);
    if (!r) return "ignored";
    const bad = (why: string) => this.settle(r, { status: "failed", error: { code: "agent_error", message: why } });
    if (r.kind === "vm.logs") {
      const parsed = LogsResult.safeParse(payload);
      if (!parsed.success) return bad("the agent's vm.logs result was malformed");
      const { text: inline, ...logs } = parsed.data;
      const chunks = this.logChunks.get(id) ?? new Map<number, string>();
      if (chunks.size !== logs.chunks)
        return bad(`the agent announced ${logs.chunks} log chunks but ${chunks.size} arrived`);
      if (inline !== undefined) {
        // The whole text in the result itself, never as well as chunks (one frame: under the byte cap).
        if (logs.chunks > 0) return bad("the agent sent log text both in its result and as chunks");
        return this.settle(r, { status: "done", logs, text: inline });
      }
      const text = [...chunks.entries()]
        .sort(([a], [b]) => a - b)
        .map(([, t]) => t)
        .join("");
      return this.settle(r, { status: "done", logs, text });
    }
    if (r.kind === "vm.state") {
      const parsed = StateResult.safeParse(payload);
      if (!parsed.success) return bad("the agent's vm.state result was malformed");
      return this.stateAnswered(r, parsed.data);
    }
    const parsed = PowerResult.safeParse(payload);
    if (!parsed.success) return bad(`the agent's ${r.kind} result was malformed`);
    return this.powerAnswered(r, parsed.data, actor);
  }

  private async stateAnswered(
    r: StateInFlight | ReconcileInFlight | VerifyInFlight,
    state: StateResult,
  ): Promise<void> {
    if (r.verify) {
      const observed = { state: mapLibvirtState(state.libvirtState), libvirtState: state.libvirtState };
      const nodeId = this.store.get("nodeId");
      const report = nodeId
        ? await applyObservedState(this.db, nodeId, r.vmId, observed, "verifier", this.limits.maxVmsPerNode)
        : null;
      if (report && nodeId) this.notices.inventoryFlags(nodeId, { foreign: report.claimed, flagged: report.flagged });
    }
    if (r.reconcile) {
      const observed = { state: mapLibvirtState(state.libvirtState), libvirtState: state.libvirtState };
      if (await repairStuckVm(this.db, { ...r.reconcile, stuckForMs: Date.now() - r.reconcile.stuckSince }, observed))
        this.notices.repaired(r.reconcile, observed);
    }
    return this.settle(r, { status: "done", state });
  }

  private async powerAnswered(r: PowerInFlight, power: PowerResult, actor: string): Promise<void> {
    if (r.vmGeneration !== null)
      await applyPowerOutcome(
        this.db,
        { id: r.id, vmId: r.vmId, vmGeneration: r.vmGeneration, kind: r.kind },
        power,
        actor,
      );
    return this.settle(r, { status: "done", power });
  }

  onError(id: string, payload: ErrorPayload, actor: string): Promise<void> | "ignored" {
    const r = this.entry(id);
    if (!r) return "ignored";
    return this.refused(r, payload, actor);
  }

  private async refused(r: InFlight, payload: ErrorPayload, actor: string): Promise<void> {
    const error = { code: payload.code, message: payload.message };
    let unverified = false;
    if (isPowerInFlight(r) && r.vmGeneration !== null) {
      const request = { id: r.id, vmId: r.vmId, vmGeneration: r.vmGeneration };
      if (payload.state && payload.libvirtState) {
        // The agent said what libvirt shows after the failure: that is the VM's state now.
        await adoptStateAfterError(
          this.db,
          request,
          error,
          { state: payload.state, libvirtState: payload.libvirtState },
          actor,
        );
      } else if (r.prevState) {
        // No state with the error (libvirt could not say, or an older agent): back to the state
        // before it, which is then checked with the hypervisor.
        unverified = await undoPowerAction(this.db, { ...request, prevState: r.prevState }, error, actor);
      }
    }
    await this.settle(r, { status: payload.code === "expired" ? "expired" : "failed", error });
    if (unverified) await this.hooks.verifyVm(r.vmId);
  }

  /** Fails every request whose deadline has passed. */
  async expireDue(now: number): Promise<void> {
    const leftOpen: string[] = [];
    for (const r of this.all()) {
      if (r.deadline > now) continue;
      const power = isPowerInFlight(r);
      const message =
        power && r.phase === "acked" && r.deadline >= this.capOf(r)
          ? `${r.kind} still under way ${Math.round(this.limits.operationCapMs / 1000)} s after it was requested (the operation cap)`
          : power && r.phase === "acked"
            ? `the agent stopped reporting on ${r.kind} (no result or progress in time)`
            : `the agent did not ${power ? "acknowledge" : "answer"} ${r.kind} in time`;
      await this.settle(r, { status: "failed", error: { code: "agent_timeout", message } });
      if (power) leftOpen.push(r.vmId);
    }
    // The VM of a power action that ended without an answer is still in its transition: ask now.
    if (leftOpen.length) await this.hooks.transitionLeftOpen(leftOpen);
  }

  async failAll(error: AgentFailure): Promise<void> {
    for (const r of this.all()) await this.settle(r, { status: "failed", error });
  }

  /** Ends an in-flight request exactly once: storage entry gone, D1 row final, waiter woken. */
  private async settle(r: InFlight, s: Settlement): Promise<void> {
    this.forget(r.id);
    this.logChunks.delete(r.id);
    this.logBytes.delete(r.id);
    const waiter = this.waiters.get(r.id);
    this.waiters.delete(r.id);
    const at = Date.now();
    const finish: RequestFinish =
      s.status !== "done"
        ? { status: s.status, error: s.error }
        : { status: "done", result: "power" in s ? s.power : "state" in s ? s.state : s.logs };
    if (r.newRequest) {
      // A route's query: the caller has its answer now. A state query's caller takes its request
      // row, final, and writes it with its own D1 write (a reset's batch): a storage write made as
      // the caller is answered holds its return back, by a millisecond on local workerd even
      // unconfirmed. A log read's row is kept here with the log it read (to be the VM's last-known
      // one), both going to D1 with others shortly: a dashboard refreshing a log would otherwise
      // write a row per read.
      const { sentAt, ...request } = r.newRequest;
      const row = finishedQueryRow(
        { ...request, id: r.id, kind: r.kind, vmId: r.vmId, deadlineAt: r.deadline, sentAt },
        finish,
        at,
      );
      const takes = waiter?.kind === "state";
      if (s.status !== "done") wakeFailed(waiter, s, takes ? row : undefined);
      else if ("logs" in s) {
        if (waiter?.kind === "logs") waiter.wake({ status: "done", result: s.logs, text: s.text, at });
        if (r.kind === "vm.logs" && r.keepAsLastKnown)
          await this.kept.keepSnapshot(r.vmId, snapshotRow(r.vmId, logsAnswer(s.logs, s.text, at)));
      } else if ("state" in s && waiter?.kind === "state") waiter.wake({ status: "done", result: s.state, at, row });
      if (!takes) await this.kept.keepRow(r.id, row);
      return;
    }
    // A power action's caller may answer with the request's status, so its row is final first.
    await this.sentWrites.get(r.id);
    await finishRequest(this.db, r.id, finish);
    if (s.status !== "done") wakeFailed(waiter, s);
    else if ("power" in s && waiter?.kind === "power") waiter.wake({ status: "done", result: s.power });
  }

  async countIgnored(what: string, id: string): Promise<void> {
    const n = (this.store.get("ignoredAnswers") ?? 0) + 1;
    this.store.put("ignoredAnswers", n);
    // Logged sparsely: an agent repeating itself must not turn into a log flood.
    if (n <= 10 || n % 100 === 0)
      console.warn(
        `node session: ignored ${what} for request ${id} (not in flight: unknown, duplicate or late; ${n} so far)`,
      );
  }

  ignoredAnswers(): number {
    return this.store.get("ignoredAnswers") ?? 0;
  }
}

const isPowerInFlight = (r: InFlight): r is PowerInFlight => isPowerKind(r.kind);

function wakeFailed(
  waiter: Waiter | undefined,
  s: { status: "failed" | "expired"; error: AgentFailure },
  row?: RequestRow,
): void {
  if (!waiter) return;
  const failed = { status: s.status, error: s.error };
  if (waiter.kind === "power") waiter.wake(failed);
  else waiter.wake({ ...failed, row });
}
