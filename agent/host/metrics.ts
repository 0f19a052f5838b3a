// Samples every running VM's figures each metrics interval (CPU %, memory, disk and network rates,
// and the node's totals), pushes each tick as `metrics` frames to a control plane that announced
// `metrics` in batches of `batchTicks` ticks (the agent's default: an hour's, since each batch costs
// the control plane rows written), or one frame per tick while a live lease runs (someone watches the
// charts), and keeps a day in memory for the host view (1 h of raw samples, 24 h of 1-minute means).
// Ticks not sent yet are kept across a dropped link and, in `spoolFile`, across a restart; to a
// control plane that acknowledges batches (`metricsAck`), a batch's ticks are kept until it says
// `metrics.stored`, and sent again if the link drops or no answer comes. Hour-long batches end on
// the hour of the control plane's clock, so each stores as one hour of the history.
import { randomUUID } from "node:crypto";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import {
  FIELD_MAX,
  METRIC_FIELDS,
  METRICS_FRAME_SAMPLES,
  meanPoint,
  seriesAnswer,
  type MetricFigures,
  type MetricPoint,
  type MetricRange,
  type MetricsAnswer,
} from "../../protocol/metrics-series.ts";
import type { MetricsTick } from "../../protocol/metrics.ts";
import type { AgentMessage, WireFeature } from "../../protocol/wire.ts";
import type { DomainCounters, Libvirt } from "./libvirt.ts";
import type { Logger } from "../logger.ts";

/** One domain's bulk statistics as libvirt names them (`cpu.time`, `block.0.rd.bytes`, ...). */
type DomainStats = ReadonlyMap<string, number>;

/** A VM's cumulative counters at one tick; rates are their differences between two ticks. */
type Counters = {
  t: number;
  cpuTimeNs: number;
  rdBytes: number | null;
  wrBytes: number | null;
  rdReqs: number | null;
  wrReqs: number | null;
  rxBytes: number | null;
  txBytes: number | null;
};

const MiB = 1024;
const RAW_KEEP_MS = 3_600_000;
const MINUTE_MS = 60_000;
const MINUTES_KEEP = 24 * 60;
/** While live, a VM seen for the first time has its first figures this soon, not a whole interval later. */
const FIRST_FIGURES_MS = 2_000;

/** Sum of `<group>.<i>.<field>` over `<group>.count` devices; null when the group has none. */
function deviceSum(stats: DomainStats | undefined, group: "block" | "net", field: string): number | null {
  const count = stats?.get(`${group}.count`) ?? 0;
  if (!stats || !count) return null;
  let sum = 0;
  for (let i = 0; i < count; i++) sum += stats.get(`${group}.${i}.${field}`) ?? 0;
  return sum;
}

const num = (stats: DomainStats | undefined, key: string) => stats?.get(key) ?? null;

/** Counters of one domain from its info and, where the driver keeps them, its bulk statistics. */
export function countersOf(
  dom: DomainCounters,
  stats: DomainStats | undefined,
  t: number,
): { counters: Counters; memUsedMiB: number; memAssignedMiB: number } {
  const available = num(stats, "balloon.available");
  const unused = num(stats, "balloon.unused");
  // The guest's own view when its balloon driver reports it, else the QEMU process's resident memory.
  const usedKiB =
    available !== null && unused !== null ? available - unused : (num(stats, "balloon.rss") ?? dom.memoryKiB);
  return {
    counters: {
      t,
      cpuTimeNs: num(stats, "cpu.time") ?? dom.cpuTimeNs,
      rdBytes: deviceSum(stats, "block", "rd.bytes"),
      wrBytes: deviceSum(stats, "block", "wr.bytes"),
      rdReqs: deviceSum(stats, "block", "rd.reqs"),
      wrReqs: deviceSum(stats, "block", "wr.reqs"),
      rxBytes: deviceSum(stats, "net", "rx.bytes"),
      txBytes: deviceSum(stats, "net", "tx.bytes"),
    },
    memUsedMiB: usedKiB / MiB,
    memAssignedMiB: (num(stats, "balloon.current") ?? dom.memoryKiB) / MiB,
  };
}

/** Per-second rate of a counter between two ticks; null when either is missing or it went back
 *  (the domain restarted and its counters began again). */
const perSecond = (now: number | null, before: number | null, ms: number) =>
  now === null || before === null || now < before || ms <= 0 ? null : ((now - before) * 1000) / ms;
const round = (v: number | null) => (v === null ? null : Math.round(v * 100) / 100);

