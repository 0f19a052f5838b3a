// Power actions (start, graceful stop, force stop): acked at once, then carried out one VM's after
// another. A command's deadline is checked again when its turn comes, and one still waiting when its
// deadline passes is dropped and answered `expired`: work that waited behind another action on the
// same VM (a 60 s graceful stop) is never carried out late. A force stop ends a graceful stop still
// waiting for the guest and powers the domain off now. While an action is queued or working the
// agent says so every `progressMs`; after `operationCapMs` it stops waiting and reports the real
// state. Every error carries the state libvirt shows afterwards, so the control plane can adopt it.
import type { Command, LibvirtState, PowerResult, VmState, WireFeature } from "../../protocol/wire.ts";
import { AgentFailure, type Libvirt } from "./libvirt.ts";
import type { Logger } from "../logger.ts";
import type { Send } from "../link/send.ts";

export type PowerCommand = Extract<Command, { type: "vm.start" | "vm.stop" | "vm.forceStop" }>;
export const OVERRIDDEN_MESSAGE = "overridden by force stop";
export const PROGRESS_MS = 3_000;
export const OPERATION_CAP_MS = 600_000;
/** How long an error waits for libvirt to say the domain's state before it is sent without it. */
const STATE_AFTER_ERROR_MS = 2_000;

export type PowerActionsOptions = {
  libvirt: Libvirt;
  send: Send;
  log: Logger;
  /** the control plane's clock (local clock corrected by welcome.serverTime) */
  serverNow: () => number;
  /** how often a graceful stop looks whether the guest is off */
  stopPollMs: number;
  progressMs?: number;
  operationCapMs?: number;
  /** what the control plane announced in its welcome (`progress`, `override`, …) */
  peerFeatures?: () => ReadonlySet<string>;
  /** after an action was carried out: report the change without waiting for the next poll */
  onPowerDone?: () => void;
};

/** The domain's state as libvirt showed it. */
type DomainStateResult = { state: VmState; libvirtState: LibvirtState };

/** One power command from its ack to its answer. */
type Job = {
  cmd: PowerCommand;
  ackedAt: number;
  phase: "queued" | "working";
  answered: boolean;
  /** ends a graceful stop's wait at once (a force stop overrides it) */
  abort: AbortController;
  /** graceful stops this force stop ended: answered with it */
  overrides: Job[];
  /** the state a graceful stop saw last, for progress frames */
  seen?: DomainStateResult;
  timers: NodeJS.Timeout[];
  answeredPromise: Promise<void>;
  resolve: () => void;
};

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });

export class PowerActions {
  private readonly o: Required<Omit<PowerActionsOptions, "onPowerDone">> & Pick<PowerActionsOptions, "onPowerDone">;
  /** per VM, in arrival order; the working ones are at the front. Bounded by the VMs with a
   *  command not yet answered: a VM's entry is deleted when its queue empties. */
  private readonly queues = new Map<string, Job[]>();

  constructor(opts: PowerActionsOptions) {
    this.o = { progressMs: PROGRESS_MS, operationCapMs: OPERATION_CAP_MS, peerFeatures: () => new Set(), ...opts };
  }

  /** VMs with a queue now (the soak bench's debug counts). */
  get queuedVms(): number {
    return this.queues.size;
  }

  /** Resolves once the command is answered (`result` or `error`). */
  handle(cmd: PowerCommand): Promise<void> {
    const late = this.o.serverNow() - cmd.payload.deadline;
    if (late > 0) {
      this.o.log.warn(
        { id: cmd.id, type: cmd.type, vmId: cmd.payload.vmId, lateMs: late },
        "command arrived after its deadline: not carried out",
      );
      return this.fail(
        cmd.id,
        cmd.payload.vmId,
        new AgentFailure("expired", `deadline passed ${late} ms before the command was read; not carried out`),
      );
    }
    this.o.send({ type: "ack", id: cmd.id, payload: {} });
    const job = this.newJob(cmd);
    const vmId = cmd.payload.vmId;
    const queue = this.queues.get(vmId) ?? [];
    this.queues.set(vmId, queue);

    if (cmd.type === "vm.forceStop") {
      const graceful = queue.filter((j) => j.cmd.type === "vm.stop" && !j.answered && !j.abort.signal.aborted);
      for (const g of graceful) {
        g.abort.abort();
        if (g.phase === "queued") queue.splice(queue.indexOf(g), 1);
      }
      job.overrides = graceful;
      const working = queue.filter((j) => j.phase === "working");
      if (graceful.length && working.every((j) => j.abort.signal.aborted)) {
        // The only work under way is the graceful stop just ended: power off now, ahead of the queue.
        this.o.log.info(
          { id: cmd.id, vmId, overridden: graceful.map((g) => g.cmd.id) },
          "force stop overrides a graceful stop",
        );
        queue.splice(working.length, 0, job);
        void this.run(job);
        return job.answeredPromise;
      }
    }
    queue.push(job);
    // Dropped at its deadline if still waiting then; checked again when its turn comes.
    const wait = cmd.payload.deadline - this.o.serverNow();
    job.timers.push(setTimeout(() => job.phase === "queued" && this.expire(job), Math.max(0, wait) + 1));
    this.pump(vmId);
    return job.answeredPromise;
  }

