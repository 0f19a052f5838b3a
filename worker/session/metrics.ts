// The node's metrics history in its Durable Object's own SQLite (D1 holds no time series), packed:
// one row per minute holds every series' raw samples (kept a day), one row per 5-minute bucket
// every series' means (kept 30 days), so a node writes a row or two a minute whatever its VM count.
// Read back as a range's series with offline stretches as gaps. Ticks carry their time in this
// side's clock (the agent corrects for skew); one stamped in the future or past the raw retention is
// dropped. A tick may arrive alone or in a batch, and a minute in several frames: it is merged into
// the minute's row.
import {
  METRIC_FIELDS,
  METRIC_RANGES,
  RAW_KEEP_MS,
  ROLLUP_KEEP_MS,
  ROLLUP_STEP_MS,
  seriesAnswer,
  type MetricPoint,
  type MetricRange,
  type MetricsAnswer,
  type MetricsPayload,
  type MetricsTick,
} from "../../protocol/metrics.ts";
import { LegacyTables } from "./metric-legacy.ts";
import type { MetricsStorage } from "./metric-storage.ts";
import { Block, BucketMeans, blockBytes, encodeBlock, figuresArray, type Samples } from "./metric-blocks.ts";

/** The series of the node's own totals (a VM's series is keyed by its UUID). */
const NODE_SERIES = "node";
const MINUTE_MS = 60_000;
/** A Durable Object's SQLite holds at most 2 MB in a row: a minute too big for one row (thousands of
 *  VMs, or short sample intervals) is split by ticks into parts, keyed minute + part number. */
const PART_BYTES = 1_000_000;

