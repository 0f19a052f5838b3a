// The packed layout of the metrics history: one row holds every series' samples over some ticks (an
// hour, or a part of one, of raw samples, of their 1-minute means, or of 5- or 30-minute means),
// series by series in fixed-size slices spread over DATA_COLUMNS columns, so a node writes a row per
// hour instead of one per VM per sample, and SQL cuts one series' slice out of each row reading only
// its column: SQLite copies a column it reads whole, and walks past the others.
import { METRIC_FIELDS, type MetricFigures } from "../../protocol/metrics.ts";

export const FIELD_COUNT = METRIC_FIELDS.length;

/** Decoded samples: by tick time, then by slot, the figures in METRIC_FIELDS order (NaN: null). */
export type Samples = Map<number, Map<number, Float64Array>>;

// A row: n (tick count), slots (slot count), w (bytes a figure takes: 4; 8 in rows an older object
// wrote, read until they expire) and
//   head  f64 [n, slots, tickTimes[n]]       tick times ascending
//   d0…   column c holds slots c, c + DATA_COLUMNS, …, stride(n, w) bytes each: slot s in column
//         s % DATA_COLUMNS at (s / DATA_COLUMNS | 0) × stride(n, w):
//         u8  present[n] (padded to 8)       a sample was taken at tick k
//         f32 values[FIELD_COUNT × n]        [f * n + k], little endian (f64 where w is 8)
// A missing sample and a sample of nulls (NaN) differ (a VM sampled with no figures is still a
// point). A slot past the row's slot count had no sample in it (the row was written before its VM was
// seen). Figures are held as float32 (~7 significant digits; the largest a frame may carry, 1e15, is
// far below its range), read back as the 2- or 3-decimal number they were written from where float32
// holds one (widen).
const pad8 = (n: number) => Math.ceil(n / 8) * 8;
/** Columns a row's slices are spread over (a series' read copies about slots / DATA_COLUMNS slices
 *  a row; an upsert binds at most 7 + DATA_COLUMNS values, under the 100 a statement may bind). */
export const DATA_COLUMNS = 64;
export const DATA_COLUMN_NAMES = Array.from({ length: DATA_COLUMNS }, (_, c) => `d${c}`);
/** Bytes a figure takes: 4 (float32) in every row written now, 8 (float64) in rows written before. */
export type FigureWidth = 4 | 8;
export const FIGURE_BYTES: FigureWidth = 4;
/** Where a slot's slice is: its column and its index in that column. */
export const placeOf = (slot: number) => ({ column: slot % DATA_COLUMNS, index: Math.floor(slot / DATA_COLUMNS) });
export const stride = (n: number, w: FigureWidth = FIGURE_BYTES) => pad8(n) + FIELD_COUNT * n * w;
/** stride(n, w) as SQL over a row's n and w columns. */
export const STRIDE_SQL = `((n + 7) / 8 * 8 + ${FIELD_COUNT} * w * n)`;

/** Bytes a row of this many ticks and slots takes (its head and slices, as written now). */
export const blockBytes = (ticks: number, slots: number) => (2 + ticks) * 8 + slots * stride(ticks);
/** Slots a column of a row of `slots` slots holds. */
const slotsIn = (column: number, slots: number) => Math.max(0, Math.ceil((slots - column) / DATA_COLUMNS));

/** A stored float32 figure as the float64 it was written from where that had at most two decimals (as
 *  the agent sends them) or three (a mean halfway between two shown values): the shortest such number
 *  that stores as the same float32, else the float32. */
export function widen(x: number): number {
  const r = Math.round(x * 100) / 100;
  if (Math.fround(r) === x) return r;
  const r3 = Math.round(x * 1000) / 1000;
  return Math.fround(r3) === x ? r3 : x;
}

export function figuresArray(f: MetricFigures): Float64Array {
  const out = new Float64Array(FIELD_COUNT);
  for (let i = 0; i < FIELD_COUNT; i++) out[i] = f[METRIC_FIELDS[i]] ?? NaN;
  return out;
}

export type EncodedBlock = { n: number; slots: number; w: FigureWidth; head: ArrayBuffer; data: ArrayBuffer[] };

/** Packs the given ticks of `samples` (all of them by default) into one row's columns, its figures
 *  `w` bytes each (8 only to build a row as an older object wrote it). */
export function encodeBlock(
  samples: Samples,
  tickTimes = [...samples.keys()].sort((a, b) => a - b),
  w: FigureWidth = FIGURE_BYTES,
): EncodedBlock {
  let slots = 0;
  for (const t of tickTimes) for (const s of samples.get(t)!.keys()) if (s >= slots) slots = s + 1;
  const n = tickTimes.length;
  const head = new Float64Array(2 + n);
  head[0] = n;
  head[1] = slots;
  head.set(tickTimes, 2);
  const step = stride(n, w);
  const data = DATA_COLUMN_NAMES.map((_, c) => new ArrayBuffer(slotsIn(c, slots) * step));
  const bytes = data.map((d) => new Uint8Array(d));
  const values = data.map((d) => (w === 4 ? new Float32Array(d) : new Float64Array(d)).fill(NaN));
  for (const b of bytes) for (let i = 0; i < b.length; i += step) b.fill(0, i, i + pad8(n));
  for (let k = 0; k < n; k++) {
    for (const [s, figures] of samples.get(tickTimes[k])!) {
      const { column, index } = placeOf(s);
      bytes[column][index * step + k] = 1;
      const at = (index * step + pad8(n)) / w;
      for (let f = 0; f < FIELD_COUNT; f++) values[column][at + f * n + k] = figures[f];
    }
  }
  return { n, slots, w, head: head.buffer, data };
}