/** A figure past the bound the control plane checks (counters read a moment apart, a clock that
 *  jumped) goes as null, a gap: one such figure would get the whole frame refused and its link closed. */
function bounded(figures: MetricFigures): MetricFigures {
  for (const f of METRIC_FIELDS) {
    const v = figures[f];
    if (v !== null && !(v >= 0 && v <= FIELD_MAX[f])) figures[f] = null;
  }
  return figures;
}

export function figuresBetween(
  before: Counters,
  now: Counters,
  vcpus: number,
  mem: { memUsedMiB: number; memAssignedMiB: number },
): MetricFigures {
  const ms = now.t - before.t;
  const cpuNs = now.cpuTimeNs - before.cpuTimeNs;
  return bounded({
    cpuPct: cpuNs < 0 || ms <= 0 ? null : round((cpuNs / (ms * 1e6 * Math.max(1, vcpus))) * 100),
    memUsedMiB: round(mem.memUsedMiB),
    memAssignedMiB: round(mem.memAssignedMiB),
    diskReadBps: round(perSecond(now.rdBytes, before.rdBytes, ms)),
    diskWriteBps: round(perSecond(now.wrBytes, before.wrBytes, ms)),
    diskReadOps: round(perSecond(now.rdReqs, before.rdReqs, ms)),
    diskWriteOps: round(perSecond(now.wrReqs, before.wrReqs, ms)),
    netRxBps: round(perSecond(now.rxBytes, before.rxBytes, ms)),
    netTxBps: round(perSecond(now.txBytes, before.txBytes, ms)),
  });
}

/** The node's totals: sums of its VMs' figures; CPU as % of the host's CPUs. */
export function nodeTotals(vms: { figures: MetricFigures; vcpus: number }[], hostCpus: number): MetricFigures {
  const sum = (f: keyof MetricFigures) => {
    const vs = vms.map((v) => v.figures[f]).filter((v): v is number => v !== null);
    return vs.length ? round(vs.reduce((a, b) => a + b, 0)) : null;
  };
  const cpu = vms.filter((v) => v.figures.cpuPct !== null);
  const totals = Object.fromEntries(METRIC_FIELDS.map((f) => [f, sum(f)])) as MetricFigures;
  totals.cpuPct = cpu.length
    ? round(
        (cpu.reduce((a, v) => a + (v.figures.cpuPct! * Math.max(1, v.vcpus)) / 100, 0) / Math.max(1, hostCpus)) * 100,
      )
    : vms.length
      ? null
      : 0;
  // No running VM: its guests use nothing (a zero, not a gap).
  if (!vms.length) totals.memUsedMiB = totals.memAssignedMiB = 0;
  return bounded(totals);
}

/** A day of one series in memory: raw samples for an hour, then 1-minute means. */
class SeriesRing {
  // Bounded by time: an hour of raw points (360 at the default 10 s) and 24 h of minute means.
  raw: MetricPoint[] = [];
  minutes: MetricPoint[] = [];
  /** when the last point was added: a ring unfed for the longest range shows nothing any more */
  lastAt = 0;
  private minute: { t: number; points: MetricPoint[] } | null = null;

  add(p: MetricPoint) {
    this.lastAt = p.t;
    this.raw.push(p);
    while (this.raw.length && this.raw[0].t < p.t - RAW_KEEP_MS) this.raw.shift();
    const m = Math.floor(p.t / MINUTE_MS) * MINUTE_MS;
    if (this.minute && this.minute.t !== m) {
      this.minutes.push(meanPoint(this.minute.t, this.minute.points));
      if (this.minutes.length > MINUTES_KEEP) this.minutes.shift();
      this.minute = null;
    }
    (this.minute ??= { t: m, points: [] }).points.push(p);
  }

  answer(range: MetricRange, now: number, sampleMs: number): MetricsAnswer {
    if (range === "1h") return seriesAnswer(range, now, this.raw, sampleMs);
    const current = this.minute?.points ?? [];
    return seriesAnswer(range, now, [...this.minutes, ...current], MINUTE_MS);
  }
}

export type MetricsSamplerOptions = {
  libvirt: Libvirt;
  intervalMs: number;
  log: Logger;
  send: (msg: AgentMessage) => boolean;
  peerFeatures: () => ReadonlySet<string>;
  hostCpus?: number;
  /** ticks per `metrics` frame (default 6: one frame a minute at 10 s) */
  batchTicks?: number;
  /** the control plane's clock, which the ticks are stamped with */
  serverNow?: () => number;
  /** where the ticks not sent yet are kept, so a restart loses none (one JSON tick a line) */
  spoolFile?: string;
  /** bytes a second a batch's frames go at (default METRICS_PACE_BYTES_PER_SECOND) */
  paceBytesPerSecond?: number;
  /** how long a batch may go unacknowledged before it is sent again (default ACK_WAIT_MS) */
  ackWaitMs?: number;
};