  private newJob(cmd: PowerCommand): Job {
    let resolve!: () => void;
    const answeredPromise = new Promise<void>((r) => (resolve = r));
    const job: Job = {
      cmd,
      ackedAt: Date.now(),
      phase: "queued",
      answered: false,
      abort: new AbortController(),
      overrides: [],
      timers: [],
      answeredPromise,
      resolve,
    };
    if (this.o.peerFeatures().has("progress" satisfies WireFeature)) {
      const tick = setInterval(() => this.progress(job), this.o.progressMs);
      tick.unref?.();
      job.timers.push(tick);
    }
    return job;
  }

  private progress(job: Job) {
    if (job.answered) return;
    this.o.send({
      type: "progress",
      id: job.cmd.id,
      payload: {
        phase: job.phase,
        elapsedMs: Date.now() - job.ackedAt,
        nextWithinMs: this.o.progressMs,
        ...(job.seen ?? {}),
      },
    });
  }

  /** Starts the first queued action of the VM when nothing of it is working. */
  private pump(vmId: string) {
    const queue = this.queues.get(vmId);
    if (!queue) return;
    if (queue.some((j) => j.phase === "working")) return;
    const next = queue.find((j) => j.phase === "queued");
    if (next) void this.run(next);
    else this.queues.delete(vmId);
  }

  private expire(job: Job) {
    const queue = this.queues.get(job.cmd.payload.vmId);
    if (queue?.includes(job)) queue.splice(queue.indexOf(job), 1);
    const late = this.o.serverNow() - job.cmd.payload.deadline;
    this.o.log.warn(
      { id: job.cmd.id, type: job.cmd.type, vmId: job.cmd.payload.vmId, lateMs: late },
      "command waited past its deadline behind another action: not carried out",
    );
    const failure = new AgentFailure(
      "expired",
      `deadline passed ${late} ms ago while it waited behind another action on this VM; not carried out`,
    );
    // A force stop that never ran still ended the graceful stops it took over: they are answered first.
    void this.answerOverridden(job).then(() => this.answerError(job, failure));
    this.pump(job.cmd.payload.vmId);
  }

  private async run(job: Job) {
    const { cmd } = job;
    const vmId = cmd.payload.vmId;
    if (this.o.serverNow() > cmd.payload.deadline && job.phase === "queued" && !job.overrides.length) {
      job.phase = "working";
      this.expire(job);
      return;
    }
    job.phase = "working";
    this.o.log.info({ id: cmd.id, type: cmd.type, vmId }, "power action");
    try {
      if (cmd.type === "vm.start") await this.start(job);
      else if (cmd.type === "vm.forceStop") await this.forceStop(job);
      else await this.gracefulStop(job, cmd.payload.graceMs);
    } catch (err) {
      await this.answerError(job, err);
    } finally {
      this.o.onPowerDone?.();
      const queue = this.queues.get(vmId);
      if (queue?.includes(job)) queue.splice(queue.indexOf(job), 1);
      this.pump(vmId);
    }
  }

  private async start(job: Job) {
    const uuid = job.cmd.payload.vmId;
    const work = this.o.libvirt.start(uuid);
    if (await this.capped(work)) {
      // A start libvirt has not finished within the cap: the real state now; the VM stays busy
      // (later actions wait, and expire) until libvirt returns, and the next poll reports it.
      this.answer(job, { ...(await this.o.libvirt.state(uuid)), timedOut: true });
      this.o.log.warn(
        { id: job.cmd.id, vmId: uuid, capMs: this.o.operationCapMs },
        "start still not finished at the cap: reported the real state",
      );
      await work.catch(() => {});
      return;
    }
    this.answer(job, { ...(await this.o.libvirt.state(uuid)), timedOut: false });
  }