/** An 8-byte aligned copy (or view) of a BLOB as SQLite hands it over. */
function aligned(stored: ArrayBuffer | Uint8Array): { buf: ArrayBuffer; base: number; length: number } {
  if (!(stored instanceof Uint8Array)) return { buf: stored, base: 0, length: stored.byteLength };
  if (stored.byteOffset % 8 === 0)
    return { buf: stored.buffer as ArrayBuffer, base: stored.byteOffset, length: stored.length };
  return { buf: stored.slice().buffer, base: 0, length: stored.length };
}

/** The time of the last tick a row's head lists. */
export function lastTick(head: ArrayBuffer | Uint8Array): number | undefined {
  const h = aligned(head);
  const meta = new Float64Array(h.buf, h.base, h.length / 8);
  return meta[0] > 0 ? meta[1 + meta[0]] : undefined;
}

/** A stored row, read in place. */
export class Block {
  readonly ticks: Float64Array;
  readonly slots: number;
  private readonly bytes: Uint8Array[];
  private readonly values: (Float32Array | Float64Array)[];
  private readonly width: FigureWidth;
  private readonly step: number;
  private readonly presentBytes: number;

  /** `data`: the row's d0… columns in order; `width`: its w. */
  constructor(head: ArrayBuffer | Uint8Array, data: (ArrayBuffer | Uint8Array)[], width: FigureWidth) {
    const h = aligned(head);
    const meta = new Float64Array(h.buf, h.base, h.length / 8);
    this.ticks = meta.subarray(2, 2 + meta[0]);
    this.slots = meta[1];
    this.width = width;
    const columns = data.map(aligned);
    this.bytes = columns.map((d) => new Uint8Array(d.buf, d.base, d.length));
    this.values = columns.map((d) =>
      width === 4 ? new Float32Array(d.buf, d.base, d.length / 4) : new Float64Array(d.buf, d.base, d.length / 8),
    );
    this.step = stride(this.ticks.length, width);
    this.presentBytes = pad8(this.ticks.length);
  }

  has(s: number, k: number): boolean {
    return s < this.slots && this.bytes[s % DATA_COLUMNS][Math.floor(s / DATA_COLUMNS) * this.step + k] === 1;
  }

  value(s: number, f: number, k: number): number {
    const at = (Math.floor(s / DATA_COLUMNS) * this.step + this.presentBytes) / this.width;
    const v = this.values[s % DATA_COLUMNS][at + f * this.ticks.length + k];
    return this.width === 4 ? widen(v) : v;
  }

  /** Adds every sample of this row to `into` (a later sample of the same slot and tick wins). */
  decodeInto(into: Samples): void {
    for (let k = 0; k < this.ticks.length; k++) {
      let at = into.get(this.ticks[k]);
      if (!at) into.set(this.ticks[k], (at = new Map<number, Float64Array>()));
      for (let s = 0; s < this.slots; s++) {
        if (!this.has(s, k)) continue;
        const figures = new Float64Array(FIELD_COUNT);
        for (let f = 0; f < FIELD_COUNT; f++) figures[f] = this.value(s, f, k);
        at.set(s, figures);
      }
    }
  }

  /** This row with later ticks added after its last one, copied slice by slice rather than decoded:
   *  the bytes encodeBlock writes for its samples and theirs (as float32). */
  appended(extra: Samples, times: number[]): EncodedBlock {
    const n0 = this.ticks.length;
    const n = n0 + times.length;
    let slots = this.slots;
    for (const t of times) for (const s of extra.get(t)!.keys()) if (s >= slots) slots = s + 1;
    const head = new Float64Array(2 + n);
    head[0] = n;
    head[1] = slots;
    head.set(this.ticks, 2);
    head.set(times, 2 + n0);
    const step = stride(n, 4);
    const data = DATA_COLUMN_NAMES.map((_, c) => new ArrayBuffer(slotsIn(c, slots) * step));
    const bytes = data.map((d) => new Uint8Array(d));
    const values = data.map((d) => new Float32Array(d).fill(NaN));
    for (let s = 0; s < slots; s++) {
      const { column, index } = placeOf(s);
      const at = index * step;
      bytes[column].fill(0, at, at + pad8(n));
      if (s >= this.slots) continue;
      const from = index * this.step;
      bytes[column].set(this.bytes[column].subarray(from, from + n0), at);
      const old = (from + this.presentBytes) / this.width;
      const to = (at + pad8(n)) / 4;
      for (let f = 0; f < FIELD_COUNT; f++)
        values[column].set(this.values[column].subarray(old + f * n0, old + (f + 1) * n0), to + f * n);
    }
    times.forEach((t, j) => {
      for (const [s, figures] of extra.get(t)!) {
        const { column, index } = placeOf(s);
        bytes[column][index * step + n0 + j] = 1;
        const to = (index * step + pad8(n)) / 4;
        for (let f = 0; f < FIELD_COUNT; f++) values[column][to + f * n + n0 + j] = figures[f];
      }
    });
    return { n, slots, w: 4, head: head.buffer, data };
  }