/** Ticks older than this are not kept for sending: the control plane keeps raw samples a day. */
const PENDING_KEEP_MS = 86_400_000;
/** A batch goes once it holds this many VM samples, however few ticks, and no batch is bigger (about
 *  8 MB: a big host's hour would be tens of MB, past what its node's session takes in at once). */
const BATCH_MAX_SAMPLES = 12 * METRICS_FRAME_SAMPLES;
/** Batches kept back by a dropped link go one per this long, not all at once. */
const BATCH_GAP_MS = 60_000;
/** A batch not acknowledged this long after its last frame went is sent again (its control plane
 *  lost it: the object was evicted while holding it). */
const ACK_WAIT_MS = 300_000;
/** The history's rows hold an hour each: batches of an hour or more end on the hour. */
const HOUR_MS = 3_600_000;
const hourOf = (t: number) => Math.floor(t / HOUR_MS) * HOUR_MS;
/** A batch's frames go one after another at most this many bytes a second on average: a quarter of
 *  the byte budget the control plane gives a node by default (1 MiB/s), so a big host's batch (a
 *  1,000-VM host's is twelve frames of about 650 KB) never gets its link closed as overloaded, nor
 *  fills its session's inbox faster than the session stores it. */
export const METRICS_PACE_BYTES_PER_SECOND = 256 * 1024;
const samplesIn = (ticks: MetricsTick[]) => ticks.reduce((n, t) => n + t.vms.length, 0);
/** A batch being sent: the VM samples it may still send, the tick time it stops before, and its end. */
type Sending = { left: number; until: number; done: Promise<void> };

export class MetricsSampler {
  private readonly opts: MetricsSamplerOptions;
  private readonly hostCpus: number;
  // One entry per running VM, pruned each tick to the VMs running now.
  private readonly previous = new Map<string, Counters>();
  // One ring per VM sampled in the last 24 h (plus the node's): a VM stopped or gone keeps its ring
  // while its history still shows in some range, then the ring is dropped (see pruneRings).
  private readonly rings = new Map<string, SeriesRing>();
  private timer: NodeJS.Timeout | null = null;
  private sampling: Promise<void> | null = null;
  /** the first tick only reads counters: figures are differences between two ticks */
  private counted = false;
  /** ticks sampled and not sent yet (at most `batchTicks` of them, times the parts of a big host's tick) */
  private pending: MetricsTick[] = [];
  /** until when (this host's clock) each tick is sent as it is taken: someone watches the charts */
  private liveUntil = 0;
  /** when the last batch that left a backlog was sent (this host's clock; 0: none left) */
  private lastBatchAt = 0;
  /** the spool file could not be written (said once) */
  private spoolFailed = false;
  /** ticks in the spool file: it may hold ones already trimmed from `pending`, which a read trims again */
  private spooled = 0;
  /** the last tick met a running VM it had no counters for: its figures come at the next tick */
  private newcomers = false;
  /** a batch is being sent, a frame at a time; what it may still send, in VM samples, and the tick
   *  time it stops before */
  private sending: Sending | null = null;
  /** batches sent and not acknowledged yet (only to a control plane that acknowledges them), oldest first */
  private inFlight: { id: string; ticks: MetricsTick[]; sentAt: number }[] = [];

  constructor(opts: MetricsSamplerOptions) {
    this.opts = opts;
    this.hostCpus = opts.hostCpus ?? cpus().length;
    this.pending = this.readSpool();
  }

  /** The ticks a previous run left unsent (none if the file is missing or unreadable). */
  private readSpool(): MetricsTick[] {
    if (!this.opts.spoolFile) return [];
    let text: string;
    try {
      text = readFileSync(this.opts.spoolFile, "utf8");
    } catch {
      return [];
    }
    const oldest = (this.opts.serverNow?.() ?? Date.now()) - PENDING_KEEP_MS;
    const ticks: MetricsTick[] = [];
    for (const line of text.split("\n")) {
      if (!line) continue;
      try {
        // written by this agent: its shape is only checked, not validated in full
        const tick = JSON.parse(line) as MetricsTick;
        if (typeof tick?.t === "number" && Array.isArray(tick.vms) && tick.t >= oldest) ticks.push(tick);
      } catch {
        // a line cut short by a crash: the rest is still read
      }
    }
    this.spooled = ticks.length;
    return this.trimmed(ticks, oldest);
  }

