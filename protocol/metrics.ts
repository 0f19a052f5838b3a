// Resource figures of running VMs and of their node: the `metrics` frame the agent pushes (one
// batch per sample tick), the ranges a reader asks for, and how a stored series becomes an answer
// (buckets of the range's step, offline stretches as explicit gaps). Shared by the agent, the
// Worker's node session, the web and the CLI.
import { z } from "zod";
import { FIELD_MAX, METRICS_FRAME_SAMPLES, type MetricField } from "./metrics-series.ts";

export * from "./metrics-series.ts";

const uuid = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, "a UUID");
const figure = (f: MetricField) => z.number().min(0).max(FIELD_MAX[f]).nullable();

/** The figures of one sample; null where the hypervisor gave none (a VM without a disk, a driver
 *  without block statistics). Rates are per second over the sample's interval. */
export const MetricFigures = z.object({
  /** CPU time used over the interval, as % of the VM's vCPUs (a node: of the host's CPUs) */
  cpuPct: figure("cpuPct"),
  memUsedMiB: figure("memUsedMiB"),
  memAssignedMiB: figure("memAssignedMiB"),
  diskReadBps: figure("diskReadBps"),
  diskWriteBps: figure("diskWriteBps"),
  diskReadOps: figure("diskReadOps"),
  diskWriteOps: figure("diskWriteOps"),
  netRxBps: figure("netRxBps"),
  netTxBps: figure("netTxBps"),
});
export type MetricFigures = z.infer<typeof MetricFigures>;
/** METRIC_FIELDS (metrics-series.ts) names exactly these figures: the type check fails otherwise. */
type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const METRIC_FIELDS_MATCH: SameKeys<keyof MetricFigures, MetricField> = true;

/** One point of a series: the sample time (epoch ms) and its figures. */
export const MetricPoint = MetricFigures.extend({ t: z.number().int().positive() });
export type MetricPoint = z.infer<typeof MetricPoint>;

/** One sample tick: every running VM's figures and the node's totals, at `t` in the control
 *  plane's clock (the agent corrects its own with the welcome's serverTime). */
export const MetricsTick = z.object({
  t: z.number().int().positive(),
  vms: z.array(MetricFigures.extend({ vmId: uuid })).max(METRICS_FRAME_SAMPLES),
  node: MetricFigures.optional(),
});
export type MetricsTick = z.infer<typeof MetricsTick>;

/** Which batch a frame belongs to (feature `metricsAck`): its frames share `id` and come in order,
 *  `last` on the final one, which the control plane answers with `metrics.stored` once it has stored
 *  the whole batch. */
export const MetricsBatch = z.object({ id: z.string().min(1).max(64), last: z.boolean() });
export type MetricsBatch = z.infer<typeof MetricsBatch>;

/** Agent → worker (feature `metrics`): several ticks per frame (a minute's by default), so the
 *  node's Durable Object wakes once per batch rather than at every tick. */
export const MetricsPayload = z
  .object({
    intervalMs: z.number().int().positive().max(3_600_000),
    ticks: z.array(MetricsTick).min(1).max(360),
    batch: MetricsBatch.optional(),
  })
  .refine(
    (p) => p.ticks.reduce((n, t) => n + t.vms.length, 0) <= METRICS_FRAME_SAMPLES,
    `at most ${METRICS_FRAME_SAMPLES} VM samples per frame`,
  );
export type MetricsPayload = z.infer<typeof MetricsPayload>;

export const MetricRange = z.enum(["1h", "24h", "7d", "30d"]);
export type MetricRange = z.infer<typeof MetricRange>;
/** `watch=1`: the reader's chart is open and shows new samples as they come (the dashboard sends it
 *  with each poll while its Monitoring tab is visible); the node's agent then sends each sample as
 *  it is taken instead of a batch a minute, for a short lease each such read renews. */
export const MetricsQuery = z.object({ range: MetricRange.default("1h"), watch: z.literal("1").optional() });
export type MetricsQuery = z.infer<typeof MetricsQuery>;
/** A watching chart reads every METRICS_WATCH_POLL_MS; each such read keeps the agent live for
 *  METRICS_WATCH_LEASE_MS, a few polls, so one late poll does not drop it back to batches. */
export const METRICS_WATCH_POLL_MS = 5_000;
export const METRICS_WATCH_LEASE_MS = 20_000;

/** Stored resolutions: raw samples for a day, 5-minute averages for 30 days. */
export const RAW_KEEP_MS = 86_400_000;
export const ROLLUP_STEP_MS = 300_000;
export const ROLLUP_KEEP_MS = 30 * 86_400_000;

/** An answer: points oldest first; a point whose figures are all null marks a gap (no sample: the
 *  node was offline or the VM not running), so a chart breaks its line there. */
export const MetricsAnswer = z.object({
  range: MetricRange,
  stepMs: z.number().int().positive(),
  from: z.number().int(),
  to: z.number().int(),
  points: z.array(MetricPoint),
});
export type MetricsAnswer = z.infer<typeof MetricsAnswer>;