  private async forceStop(job: Job) {
    const uuid = job.cmd.payload.vmId;
    try {
      const work = this.o.libvirt.destroy(uuid);
      const capped = await this.capped(work);
      const state = await this.o.libvirt.state(uuid);
      await this.answerOverridden(job, state);
      this.answer(job, { ...state, timedOut: capped });
      if (capped) await work.catch(() => {});
    } finally {
      await this.answerOverridden(job); // destroy failed: they end with the state libvirt shows
    }
  }

  /** Ask the guest to shut down, then watch until it is off, the grace (or cap) runs out, or a force stop ends the wait. */
  private async gracefulStop(job: Job, graceMs: number) {
    const { libvirt } = this.o;
    const uuid = job.cmd.payload.vmId;
    const signal = job.abort.signal;
    const until = Date.now() + Math.min(graceMs, this.o.operationCapMs);
    try {
      await libvirt.shutdown(uuid);
    } catch (err) {
      if (signal.aborted) return; // the force stop answers for this one
      throw err;
    }
    for (;;) {
      if (signal.aborted) return;
      const now = await libvirt.state(uuid);
      if (signal.aborted) return;
      job.seen = now;
      if (now.libvirtState === "shutoff") return this.answer(job, { ...now, timedOut: false });
      const left = until - Date.now();
      if (left <= 0) return this.answer(job, { ...now, timedOut: true });
      await sleep(Math.min(this.o.stopPollMs, left), signal);
    }
  }

  /** True when `work` is still running after the cap (it keeps running; its failure is then ignored). */
  private async capped(work: Promise<unknown>): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const cap = new Promise<true>((r) => (timer = setTimeout(() => r(true), this.o.operationCapMs)));
    try {
      return await Promise.race([work.then(() => false), cap]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The graceful stops a force stop ended: `error` overridden, with the state after the force stop. */
  private async answerOverridden(job: Job, state?: DomainStateResult) {
    const open = job.overrides.filter((g) => !g.answered);
    if (!open.length) return;
    const seen = state ?? (await this.stateOf(job.cmd.payload.vmId));
    const code = this.o.peerFeatures().has("override" satisfies WireFeature) ? "overridden" : "not_allowed";
    for (const g of open)
      this.sendAnswer(g, {
        type: "error",
        id: g.cmd.id,
        payload: { code, message: OVERRIDDEN_MESSAGE, ...(seen ?? {}) },
      });
  }

  private answer(job: Job, result: PowerResult) {
    this.sendAnswer(job, { type: "result", id: job.cmd.id, payload: result });
  }

  private async answerError(job: Job, err: unknown) {
    if (job.answered) return;
    const failure = toFailure(err, this.o.log, job.cmd.id);
    const state = failure.code === "vm_not_found" ? null : await this.stateOf(job.cmd.payload.vmId);
    this.sendAnswer(job, {
      type: "error",
      id: job.cmd.id,
      payload: { code: failure.code, message: failure.message.slice(0, 2000), ...(state ?? {}) },
    });
  }

  private sendAnswer(job: Job, msg: Parameters<Send>[0]) {
    if (job.answered) return;
    job.answered = true;
    for (const t of job.timers) clearTimeout(t);
    this.o.send(msg);
    job.resolve();
  }

  private async fail(id: string, vmId: string, failure: AgentFailure): Promise<void> {
    const state = await this.stateOf(vmId);
    this.o.send({ type: "error", id, payload: { code: failure.code, message: failure.message, ...(state ?? {}) } });
  }

  /** The domain's state as libvirt shows it now, or null when libvirt cannot say in time. */
  private async stateOf(vmId: string): Promise<DomainStateResult | null> {
    let timer: NodeJS.Timeout | undefined;
    const slow = new Promise<null>((r) => (timer = setTimeout(() => r(null), STATE_AFTER_ERROR_MS)));
    try {
      const state = await Promise.race([
        this.o.libvirt.state(vmId).then(({ state, libvirtState }) => ({ state, libvirtState })),
        slow,
      ]);
      return state;
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  }
}

export function toFailure(err: unknown, log: Logger, id: string): AgentFailure {
  if (err instanceof AgentFailure) return err;
  log.error({ id, err: (err as Error)?.stack }, "command failed unexpectedly");
  return new AgentFailure("internal", `internal error: ${(err as Error)?.message ?? String(err)}`.slice(0, 2000));
}