  /** At most two batches' worth of `ticks` (count and VM samples), none before `oldest`: the oldest go first. */
  private trimmed(ticks: MetricsTick[], oldest: number): MetricsTick[] {
    const kept = ticks.filter((t) => t.t >= oldest).slice(-this.keepTicks());
    while (samplesIn(kept) > 2 * BATCH_MAX_SAMPLES) kept.shift();
    return kept;
  }

  private keepTicks(): number {
    return Math.max(2 * (this.opts.batchTicks ?? 6), 2);
  }

  /** Keeps what is pending in the spool file: appends `added`, or rewrites it whole (also when the
   *  appended file has grown to twice the cap, ticks trimmed from `pending` included). */
  private spool(added?: MetricsTick[]): void {
    const file = this.opts.spoolFile;
    if (!file) return;
    try {
      if (added && this.spooled + added.length <= 2 * this.keepTicks()) {
        appendFileSync(file, added.map((t) => `${JSON.stringify(t)}\n`).join(""));
        this.spooled += added.length;
      } else {
        const unsent = [...this.inFlight.flatMap((b) => b.ticks), ...this.pending];
        writeFileSync(file, unsent.map((t) => `${JSON.stringify(t)}\n`).join(""));
        this.spooled = unsent.length;
      }
    } catch (err) {
      if (!this.spoolFailed)
        this.opts.log.warn({ err: (err as Error).message, file }, "cannot keep unsent metrics on disk");
      this.spoolFailed = true;
    }
  }

  start(): void {
    if (this.timer || this.opts.intervalMs <= 0) return;
    this.schedule(0);
  }

  /** The next tick in `delayMs`; a tick rescheduled meanwhile (or a stop) ends the older chain. */
  private schedule(delayMs: number): void {
    if (this.timer) clearTimeout(this.timer);
    const timer = setTimeout(() => {
      void this.sampleNow().finally(() => {
        if (this.timer !== timer) return;
        const soon = this.newcomers && this.isLive() ? Math.min(FIRST_FIGURES_MS, this.opts.intervalMs) : null;
        this.schedule(soon ?? this.opts.intervalMs);
      });
    }, delayMs);
    this.timer = timer;
  }

  /** Someone watches (the control plane's `metrics.live`): until `leaseMs` from now, every tick is
   *  sent as it is taken. Coming out of batching, what is pending goes at once and a tick is taken
   *  now, so a chart opened mid-interval fills without waiting for the next one. */
  live(leaseMs: number, now = Date.now()): void {
    const wasLive = this.isLive(now);
    this.liveUntil = Math.max(this.liveUntil, now + leaseMs);
    if (wasLive) return;
    if (this.pending.length) this.flush();
    if (this.timer) this.schedule(0);
  }

  /** Back to batches at once (the link that asked for live samples is gone). */
  endLive(): void {
    this.liveUntil = 0;
  }

  /** The control plane stored the batch `id`: its ticks are forgotten. */
  stored(id: string): void {
    const before = this.inFlight.length;
    this.inFlight = this.inFlight.filter((b) => b.id !== id);
    if (this.inFlight.length !== before) this.spool();
  }

  /** The link is gone: batches it did not acknowledge go again, before what is pending. */
  linkLost(): void {
    this.requeue(this.inFlight);
  }

  /** Puts batches back in `pending`, in tick order (a tick sent twice is stored once: the later wins). */
  private requeue(batches: { ticks: MetricsTick[] }[]): void {
    if (!batches.length) return;
    const back = new Set(batches);
    this.inFlight = this.inFlight.filter((b) => !back.has(b));
    const ticks = [...batches.flatMap((b) => b.ticks), ...this.pending];
    this.pending = this.trimmed(
      ticks.sort((a, b) => a.t - b.t),
      (this.opts.serverNow?.() ?? Date.now()) - PENDING_KEEP_MS,
    );
  }