const SCHEMA = [
  // Series names (VM UUIDs, "node") to the small ids the packed rows use.
  `CREATE TABLE IF NOT EXISTS metric_series (id INTEGER PRIMARY KEY, series TEXT NOT NULL UNIQUE)`,
  // t: the minute's start + part number; samples: a block (metric-blocks.ts) of that minute's ticks.
  `CREATE TABLE IF NOT EXISTS metric_minute (t INTEGER PRIMARY KEY, samples BLOB NOT NULL)`,
  // t: the 5-minute bucket's start; means: a one-tick block of every series' means over it.
  `CREATE TABLE IF NOT EXISTS metric_bucket (t INTEGER PRIMARY KEY, means BLOB NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS metric_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
];
const UPSERT_MINUTE = `INSERT INTO metric_minute (t, samples) VALUES (?, ?) ON CONFLICT (t) DO UPDATE SET samples = excluded.samples`;
const UPSERT_BUCKET = `INSERT INTO metric_bucket (t, means) VALUES (?, ?) ON CONFLICT (t) DO UPDATE SET means = excluded.means`;

export type IngestCost = { rowsWritten: number };
export type { MetricsStorage };

const minuteOf = (t: number) => Math.floor(t / MINUTE_MS) * MINUTE_MS;
const bucketOf = (t: number) => Math.floor(t / ROLLUP_STEP_MS) * ROLLUP_STEP_MS;
const sameBytes = (a: ArrayBuffer | Uint8Array, b: ArrayBuffer) => {
  const x = a instanceof Uint8Array ? a : new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
};

export class MetricsHistory {
  private readonly storage: MetricsStorage;
  private ready = false;
  /** start of the next 5-minute bucket to roll up (cached from metric_meta) */
  private rolledTo: number | null = null;
  /** metric_series, cached (dropped if a transaction fails, as its inserts are then undone) */
  private ids: Map<string, number> | null = null;
  private legacy: LegacyTables | null = null;

  constructor(storage: MetricsStorage) {
    this.storage = storage;
  }

  private get sql(): MetricsStorage["sql"] {
    return this.storage.sql;
  }

  /** Creates the tables on first use (outside any transaction: moving old rows takes its own). */
  private open(): void {
    if (this.ready) return;
    for (const statement of SCHEMA) this.sql.exec(statement);
    this.legacy = new LegacyTables(this.sql);
    this.moveUnrolledRows();
    this.ready = true;
  }

  private transaction<T>(fn: () => T): T {
    try {
      return this.storage.transactionSync(fn);
    } catch (err) {
      this.ids = null;
      this.rolledTo = null;
      throw err;
    }
  }

  private meta(key: string): number | null {
    const row = this.sql.exec<{ value: number }>("SELECT value FROM metric_meta WHERE key = ?", key).toArray()[0];
    return row ? row.value : null;
  }

  private setMeta(key: string, value: number): number {
    return this.sql.exec("INSERT OR REPLACE INTO metric_meta (key, value) VALUES (?, ?)", key, value).rowsWritten;
  }

  private seriesIds(): Map<string, number> {
    this.ids ??= new Map(
      this.sql
        .exec<{ id: number; series: string }>("SELECT id, series FROM metric_series")
        .toArray()
        .map((r) => [r.series, r.id]),
    );
    return this.ids;
  }

  /** The id of a series, added on its first sample (one row per VM ever sampled on this node). */
  private idFor(series: string, cost: IngestCost): number {
    const ids = this.seriesIds();
    let id = ids.get(series);
    if (id === undefined) {
      const cursor = this.sql.exec<{ id: number }>(
        "INSERT INTO metric_series (series) VALUES (?) RETURNING id",
        series,
      );
      id = cursor.one().id;
      cost.rowsWritten += cursor.rowsWritten;
      ids.set(series, id);
    }
    return id;
  }

  /** Stores one frame's ticks (one transaction): each minute's row read, merged and written back once.
   *  Past a 5-minute boundary, rolls up the closed buckets and drops what is past its retention. */
  ingest(payload: MetricsPayload, now = Date.now()): IngestCost {
    this.open();
    return this.transaction(() => {
      const cost: IngestCost = { rowsWritten: 0 };
      const byMinute = new Map<number, MetricsTick[]>();
      for (const tick of payload.ticks) {
        if (tick.t > now + 60_000 || tick.t < now - RAW_KEEP_MS) continue;
        const m = minuteOf(tick.t);
        const ticks = byMinute.get(m);
        if (ticks) ticks.push(tick);
        else byMinute.set(m, [tick]);
      }
      for (const [minute, ticks] of byMinute) this.mergeMinute(minute, ticks, cost);
      if (this.meta("intervalMs") !== payload.intervalMs)
        cost.rowsWritten += this.setMeta("intervalMs", payload.intervalMs);
      cost.rowsWritten += this.rollUp(now);
      return cost;
    });
  }

  private mergeMinute(minute: number, ticks: MetricsTick[], cost: IngestCost): void {
    const stored = this.sql
      .exec<{ t: number; samples: ArrayBuffer }>(
        "SELECT t, samples FROM metric_minute WHERE t >= ? AND t < ? ORDER BY t",
        minute,
        minute + MINUTE_MS,
      )
      .toArray();
    const samples: Samples = new Map();
    for (const row of stored) new Block(row.samples).decodeInto(samples);
    for (const tick of ticks) {
      let at = samples.get(tick.t);
      if (!at) samples.set(tick.t, (at = new Map<number, Float64Array>()));
      // A later sample of the same series and tick replaces the earlier one.
      for (const vm of tick.vms) at.set(this.idFor(vm.vmId.toLowerCase(), cost), figuresArray(vm));
      if (tick.node) at.set(this.idFor(NODE_SERIES, cost), figuresArray(tick.node));
    }
    this.writeMinute(minute, samples, stored, cost);
  }

  /** Writes a minute's samples as few parts as fit, rewriting only the parts that changed. */
  private writeMinute(
    minute: number,
    samples: Samples,
    stored: { t: number; samples: ArrayBuffer | Uint8Array }[],
    cost: IngestCost,
  ): void {
    const times = [...samples.keys()].sort((a, b) => a - b);
    const parts: number[][] = [];
    let part: number[] = [];
    const ids = new Set<number>();
    for (const t of times) {
      const next = new Set([...ids, ...samples.get(t)!.keys()]);
      if (part.length && blockBytes(part.length + 1, next.size) > PART_BYTES) {
        parts.push(part);
        part = [];
        ids.clear();
        for (const id of samples.get(t)!.keys()) ids.add(id);
      } else for (const id of next) ids.add(id);
      part.push(t);
    }
    if (part.length) parts.push(part);
    parts.forEach((ticks, i) => {
      const bytes = encodeBlock(samples, ticks);
      const old = stored.find((r) => r.t === minute + i);
      if (old && sameBytes(old.samples, bytes)) return;
      cost.rowsWritten += this.sql.exec(UPSERT_MINUTE, minute + i, bytes).rowsWritten;
    });
    if (stored.length > parts.length)
      cost.rowsWritten += this.sql.exec(
        "DELETE FROM metric_minute WHERE t >= ? AND t < ?",
        minute + parts.length,
        minute + MINUTE_MS,
      ).rowsWritten;
  }

  /** Rolls up every closed bucket not rolled up yet (several after an offline stretch, one row each),
   *  then drops the minutes past a day and the buckets past 30 days. */
  private rollUp(now: number): number {
    const current = bucketOf(now);
    this.rolledTo ??= this.meta("rolledTo");
    if (this.rolledTo === null) return this.setMeta("rolledTo", (this.rolledTo = current));
    if (this.rolledTo >= current) return 0;
    let written = 0;
    let from = this.rolledTo;
    for (;;) {
      const next = this.sql
        .exec<{ t: number | null }>("SELECT min(t) AS t FROM metric_minute WHERE t >= ? AND t < ?", from, current)
        .one().t;
      if (next === null) break;
      const bucket = bucketOf(next);
      const means = new BucketMeans();
      for (const row of this.sql.exec<{ samples: ArrayBuffer }>(
        "SELECT samples FROM metric_minute WHERE t >= ? AND t < ? ORDER BY t",
        bucket,
        bucket + ROLLUP_STEP_MS,
      )) {
        const block = new Block(row.samples);
        for (let j = 0; j < block.series.length; j++)
          for (let k = 0; k < block.ticks.length; k++)
            if (block.has(j, k)) means.add(bucket, block.series[j], (f) => block.value(j, f, k));
      }
      const bytes = encodeBlock(means.samplesOf(bucket));
      written += this.sql.exec(UPSERT_BUCKET, bucket, bytes).rowsWritten;
      from = bucket + ROLLUP_STEP_MS;
    }
    // A minute leaves once all of it is past a day (its key may carry a part number, hence the minute).
    written += this.sql.exec("DELETE FROM metric_minute WHERE t < ?", now - RAW_KEEP_MS - MINUTE_MS + 1).rowsWritten;
    written += this.sql.exec("DELETE FROM metric_bucket WHERE t < ?", now - ROLLUP_KEEP_MS).rowsWritten;
    written += this.setMeta("rolledTo", (this.rolledTo = current));
    if (this.legacy?.any) {
      const until = this.meta("legacyUntil")!;
      this.legacy.dropOlderThan("metric_raw", until, now - RAW_KEEP_MS);
      this.legacy.dropOlderThan("metric_5m", until, now - ROLLUP_KEEP_MS);
    }
    return written;
  }

  /** A VM's series (or, with null, the node's totals) over a range: a day from the raw samples,
   *  longer ranges from the 5-minute means. Each step's point is the mean of the samples in it. */
  series(vmId: string | null, range: MetricRange, now = Date.now()): MetricsAnswer {
    this.open();
    const { spanMs, stepMs } = METRIC_RANGES[range];
    const raw = spanMs <= RAW_KEEP_MS;
    const from = now - spanMs;
    const name = vmId?.toLowerCase() ?? NODE_SERIES;
    const id = this.seriesIds().get(name);
    const means = new BucketMeans();
    // Rows of an object written before packing come first: all older than any packed row.
    for (const old of this.legacy?.samples(raw ? "metric_raw" : "metric_5m", name, from) ?? [])
      means.add(Math.floor(old.t / stepMs) * stepMs, 0, (f) => old.figures[f]);
    if (id !== undefined) {
      const rows = raw
        ? this.sql.exec<{ b: ArrayBuffer }>(
            "SELECT samples AS b FROM metric_minute WHERE t >= ? ORDER BY t",
            minuteOf(from),
          )
        : this.sql.exec<{ b: ArrayBuffer }>("SELECT means AS b FROM metric_bucket WHERE t >= ? ORDER BY t", from);
      for (const row of rows) {
        const block = new Block(row.b);
        const j = block.indexOf(id);
        if (j < 0) continue;
        for (let k = 0; k < block.ticks.length; k++) {
          const t = block.ticks[k];
          if (t < from || !block.has(j, k)) continue;
          means.add(Math.floor(t / stepMs) * stepMs, 0, (f) => block.value(j, f, k));
        }
      }
    }
    const points: MetricPoint[] = [];
    for (const [t, bucket] of means.buckets) {
      const figures = bucket.get(0)!;
      const point = { t } as MetricPoint;
      METRIC_FIELDS.forEach((field, f) => {
        const v = figures[f].value();
        point[field] = Number.isNaN(v) ? null : v;
      });
      points.push(point);
    }
    const resolution = raw ? (this.meta("intervalMs") ?? 10_000) : ROLLUP_STEP_MS;
    return seriesAnswer(range, now, points, resolution);
  }

  /** An object written row per sample: its raw samples not rolled up yet move into packed rows (the
   *  rest is read where it is until it expires). */
  private moveUnrolledRows(): void {
    if (!this.legacy?.any || this.meta("legacyUntil") !== null) return;
    this.transaction(() => {
      const cost: IngestCost = { rowsWritten: 0 };
      const byMinute = new Map<number, Samples>();
      // Everything left in the old tables is older than the first bucket not rolled up yet.
      const rolledTo = this.meta("rolledTo");
      this.setMeta("legacyUntil", rolledTo ?? Date.now());
      for (const old of this.legacy!.takeRawFrom(rolledTo ?? 0)) {
        const m = minuteOf(old.t);
        let samples = byMinute.get(m);
        if (!samples) byMinute.set(m, (samples = new Map<number, Map<number, Float64Array>>()));
        let at = samples.get(old.t);
        if (!at) samples.set(old.t, (at = new Map<number, Float64Array>()));
        at.set(this.idFor(old.series, cost), old.figures);
      }
      for (const [m, samples] of byMinute) this.writeMinute(m, samples, [], cost);
    });
  }

  /** For tests and the bench: samples held (raw: VM or node samples; rollup: series × buckets) and
   *  the rows holding them. */
  counts(): { raw: number; rollup: number; minuteRows: number; bucketRows: number } {
    this.open();
    let raw = 0;
    let rollup = 0;
    let minuteRows = 0;
    let bucketRows = 0;
    for (const r of this.sql.exec<{ b: ArrayBuffer }>("SELECT samples AS b FROM metric_minute")) {
      raw += new Block(r.b).sampleCount();
      minuteRows++;
    }
    for (const r of this.sql.exec<{ b: ArrayBuffer }>("SELECT means AS b FROM metric_bucket")) {
      rollup += new Block(r.b).sampleCount();
      bucketRows++;
    }
    raw += this.legacy?.count("metric_raw") ?? 0;
    rollup += this.legacy?.count("metric_5m") ?? 0;
    return { raw, rollup, minuteRows, bucketRows };
  }
}
