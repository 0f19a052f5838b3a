// How stored metric points become an answer (the range's step buckets, offline stretches as
// explicit gaps), and the figures' names: plain code without zod (the agent loads it), re-exported
// by metrics.ts beside the schemas of the same shapes.

/** The figures of one sample (metrics.ts's MetricFigures checks them). */
export const METRIC_FIELDS = [
  "cpuPct",
  "memUsedMiB",
  "memAssignedMiB",
  "diskReadBps",
  "diskWriteBps",
  "diskReadOps",
  "diskWriteOps",
  "netRxBps",
  "netTxBps",
] as const;
export type MetricField = (typeof METRIC_FIELDS)[number];
export type MetricFigures = Record<MetricField, number | null>;
export type MetricPoint = MetricFigures & { t: number };

/** The largest figure of each kind a `metrics` frame may carry: the control plane refuses a frame
 *  with one past it, so the agent sends such a figure as null. */
export const FIGURE_MAX = { cpuPct: 100_000, mib: 1e9, rate: 1e15 } as const;
/** Each figure's bound, the one the control plane checks a frame against (and the agent sends a
 *  figure past it as null). */
export const FIELD_MAX: Record<MetricField, number> = {
  cpuPct: FIGURE_MAX.cpuPct,
  memUsedMiB: FIGURE_MAX.mib,
  memAssignedMiB: FIGURE_MAX.mib,
  diskReadBps: FIGURE_MAX.rate,
  diskWriteBps: FIGURE_MAX.rate,
  diskReadOps: FIGURE_MAX.rate,
  diskWriteOps: FIGURE_MAX.rate,
  netRxBps: FIGURE_MAX.rate,
  netTxBps: FIGURE_MAX.rate,
};

/** VM samples per `metrics` frame (VMs × ticks): about 650 KB at most, under the frame limit. */
export const METRICS_FRAME_SAMPLES = 3_000;

/** The ranges a reader asks for, each with the step its points are averaged over. */
export const METRIC_RANGES = {
  "1h": { spanMs: 3_600_000, stepMs: 10_000 },
  "24h": { spanMs: 86_400_000, stepMs: 60_000 },
  "7d": { spanMs: 7 * 86_400_000, stepMs: 300_000 },
  "30d": { spanMs: 30 * 86_400_000, stepMs: 1_800_000 },
} as const;
export type MetricRange = keyof typeof METRIC_RANGES;
export type MetricsAnswer = { range: MetricRange; stepMs: number; from: number; to: number; points: MetricPoint[] };

const nothing: MetricFigures = Object.fromEntries(METRIC_FIELDS.map((f) => [f, null])) as MetricFigures;

/** The mean of each figure over some points (nulls left out), as one point at `t`. */
export function meanPoint(t: number, points: MetricFigures[]): MetricPoint {
  const out = { t } as MetricPoint;
  for (const f of METRIC_FIELDS) {
    let n = 0;
    let sum = 0;
    for (const p of points) {
      const v = p[f];
      if (v === null) continue;
      n++;
      sum += v;
    }
    out[f] = n ? Math.round((sum / n) * 100) / 100 : null;
  }
  return out;
}

/** Averages points into the range's step buckets and marks each stretch without samples (longer
 *  than two steps, or two samples of the source's resolution `sampleMs`) with one all-null point.
 *  `points` must be oldest first. */
export function seriesAnswer(range: MetricRange, now: number, points: MetricPoint[], sampleMs = 10_000): MetricsAnswer {
  const { spanMs, stepMs } = METRIC_RANGES[range];
  const from = now - spanMs;
  const buckets = new Map<number, MetricPoint[]>();
  for (const p of points) {
    if (p.t < from || p.t > now) continue;
    const b = Math.floor(p.t / stepMs) * stepMs;
    const bucket = buckets.get(b);
    if (bucket) bucket.push(p);
    else buckets.set(b, [p]);
  }
  const out: MetricPoint[] = [];
  const gapAfter = 2 * Math.max(stepMs, sampleMs);
  let last: number | null = null;
  for (const [t, bucket] of [...buckets].sort((a, b) => a[0] - b[0])) {
    if (last !== null && t - last > gapAfter) out.push({ t: last + stepMs, ...nothing });
    out.push(meanPoint(t, bucket));
    last = t;
  }
  // Silence since the last point (the node went offline, the VM stopped) shows as a gap up to now.
  if (last !== null && now - last > gapAfter) out.push({ t: last + stepMs, ...nothing });
  return { range, stepMs, from, to: now, points: out };
}