  isLive(now = Date.now()): boolean {
    return now < this.liveUntil;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Resolves once no batch is being sent (the bench's replayed hour waits for it, as the real
   *  ten seconds between two ticks would). */
  async idle(): Promise<void> {
    while (this.sending) await this.sending.done;
  }

  /** One tick: read the counters, turn differences into figures, keep them and push them. */
  sampleNow(): Promise<void> {
    this.sampling ??= this.sample()
      .catch((err) => this.opts.log.warn({ err: (err as Error).message }, "metrics sample failed"))
      .finally(() => (this.sampling = null));
    return this.sampling;
  }

  /** The host view's series of one VM (or, with null, the node's totals). */
  series(vmId: string | null, range: MetricRange, now = Date.now()): MetricsAnswer {
    const ring = this.rings.get(vmId ?? "") ?? new SeriesRing();
    return ring.answer(range, now, this.opts.intervalMs);
  }

  private async sample(): Promise<void> {
    const doms = await this.opts.libvirt.activeCounters();
    const t = Date.now();
    const vms: { vmId: string; vcpus: number; figures: MetricFigures }[] = [];
    const seen = new Set<string>();
    let newcomers = false;
    for (const dom of doms) {
      if (!dom.running) continue;
      seen.add(dom.uuid);
      const { counters, ...mem } = countersOf(dom, dom.stats, t);
      const before = this.previous.get(dom.uuid);
      this.previous.set(dom.uuid, counters);
      if (before)
        vms.push({ vmId: dom.uuid, vcpus: dom.vcpus, figures: figuresBetween(before, counters, dom.vcpus, mem) });
      else newcomers = true;
    }
    this.newcomers = newcomers;
    for (const uuid of [...this.previous.keys()]) if (!seen.has(uuid)) this.previous.delete(uuid);
    if (!this.counted) return void (this.counted = true);
    const node = nodeTotals(vms, this.hostCpus);
    for (const v of vms) this.ringOf(v.vmId).add({ t, ...v.figures });
    this.ringOf("").add({ t, ...node });
    this.pruneRings(t);
    this.queue({ t: this.opts.serverNow?.() ?? t, vms: vms.map((v) => ({ vmId: v.vmId, ...v.figures })), node });
  }

  /** Drops the rings of VMs not sampled for the longest range: without this, every VM that ever
   *  ran on the host would keep a ring for the agent's lifetime. */
  private pruneRings(now: number): void {
    for (const [key, ring] of this.rings)
      if (key && ring.lastAt < now - MINUTES_KEEP * MINUTE_MS) this.rings.delete(key);
  }

  /** Sizes of the sampler's in-memory collections (the soak bench's debug counts). */
  counts(): Record<string, number> {
    return {
      metricsPrevious: this.previous.size,
      metricsRings: this.rings.size,
      metricsPending: this.pending.length,
      metricsInFlight: this.inFlight.reduce((n, b) => n + b.ticks.length, 0),
    };
  }

  private ringOf(key: string): SeriesRing {
    let ring = this.rings.get(key);
    if (!ring) this.rings.set(key, (ring = new SeriesRing()));
    return ring;
  }

  /** Sends the pending ticks once there are `batchTicks` of them (while live: each tick), in frames of at most
   *  METRICS_FRAME_SAMPLES VM samples, to a control plane that announced `metrics`; sooner once they
   *  hold BATCH_MAX_SAMPLES. Kept meanwhile (a link down, a control plane not welcoming yet): at
   *  most two batches' worth, the oldest dropped first (the control plane shows the gap). */
  private queue(tick: MetricsTick) {
    const parts: MetricsTick[] = [];
    // A host beyond one frame's worth of VMs sends each tick in parts.
    for (let i = 0; i === 0 || i < tick.vms.length; i += METRICS_FRAME_SAMPLES) {
      parts.push({
        t: tick.t,
        vms: tick.vms.slice(i, i + METRICS_FRAME_SAMPLES),
        ...(i === 0 ? { node: tick.node } : {}),
      });
    }
    this.pending.push(...parts);
    const batch = this.opts.batchTicks ?? 6;
    const oldest = tick.t - PENDING_KEEP_MS;
    let samples = samplesIn(this.pending);
    if (
      this.pending.length > this.keepTicks() ||
      samples > 2 * BATCH_MAX_SAMPLES ||
      (this.pending[0]?.t ?? Infinity) < oldest
    ) {
      this.pending = this.trimmed(this.pending, oldest);
      samples = samplesIn(this.pending);
    }
    // Appended, not rewritten, at each tick: a read trims what the file holds beyond `pending`.
    this.spool(parts);
    const features = this.opts.peerFeatures();
    if (!features.has("metrics" satisfies WireFeature)) return;
    const unanswered = this.inFlight.filter((b) => Date.now() - b.sentAt > (this.opts.ackWaitMs ?? ACK_WAIT_MS));
    if (unanswered.length) this.requeue(unanswered);
    if (this.isLive()) return this.flush();
    if (Date.now() - this.lastBatchAt < BATCH_GAP_MS) return;
    // An hour-long batch ends on the hour: once a tick of the next hour is taken, the hours before go.
    const hour = hourOf(tick.t);
    if (batch * this.opts.intervalMs >= HOUR_MS && this.pending[0].t < hour) this.flush(BATCH_MAX_SAMPLES, hour);
    else if (this.pending.length >= batch || samples >= BATCH_MAX_SAMPLES) this.flush(BATCH_MAX_SAMPLES);
  }

  /** Sends what is pending now (also at stop), or its oldest ticks up to `maxSamples` VM samples,
   *  in frames of at most METRICS_FRAME_SAMPLES VM samples: the first at once, the next each after
   *  a pause its predecessor's bytes call for at the pace. A tick leaves `pending` (and, once the batch
   *  ends, the spool) only when its frame was handed to the link; what the link did not take stays.
   *  While a batch is being sent, a flush of everything lets it send everything. */
  flush(maxSamples = Infinity, until = Infinity): void {
    if (this.sending) {
      if (maxSamples === Infinity) Object.assign(this.sending, { left: Infinity, until: Infinity });
      return;
    }
    if (!this.pending.length) return;
    const sending: Sending = { left: maxSamples, until, done: Promise.resolve() };
    this.sending = sending;
    sending.done = this.sendBatch(sending);
  }

  /** The next frame from `pending[from]` on: how many ticks and VM samples, within the frame limit
   *  and the batch's share (at least one tick, unless the batch's share or time is used up). */
  private nextFrame(from: number, sending: Sending, first: boolean): { taken: number; samples: number } {
    let taken = 0;
    let samples = 0;
    for (let i = from; i < this.pending.length; i++) {
      const tick = this.pending[i];
      if (tick.t >= sending.until) break;
      if (taken > 0 && samples + tick.vms.length > Math.min(METRICS_FRAME_SAMPLES, sending.left)) break;
      samples += tick.vms.length;
      taken++;
    }
    if (!first && samples > sending.left) return { taken: 0, samples: 0 }; // the batch's share is sent
    return { taken, samples };
  }

  private async sendBatch(sending: Sending): Promise<void> {
    const batch = randomUUID().slice(0, 8);
    const pace = this.opts.paceBytesPerSecond ?? METRICS_PACE_BYTES_PER_SECOND;
    // A control plane that acknowledges batches is told which frame ends this one, and its ticks are
    // kept until it answers.
    const acked = this.opts.peerFeatures().has("metricsAck" satisfies WireFeature);
    const kept = acked ? { id: batch, ticks: [] as MetricsTick[], sentAt: 0 } : null;
    let n = 0;
    try {
      for (;;) {
        if (kept && n > 0 && !this.inFlight.includes(kept)) break; // sent again already (its link dropped)
        const { taken, samples } = this.nextFrame(0, sending, n === 0);
        if (taken === 0) break;
        const left = sending.left - samples;
        const last = left <= 0 || this.nextFrame(taken, { ...sending, left }, false).taken === 0;
        const ticks = this.pending.slice(0, taken);
        const msg: AgentMessage = {
          type: "metrics",
          id: `metrics-${batch}-${n}`,
          payload: { intervalMs: this.opts.intervalMs, ticks, ...(kept ? { batch: { id: batch, last } } : {}) },
        };
        if (!this.opts.send(msg)) break;
        if (kept) {
          if (n === 0) this.inFlight.push(kept);
          kept.ticks.push(...ticks);
          kept.sentAt = Date.now();
        }
        n++;
        this.pending.splice(0, taken);
        sending.left = left;
        if (last) break;
        await this.pause((JSON.stringify(msg).length * 1000) / pace);
      }
    } finally {
      this.sending = null;
      // A backlog left behind goes a batch per BATCH_GAP_MS; a batch that took all, or none (the
      // link is down: the next tick tries again), starts no wait.
      this.lastBatchAt = n > 0 && this.pending.length ? Date.now() : 0;
      // The file still holds what is unsent: unless ticks left it for good (no acknowledgement to
      // wait for), it is rewritten once the batch is stored.
      if (n > 0 && !kept) this.spool();
    }
  }

  /** The pause between two frames of a batch (unref'd: it never keeps the process up). */
  private pause(ms: number): Promise<void> {
    return new Promise<void>((wake) => setTimeout(wake, ms).unref());
  }
}