  /** Samples held (slots × ticks present). */
  sampleCount(): number {
    let count = 0;
    for (let s = 0; s < this.slots; s++) for (let k = 0; k < this.ticks.length; k++) if (this.has(s, k)) count++;
    return count;
  }
}

/** Walks the rows' pieces as the range query concatenates them, each its row's width (one byte), its
 *  head and one slot's slice, calling `visit` for each sample the slot has (its figures in a buffer
 *  reused from call to call), rows in time order (sorted here should SQLite have joined them in
 *  another: the means depend on the order samples are added in). */
export function eachSliceSample(
  stream: ArrayBuffer | Uint8Array,
  slot: number,
  visit: (t: number, figures: Float64Array) => void,
): void {
  const bytes = stream instanceof Uint8Array ? stream : new Uint8Array(stream);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const widthAt = (row: number): FigureWidth => {
    const w = bytes[row];
    if (w !== 4 && w !== 8) throw new Error(`metrics row of figure width ${w}`);
    return w;
  };
  const next = (row: number) => {
    const n = view.getFloat64(row + 1, true);
    return row + 17 + n * 8 + (slot < view.getFloat64(row + 9, true) ? stride(n, widthAt(row)) : 0);
  };
  let rows: number[] | null = null;
  for (let at = 0, last = -Infinity; at < bytes.length; at = next(at)) {
    const first = view.getFloat64(at + 17, true);
    if (first < last) {
      rows = [];
      for (let row = 0; row < bytes.length; row = next(row)) rows.push(row);
      rows.sort((a, b) => view.getFloat64(a + 17, true) - view.getFloat64(b + 17, true));
      break;
    }
    last = first;
  }
  const figures = new Float64Array(FIELD_COUNT);
  const visitRow = (row: number) => {
    const n = view.getFloat64(row + 1, true);
    if (slot >= view.getFloat64(row + 9, true)) return; // the row has no slice of it
    const w = widthAt(row);
    const ticksAt = row + 17;
    const presentAt = ticksAt + n * 8;
    const valuesAt = presentAt + pad8(n);
    for (let k = 0; k < n; k++) {
      if (bytes[presentAt + k] !== 1) continue;
      if (w === 4)
        for (let f = 0; f < FIELD_COUNT; f++) figures[f] = widen(view.getFloat32(valuesAt + (f * n + k) * 4, true));
      else for (let f = 0; f < FIELD_COUNT; f++) figures[f] = view.getFloat64(valuesAt + (f * n + k) * 8, true);
      visit(view.getFloat64(ticksAt + k * 8, true), figures);
    }
  };
  if (rows) for (const row of rows) visitRow(row);
  else for (let row = 0; row < bytes.length; row = next(row)) visitRow(row);
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

/** One series' means per step over samples added in time order (the range answer's points): the
 *  same sums as Mean, kept flat, a step closed when the next one starts. */
export class StepMeans {
  /** step start, and per field its mean (NaN: no value in the step) */
  readonly steps: { t: number; means: Float64Array }[] = [];
  private t = Number.NaN;
  private readonly sum = new Float64Array(FIELD_COUNT);
  private readonly err = new Float64Array(FIELD_COUNT);
  private readonly n = new Float64Array(FIELD_COUNT);

  add(step: number, figures: Float64Array): void {
    if (step !== this.t) {
      this.close();
      this.t = step;
    }
    for (let f = 0; f < FIELD_COUNT; f++) {
      const v = figures[f];
      if (Number.isNaN(v)) continue;
      const sum = this.sum[f];
      const t = sum + v;
      if (Math.abs(sum) > Math.abs(v)) this.err[f] += sum - t + v;
      else this.err[f] += v - t + sum;
      this.sum[f] = t;
      this.n[f]++;
    }
  }

  /** Closes the last step; call once all samples are added. */
  close(): void {
    if (Number.isNaN(this.t)) return;
    const means = new Float64Array(FIELD_COUNT);
    for (let f = 0; f < FIELD_COUNT; f++) {
      const err = this.err[f];
      means[f] = this.n[f] === 0 ? NaN : (Number.isFinite(err) ? this.sum[f] + err : this.sum[f]) / this.n[f];
    }
    this.steps.push({ t: this.t, means });
    this.t = Number.NaN;
    this.sum.fill(0);
    this.err.fill(0);
    this.n.fill(0);
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
