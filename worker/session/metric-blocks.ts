// The packed layout of the metrics history: one BLOB holds every series' samples over some ticks
// (a minute of raw samples, or one 5-minute bucket's means), column by column, so a node writes one
// row per minute instead of one per VM per sample, and a reader picks one series out without
// decoding the rest.
import { METRIC_FIELDS, type MetricFigures } from "../../protocol/metrics.ts";

export const FIELD_COUNT = METRIC_FIELDS.length;

/** Decoded samples: by tick time, then by series id, the figures in METRIC_FIELDS order (NaN: null). */
export type Samples = Map<number, Map<number, Float64Array>>;

// Layout, native (little) endian, every section 8-byte aligned:
//   u32 tickCount, u32 seriesCount
//   f64 ticks[tickCount]                                   ascending
//   u32 series[seriesCount]                                ascending ids
//   u8  present[seriesCount * tickCount]                   [j * tickCount + k]: a sample was taken
//   f64 values[seriesCount * FIELD_COUNT * tickCount]      [(j * FIELD_COUNT + f) * tickCount + k]
// A missing sample and a sample of nulls differ (a VM sampled with no figures is still a point).
const pad8 = (n: number) => Math.ceil(n / 8) * 8;
const HEADER_BYTES = 8;

function offsets(ticks: number, series: number) {
  const ticksAt = HEADER_BYTES;
  const seriesAt = ticksAt + ticks * 8;
  const presentAt = seriesAt + pad8(series * 4);
  const valuesAt = presentAt + pad8(series * ticks);
  return { ticksAt, seriesAt, presentAt, valuesAt, end: valuesAt + series * FIELD_COUNT * ticks * 8 };
}

/** Bytes a block of this many ticks and series takes. */
export const blockBytes = (ticks: number, series: number) => offsets(ticks, series).end;

export function figuresArray(f: MetricFigures): Float64Array {
  const out = new Float64Array(FIELD_COUNT);
  for (let i = 0; i < FIELD_COUNT; i++) out[i] = f[METRIC_FIELDS[i]] ?? NaN;
  return out;
}

/** Packs the given ticks of `samples` (all of them by default) into one block. */
export function encodeBlock(samples: Samples, tickTimes = [...samples.keys()].sort((a, b) => a - b)): ArrayBuffer {
  const ids = new Set<number>();
  for (const t of tickTimes) for (const id of samples.get(t)!.keys()) ids.add(id);
  const series = Uint32Array.from(ids).sort();
  const nt = tickTimes.length;
  const ns = series.length;
  const at = offsets(nt, ns);
  const buf = new ArrayBuffer(at.end);
  new Uint32Array(buf, 0, 2).set([nt, ns]);
  new Float64Array(buf, at.ticksAt, nt).set(tickTimes);
  new Uint32Array(buf, at.seriesAt, ns).set(series);
  const present = new Uint8Array(buf, at.presentAt, ns * nt);
  const values = new Float64Array(buf, at.valuesAt, ns * FIELD_COUNT * nt).fill(NaN);
  for (let j = 0; j < ns; j++) {
    for (let k = 0; k < nt; k++) {
      const figures = samples.get(tickTimes[k])!.get(series[j]);
      if (!figures) continue;
      present[j * nt + k] = 1;
      for (let f = 0; f < FIELD_COUNT; f++) values[(j * FIELD_COUNT + f) * nt + k] = figures[f];
    }
  }
  return buf;
}

/** A stored block, read in place. */
export class Block {
  readonly ticks: Float64Array;
  readonly series: Uint32Array;
  private readonly present: Uint8Array;
  private readonly values: Float64Array;

  constructor(stored: ArrayBuffer | Uint8Array) {
    // Typed views need 8-byte alignment: a Uint8Array that starts mid-buffer is copied first.
    const buf =
      stored instanceof Uint8Array ? (stored.byteOffset % 8 === 0 ? stored.buffer : stored.slice().buffer) : stored;
    const base = stored instanceof Uint8Array && stored.byteOffset % 8 === 0 ? stored.byteOffset : 0;
    const [nt, ns] = new Uint32Array(buf, base, 2);
    const at = offsets(nt, ns);
    this.ticks = new Float64Array(buf, base + at.ticksAt, nt);
    this.series = new Uint32Array(buf, base + at.seriesAt, ns);
    this.present = new Uint8Array(buf, base + at.presentAt, ns * nt);
    this.values = new Float64Array(buf, base + at.valuesAt, ns * FIELD_COUNT * nt);
  }

  /** The column of a series id, or -1 when this block has no sample of it. */
  indexOf(id: number): number {
    let lo = 0;
    let hi = this.series.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = this.series[mid];
      if (v === id) return mid;
      if (v < id) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  has(j: number, k: number): boolean {
    return this.present[j * this.ticks.length + k] === 1;
  }

  value(j: number, f: number, k: number): number {
    return this.values[(j * FIELD_COUNT + f) * this.ticks.length + k];
  }

  /** Adds every sample of this block to `into` (a later sample of the same series and tick wins). */
  decodeInto(into: Samples): void {
    for (let k = 0; k < this.ticks.length; k++) {
      let at = into.get(this.ticks[k]);
      if (!at) into.set(this.ticks[k], (at = new Map<number, Float64Array>()));
      for (let j = 0; j < this.series.length; j++) {
        if (!this.has(j, k)) continue;
        const figures = new Float64Array(FIELD_COUNT);
        for (let f = 0; f < FIELD_COUNT; f++) figures[f] = this.value(j, f, k);
        at.set(this.series[j], figures);
      }
    }
  }

  /** Samples held (series × ticks present). */
  sampleCount(): number {
    let n = 0;
    for (const p of this.present) n += p;
    return n;
  }
}

/** A running mean the way SQLite's avg() sums REALs (Kahan-Babuska-Neumaier), so means computed
 *  here equal the ones the row-per-sample tables gave. */
export class Mean {
  private sum = 0;
  private err = 0;
  private n = 0;

  add(v: number): void {
    const t = this.sum + v;
    if (Math.abs(this.sum) > Math.abs(v)) this.err += this.sum - t + v;
    else this.err += v - t + this.sum;
    this.sum = t;
    this.n++;
  }

  /** NaN when nothing was added (a figure that was null throughout). */
  value(): number {
    if (this.n === 0) return NaN;
    return (Number.isFinite(this.err) ? this.sum + this.err : this.sum) / this.n;
  }
}

/** Means per series and field over samples grouped by some key (a time bucket). */
export class BucketMeans {
  readonly buckets = new Map<number, Map<number, Mean[]>>();

  add(bucket: number, id: number, sample: (f: number) => number): void {
    let b = this.buckets.get(bucket);
    if (!b) this.buckets.set(bucket, (b = new Map<number, Mean[]>()));
    let means = b.get(id);
    if (!means) b.set(id, (means = Array.from({ length: FIELD_COUNT }, () => new Mean())));
    for (let f = 0; f < FIELD_COUNT; f++) {
      const v = sample(f);
      if (!Number.isNaN(v)) means[f].add(v);
    }
  }

  /** One bucket's means as samples at the bucket's time (for a roll-up block). */
  samplesOf(bucket: number): Samples {
    const out = new Map<number, Float64Array>();
    for (const [id, means] of this.buckets.get(bucket) ?? [])
      out.set(
        id,
        Float64Array.from(means, (m) => m.value()),
      );
    return new Map([[bucket, out]]);
  }
}
