// The node's metrics history in its Durable Object's own SQLite (D1 holds no time series), packed:
// one row per hour holds every series' raw samples (split into parts where an hour does not fit a
// row), one row per hour every series' 5-minute means. Every row written is billed, its deletion
// too, and every byte held: past what a chart reads at full resolution, an hour's row is rewritten
// once at the resolution its later charts read (raw samples as 1-minute means after a few hours,
// for the day view; a day's 5-minute means as one row of 30-minute means after a week, for the month
// view: one write a day, the day's other hours then written over by new ones), and rows leave whole
// (raw after a day, means after 30 days).
// Each series has a slot, the same in every row, so one query cuts a series' slice out of every row
// of a range. Read back as a range's series with offline stretches as gaps. Ticks carry their time in this
// side's clock (the agent corrects for skew); one stamped in the future or past the raw retention is
// dropped. A tick may arrive alone or in a batch, and an hour in many frames: ticks later than any
// held are appended to the hour's last part (the usual case), others merged into the whole hour.
// Figures are held as float32 (metric-blocks.ts): answers of whole numbers and 2-decimal figures up to
// ~130,000 are as before; larger figures with decimals may differ in the last digit shown, as may a
// mean a coarser tier holds that lies exactly halfway between two shown values (rounded the other way).
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
import {
  Block,
  BucketMeans,
  blockBytes,
  DATA_COLUMN_NAMES,
  eachSliceSample,
  encodeBlock,
  figuresArray,
  type FigureWidth,
  lastTick,
  placeOf,
  STRIDE_SQL,
  StepMeans,
  type EncodedBlock,
  type Samples,
} from "./metric-blocks.ts";

/** The series of the node's own totals (a VM's series is keyed by its UUID). */
const NODE_SERIES = "node";
/** The span of one row, raw samples or means (an agent nobody watches sends an hour at a time). */
const CHUNK_MS = 3_600_000;
/** How long a batch's last frame may take to arrive after its last tick was taken, past two sampling
 *  intervals: under the five minutes of ticks a frame holds at 100 VMs, so the earlier frames of an
 *  hour's batch end too early (at 1,000 VMs a frame holds 30 s: the last few close a bucket more). */
const LAST_FRAME_SLACK_MS = 240_000;
/** A Durable Object's SQLite holds at most 2 MB in a row, every column counted: an hour too big for
 *  one row (past ~130 series at 10 s sampling, 13.3 KB a series; or short sample intervals) is split
 *  by ticks into parts, keyed hour + part number. A part's blocks and seen column stay under this,
 *  the rest of the 2 MB is ample for the row's integers and its record header. */
const PART_BYTES = 1_800_000;
/** A raw hour is kept as sampled until it ended this long ago: the hour view reads the last 60
 *  minutes, never an hour that ended longer ago. Then its samples become 1-minute means, the day
 *  view's step; ticks that come later still (an agent back from a dropped link sends its last two
 *  batches, an hour each) merge into it as the minute means they make. */
const RAW_FULL_MS = CHUNK_MS;
const MINUTE_MS = METRIC_RANGES["24h"].stepMs;
/** 5-minute means are kept as such for the week view, then as 30-minute means: the month view's step. */
const BUCKETS_FULL_MS = METRIC_RANGES["7d"].spanMs;
const HALF_HOUR_MS = METRIC_RANGES["30d"].stepMs;
/** A day's 30-minute means are one row (one write, not one an hour), keyed by the day's last hour
 *  (and part), so it leaves with that hour. Its other hours' rows of 5-minute means are then
 *  shadowed: read by nothing, and the first rows a new hour's row is written over (they are not
 *  deleted: a deletion is a row written). The days so written run from metric_days' from_t to its
 *  to_t; a row there keyed in one of a day's first 23 hours is shadowed. */
const DAY_MS = 86_400_000;
const DAY_ROW_AT = DAY_MS - CHUNK_MS;
const SHADOWED_SQL = `(t >= ? AND t < ? AND t % ${DAY_MS} < ${DAY_ROW_AT})`;

type Table = "metric_minute" | "metric_bucket";
/** A row written costs what holding this many bytes for a month does ($1 per million rows written,
 *  $0.20 per GB-month held): an hour is rewritten coarser only where that saves more (a node with a
 *  few VMs keeps its hours as they are). */
const ROW_WRITE_BYTE_MONTHS = 5_000;
/** How far back past its line the first roll-up after a wake looks for hours to rewrite coarser
 *  (they cross it an hour at a time; hours kept as they were, or that crossed it while the node was
 *  away, are not read again). */
const COARSEN_LOOKBACK_MS = 86_400_000;
const MONTH_MS = 30 * 86_400_000;
const worthCoarsening = (bytes: number, coarseBytes: number, heldMs: number) =>
  ((bytes - coarseBytes) * heldMs) / MONTH_MS > ROW_WRITE_BYTE_MONTHS;
const DATA_DEFS = DATA_COLUMN_NAMES.map((c) => `${c} BLOB NOT NULL`).join(", ");
/** A row written without it is of float64 figures, as every row was before. */
const WIDTH_DEF = "w INTEGER NOT NULL DEFAULT 8";
const BLOCK_COLUMNS = ["n", "slots", "w", "head", ...DATA_COLUMN_NAMES];
const SCHEMA = [
  // Series names (VM UUIDs, "node") to their slots (id - 1): dense, a slot taken over by a new series
  // only once nothing of its old one is held any more.
  `CREATE TABLE IF NOT EXISTS metric_series (id INTEGER PRIMARY KEY, series TEXT NOT NULL UNIQUE)`,
  // t: the hour's start + part number (a row of an older object: its minute's start + part number);
  // n, slots, head, d0…: a block (metric-blocks.ts) of those ticks; step: 0 for samples as taken, or
  // the span each tick's means cover (its ticks are then those spans' starts); w: the bytes a figure
  // takes (4; 8 in rows written before float32). The table keeps its old name.
  `CREATE TABLE IF NOT EXISTS metric_minute (t INTEGER PRIMARY KEY, n INTEGER NOT NULL, slots INTEGER NOT NULL, head BLOB NOT NULL, ${DATA_DEFS}, step INTEGER NOT NULL DEFAULT 0, ${WIDTH_DEF})`,
  // t: the hour's start + part number (a row of an older object: one 5-minute bucket's start); a
  // block of every series' means, a tick per bucket (step 0) or per half hour (step 30 min). seen:
  // per slot (u32), the last bucket index (t / 5 min) with a sample of it, carried from row to row,
  // so the newest row tells which slots hold nothing any more.
  `CREATE TABLE IF NOT EXISTS metric_bucket (t INTEGER PRIMARY KEY, n INTEGER NOT NULL, slots INTEGER NOT NULL, head BLOB NOT NULL, ${DATA_DEFS}, seen BLOB NOT NULL, step INTEGER NOT NULL DEFAULT 0, ${WIDTH_DEF})`,
  `CREATE TABLE IF NOT EXISTS metric_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
  // The days written as rows of 30-minute means, [from, to): one row (id 1), keyed by its rowid, so
  // moving `to` on is one row written (a TEXT key's index would make it two).
  `CREATE TABLE IF NOT EXISTS metric_days (id INTEGER PRIMARY KEY, from_t INTEGER NOT NULL, to_t INTEGER NOT NULL)`,
];
const upsert = (table: Table, columns: string[]) =>
  `INSERT INTO ${table} (t, ${columns.join(", ")}) VALUES (?${", ?".repeat(columns.length)})
   ON CONFLICT (t) DO UPDATE SET ${columns.map((c) => `${c} = excluded.${c}`).join(", ")}`;
const UPSERT = {
  metric_minute: upsert("metric_minute", [...BLOCK_COLUMNS, "step"]),
  metric_bucket: upsert("metric_bucket", [...BLOCK_COLUMNS, "seen", "step"]),
};
/** A new row written over the table's oldest row past its retention (or, for means, shadowed), if
 *  any (no row changes otherwise): a row inserted and later deleted is two rows written, one written
 *  over is one, so at steady state, an hour in and an hour out, retention deletes nothing. Bound: as
 *  UPSERT's, then the retention line (and, for means, the shadowed days' span). */
const recycle = (table: Table, columns: string[], orFree = "") =>
  `UPDATE ${table} SET t = ?, ${columns.map((c) => `${c} = ?`).join(", ")}
   WHERE t = (SELECT min(t) FROM ${table} WHERE t < ?${orFree})`;
const RECYCLE = {
  metric_minute: recycle("metric_minute", [...BLOCK_COLUMNS, "step"]),
  metric_bucket: recycle("metric_bucket", [...BLOCK_COLUMNS, "seen", "step"], ` OR ${SHADOWED_SQL}`),
};
const KEEP_MS: Record<Table, number> = { metric_minute: RAW_KEEP_MS, metric_bucket: ROLLUP_KEEP_MS };
/** Rows keyed before this are past their table's retention (a key may carry a part number: whole
 *  hours leave). */
const expiryLine = (table: Table, now: number) => now - KEEP_MS[table] - CHUNK_MS + 1;
const SELECT_BLOCK = `SELECT t, step, w, head, ${DATA_COLUMN_NAMES.join(", ")}`;
/** One series' slice of every row of a table from a time on, each after its row's figure width (one
 *  byte) and head, as one BLOB: one row crosses into the reader, holding only that series' bytes.
 *  The pieces are joined as text, which keeps their bytes, and read back as a BLOB (in the order
 *  scanned: by time, which the reader checks). Bound: the slice's index in its column, the time. */
const sliceQuery = (table: Table, column: string) =>
  `SELECT CAST(group_concat(char(w) || head || substr(${column}, ? * ${STRIDE_SQL} + 1, ${STRIDE_SQL}), '') AS BLOB) AS b
   FROM ${table} WHERE t >= ?${table === "metric_bucket" ? ` AND NOT ${SHADOWED_SQL}` : ""}`;
const SLICE_MINUTES = DATA_COLUMN_NAMES.map((c) => sliceQuery("metric_minute", c));
const SLICE_BUCKETS = DATA_COLUMN_NAMES.map((c) => sliceQuery("metric_bucket", c));
/** Whether a minute row has a sample of a slot (to check it holds nothing). Bound: the slot, its
 *  index in its column. */
const SLOT_IN_MINUTES = DATA_COLUMN_NAMES.map(
  (c) => `SELECT 1 AS x FROM metric_minute
  WHERE slots > ? AND instr(substr(${c}, ? * ${STRIDE_SQL} + 1, (n + 7) / 8 * 8), x'01') > 0 ORDER BY t DESC LIMIT 1`,
);

export type IngestCost = { rowsWritten: number };
export type { MetricsStorage };

const chunkOf = (t: number) => Math.floor(t / CHUNK_MS) * CHUNK_MS;
const bucketOf = (t: number) => Math.floor(t / ROLLUP_STEP_MS) * ROLLUP_STEP_MS;
/** Each sample of a row's block, added to the means of the `stepMs` span it falls in. */
function addToSpans(means: BucketMeans, block: Block, stepMs: number): void {
  for (let k = 0; k < block.ticks.length; k++) {
    const span = Math.floor(block.ticks[k] / stepMs) * stepMs;
    for (let s = 0; s < block.slots; s++) if (block.has(s, k)) means.add(span, s, (f) => block.value(s, f, k));
  }
}
/** Means as samples: a tick per span, at its start, in time order. */
function samplesOfMeans(means: BucketMeans): Samples {
  const samples: Samples = new Map();
  for (const span of [...means.buckets.keys()].sort((a, b) => a - b))
    for (const [t, at] of means.samplesOf(span)) samples.set(t, at);
  return samples;
}
const sameBytes = (a: ArrayBuffer | Uint8Array, b: ArrayBuffer) => {
  const x = a instanceof Uint8Array ? a : new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
};
/** A stored u32 array (DurableObjectStorage hands BLOBs over as ArrayBuffer, node:sqlite as Uint8Array). */
const u32Of = (b: ArrayBuffer | Uint8Array) => {
  const out = new Uint32Array(b.byteLength / 4);
  new Uint8Array(out.buffer).set(b instanceof Uint8Array ? b : new Uint8Array(b));
  return out;
};
// (typed as DurableObjectStorage hands them over; the bench's node:sqlite gives Uint8Array, which
// Block and u32Of read too)
type StoredRow = { t: number; step: number; w: FigureWidth; head: ArrayBuffer; [column: string]: ArrayBuffer | number };
const dataOf = (row: StoredRow) => DATA_COLUMN_NAMES.map((c) => row[c] as ArrayBuffer);
const blockOf = (row: StoredRow) => new Block(row.head, dataOf(row), row.w);
const upsertArgs = (t: number, b: EncodedBlock) => [t, b.n, b.slots, b.w, b.head, ...b.data];
/** Bytes of a row's blocks, summed in SQL (a BLOB's length is read from its record header). */
const ROW_BYTES_SQL = ["head", ...DATA_COLUMN_NAMES].map((c) => `length(${c})`).join(" + ");

export class MetricsHistory {
  private readonly storage: MetricsStorage;
  private ready = false;
  /** start of the next 5-minute bucket to roll up (memory; read back from the rows, see rolledFrom) */
  private rolledTo: number | null = null;
  /** the agent's sampling interval (cached from metric_meta; undefined: not read yet) */
  private intervalMs: number | null | undefined = undefined;
  /** metric_series, cached (dropped if a transaction fails, as its inserts are then undone) */
  private ids: Map<string, number> | null = null;
  private legacy: LegacyTables | null = null;
  /** per table, the line its hours were last coarsened up to (memory: after a wake, the roll-up
   *  looks COARSEN_LOOKBACK_MS back once), so a roll-up reads only the hours that crossed it since */
  private coarsenedTo = new Map<Table, number>();
  /** the days written as rows of 30-minute means (metric_days; cached once read) */
  private days: { from: number; to: number } | undefined = undefined;

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
    // An object whose tables came before `step`: every row it holds is as sampled (step 0); before
    // `w`: of float64 figures. Adding a column with a default rewrites no row.
    for (const { name, sql } of this.sql.exec<{ name: Table; sql: string }>(
      "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN ('metric_minute', 'metric_bucket')",
    )) {
      if (!/\bstep INTEGER\b/.test(sql))
        this.sql.exec(`ALTER TABLE ${name} ADD COLUMN step INTEGER NOT NULL DEFAULT 0`);
      if (!/\bw INTEGER\b/.test(sql)) this.sql.exec(`ALTER TABLE ${name} ADD COLUMN ${WIDTH_DEF}`);
    }
    this.legacy = new LegacyTables(this.sql);
    this.moveUnrolledRows();
    this.ready = true;
  }

  /** The days written as rows of 30-minute means, [from, to) (none yet: an empty span). */
  private dayRows(): { from: number; to: number } {
    this.days ??= this.sql
      .exec<{ from: number; to: number }>(`SELECT from_t AS "from", to_t AS "to" FROM metric_days WHERE id = 1`)
      .toArray()[0] ?? { from: 0, to: 0 };
    return this.days;
  }

  /** Read on every frame and every chart read: kept in memory once read. */
  private samplingInterval(): number | null {
    if (this.intervalMs === undefined) this.intervalMs = this.meta("intervalMs");
    return this.intervalMs;
  }

  private transaction<T>(fn: () => T): T {
    try {
      return this.storage.transactionSync(fn);
    } catch (err) {
      this.ids = null;
      this.rolledTo = null;
      this.intervalMs = undefined;
      this.coarsenedTo.clear();
      this.days = undefined;
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

  /** The slot of a series, given on its first sample: a slot whose series has nothing held any
   *  more, or a new one (one row per slot: about as many as VMs on the node at once). */
  private slotFor(series: string, cost: IngestCost): number {
    const ids = this.seriesIds();
    let id = ids.get(series);
    if (id === undefined) {
      const free = this.freeSlot();
      if (free === null) {
        const cursor = this.sql.exec<{ id: number }>(
          "INSERT INTO metric_series (series) VALUES (?) RETURNING id",
          series,
        );
        id = cursor.one().id;
        cost.rowsWritten += cursor.rowsWritten;
      } else {
        id = free + 1;
        for (const [name, held] of ids) if (held === id) ids.delete(name);
        cost.rowsWritten += this.sql.exec("UPDATE metric_series SET series = ? WHERE id = ?", series, id).rowsWritten;
      }
      ids.set(series, id);
    }
    return id - 1;
  }

  /** A slot none of whose samples is held any more: last seen before the oldest bucket kept (the
   *  newest bucket row says when each slot was last seen), and in no minute row either (a late tick
   *  may land in a minute rolled up already). */
  private freeSlot(): number | null {
    const newest = this.sql
      .exec<{ seen: ArrayBuffer; oldest: number }>(
        "SELECT seen, (SELECT min(t) FROM metric_bucket) AS oldest FROM metric_bucket ORDER BY t DESC LIMIT 1",
      )
      .toArray()[0];
    if (!newest) return null;
    const seen = u32Of(newest.seen);
    const oldest = newest.oldest / ROLLUP_STEP_MS;
    for (let slot = 0; slot < seen.length; slot++) {
      if (seen[slot] >= oldest) continue;
      const { column, index } = placeOf(slot);
      if (this.sql.exec(SLOT_IN_MINUTES[column], slot, index).toArray().length === 0) return slot;
    }
    return null;
  }

  /** Stores one frame's ticks (one transaction): each hour's last part (or whole hour) read, merged
   *  and written back once. Past a 5-minute boundary, rolls up the closed buckets, rewrites the hours
   *  now past full resolution as coarser means and drops what is past its retention. `whole`: the
   *  ticks are a whole batch (held until its last frame), not one frame of it. */
  ingest(payload: MetricsPayload, now = Date.now(), whole = false): IngestCost {
    this.open();
    return this.transaction(() => {
      const cost: IngestCost = { rowsWritten: 0 };
      const byChunk = new Map<number, MetricsTick[]>();
      for (const tick of payload.ticks) {
        if (tick.t > now + 60_000 || tick.t < now - RAW_KEEP_MS) continue;
        const c = chunkOf(tick.t);
        const ticks = byChunk.get(c);
        if (ticks) ticks.push(tick);
        else byChunk.set(c, [tick]);
      }
      for (const [chunk, ticks] of byChunk) this.mergeChunk(chunk, ticks, cost, now);
      if (this.samplingInterval() !== payload.intervalMs)
        cost.rowsWritten += this.setMeta("intervalMs", (this.intervalMs = payload.intervalMs));
      // A batch comes in frames, oldest first, all at once, the last one ending with a tick taken
      // moments ago: unless the batch comes whole, only a frame ending that late (or a live tick)
      // closes buckets, so a batch writes each hour's means once, not once per frame.
      // The newest tick's bucket closes too when the next tick falls in the next one (an hour's batch
      // ending on the hour closes its hour's last bucket, not the next batch).
      const latest = Math.min(now, Math.max(...payload.ticks.map((tick) => tick.t)));
      if (whole || latest >= now - 2 * payload.intervalMs - LAST_FRAME_SLACK_MS)
        cost.rowsWritten += this.rollUp(now, latest + payload.intervalMs);
      return cost;
    });
  }

  /** Merges ticks into an hour's rows. Ticks all later than the last one held (a batch, or a live
   *  tick) read and rewrite only the hour's last part; any other merge reads the whole hour. */
  private mergeChunk(chunk: number, ticks: MetricsTick[], cost: IngestCost, now: number): void {
    const heads = this.sql
      .exec<{ t: number; head: ArrayBuffer; step: number }>(
        "SELECT t, head, step FROM metric_minute WHERE t >= ? AND t < ? ORDER BY t",
        chunk,
        chunk + CHUNK_MS,
      )
      .toArray();
    // An hour kept as 1-minute means already (its samples are gone): merged as minute means.
    if (heads.some((h) => h.step !== 0)) return this.mergeLate(chunk, ticks, cost);
    const last = heads.at(-1);
    const lastHeld = last ? lastTick(last.head) : undefined;
    const appending =
      last !== undefined &&
      last.t === chunk + heads.length - 1 && // parts of an hour, not an older object's minutes
      lastHeld !== undefined &&
      ticks.every((tick) => tick.t > lastHeld);
    const first = appending ? heads.length - 1 : 0;
    const stored = this.sql
      .exec<StoredRow>(
        `${SELECT_BLOCK} FROM metric_minute WHERE t >= ? AND t < ? ORDER BY t`,
        chunk + first,
        chunk + CHUNK_MS,
      )
      .toArray();
    const fresh: Samples = new Map();
    for (const tick of ticks) {
      let at = fresh.get(tick.t);
      if (!at) fresh.set(tick.t, (at = new Map<number, Float64Array>()));
      // A later sample of the same series and tick replaces the earlier one. The node's totals take
      // their slot first: a low slot lies in the row's first page, which the node's view reads.
      if (tick.node) at.set(this.slotFor(NODE_SERIES, cost), figuresArray(tick.node));
      for (const vm of tick.vms) at.set(this.slotFor(vm.vmId.toLowerCase(), cost), figuresArray(vm));
    }
    // The usual case, ticks appended to a last part they still fit in: its slices copied, not decoded.
    if (appending) {
      const block = blockOf(stored[0]).appended(
        fresh,
        [...fresh.keys()].sort((a, b) => a - b),
      );
      if (blockBytes(block.n, block.slots) <= PART_BYTES) {
        cost.rowsWritten += this.sql.exec(UPSERT.metric_minute, ...upsertArgs(stored[0].t, block), 0).rowsWritten;
        return;
      }
    }
    const samples: Samples = new Map();
    for (const row of stored) blockOf(row).decodeInto(samples);
    for (const [t, at] of fresh) {
      const held = samples.get(t);
      if (held) for (const [slot, figures] of at) held.set(slot, figures);
      else samples.set(t, at);
    }
    this.writeParts("metric_minute", chunk, first, samples, stored, cost, { now });
  }

  /** Ticks for an hour kept as 1-minute means: each minute's means of a series the hour holds nothing
   *  of in that minute are added (a batch that came late), the rest is dropped (a tick re-sent: its
   *  minute is held already). The same means the hour's own samples were reduced to. */
  private mergeLate(chunk: number, ticks: MetricsTick[], cost: IngestCost): void {
    const stored = this.rowsOf("metric_minute", chunk);
    if (stored.some((r) => r.step !== MINUTE_MS)) return; // an older object's rows: left as they are
    const samples: Samples = new Map();
    for (const row of stored) blockOf(row).decodeInto(samples);
    const late = new BucketMeans();
    for (const tick of ticks) {
      const minute = Math.floor(tick.t / MINUTE_MS) * MINUTE_MS;
      const held = samples.get(minute);
      const add = (slot: number, figures: Float64Array) => {
        if (!held?.has(slot)) late.add(minute, slot, (f) => figures[f]);
      };
      if (tick.node) add(this.slotFor(NODE_SERIES, cost), figuresArray(tick.node));
      for (const vm of tick.vms) add(this.slotFor(vm.vmId.toLowerCase(), cost), figuresArray(vm));
    }
    if (!late.buckets.size) return;
    for (const minute of late.buckets.keys())
      for (const [t, at] of late.samplesOf(minute)) {
        const held = samples.get(t);
        if (held) for (const [slot, figures] of at) held.set(slot, figures);
        else samples.set(t, at);
      }
    this.writeParts("metric_minute", chunk, 0, samples, stored, cost, { step: MINUTE_MS });
  }

  /** Writes an hour's samples from its part `first` on (`stored`: the rows held from there) as few
   *  parts as fit, rewriting only the parts that changed; a new part over a row past retention as of
   *  `now`, if there is one. `step`: what each tick stands for (0: a sample as taken); `seen`: the
   *  means rows' last-seen bucket per slot. */
  private writeParts(
    table: Table,
    chunk: number,
    first: number,
    samples: Samples,
    stored: StoredRow[],
    cost: IngestCost,
    { step = 0, seen, now }: { step?: number; seen?: ArrayBuffer; now?: number } = {},
  ): void {
    const times = [...samples.keys()].sort((a, b) => a - b);
    const seenBytes = seen?.byteLength ?? 0;
    const parts: number[][] = [];
    let part: number[] = [];
    let slots = 0;
    for (const t of times) {
      let tickSlots = 0;
      for (const slot of samples.get(t)!.keys()) if (slot >= tickSlots) tickSlots = slot + 1;
      if (part.length && blockBytes(part.length + 1, Math.max(slots, tickSlots)) + seenBytes > PART_BYTES) {
        parts.push(part);
        part = [];
        slots = 0;
      }
      slots = Math.max(slots, tickSlots);
      part.push(t);
    }
    if (part.length) parts.push(part);
    parts.forEach((ticks, i) => {
      const block = encodeBlock(samples, ticks);
      const key = chunk + first + i;
      const old = stored.find((r) => r.t === key);
      if (
        old &&
        old.step === step &&
        old.w === block.w &&
        (seen === undefined || sameBytes(old.seen as ArrayBuffer, seen)) &&
        sameBytes(old.head, block.head) &&
        dataOf(old).every((d, c) => sameBytes(d, block.data[c]))
      )
        return;
      const args = [...upsertArgs(key, block), ...(seen ? [seen] : []), step];
      const line = !old && now !== undefined ? this.recycleLine(table, now) : null;
      if (line !== null) {
        const shadowed = table === "metric_bucket" ? [this.dayRows().from, this.dayRows().to] : [];
        const over = this.sql.exec(RECYCLE[table], ...args, line, ...shadowed).rowsWritten;
        cost.rowsWritten += over;
        if (over) return;
      }
      cost.rowsWritten += this.sql.exec(UPSERT[table], ...args).rowsWritten;
    });
    // Rows past the parts written (fewer parts, or an older object's minute or bucket rows now merged).
    if (stored.some((r) => r.t >= chunk + first + parts.length))
      cost.rowsWritten += this.sql.exec(
        `DELETE FROM ${table} WHERE t >= ? AND t < ?`,
        chunk + first + parts.length,
        chunk + CHUNK_MS,
      ).rowsWritten;
  }

  /** Rows of a table keyed before this may be written over: past retention and, for raw samples,
   *  rolled up whole (an hour whose last bucket no later tick closed, the node gone since, is rolled
   *  up before it leaves); null: none. */
  private recycleLine(table: Table, now: number): number | null {
    const line = expiryLine(table, now);
    if (table === "metric_bucket") return line;
    this.rolledTo ??= this.rolledFrom();
    return this.rolledTo === null ? null : Math.min(line, this.rolledTo - CHUNK_MS + 1);
  }

  /** Rolls up every closed bucket not rolled up yet into its hour's row of means (an offline
   *  stretch's in one go), drops the hours past their retention, and rewrites the hours past full
   *  resolution as coarser means. `next`: the earliest time a tick not stored yet can have; the
   *  buckets before its are closed. */
  private rollUp(now: number, next: number): number {
    const current = bucketOf(next);
    this.rolledTo ??= this.rolledFrom();
    if (this.rolledTo === null || this.rolledTo >= current) return 0;
    const cost: IngestCost = { rowsWritten: 0 };
    const from = this.rolledTo;
    // Every raw row that may hold a tick of the closed buckets (a row's key is its hour's start), one
    // row at a time: only the buckets' means are held.
    const means = new BucketMeans();
    for (const row of this.sql.exec<StoredRow>(
      `${SELECT_BLOCK} FROM metric_minute WHERE t >= ? AND t < ? AND step = 0 ORDER BY t`,
      chunkOf(from),
      current,
    )) {
      const block = blockOf(row);
      for (let k = 0; k < block.ticks.length; k++) {
        const t = block.ticks[k];
        if (t < from || t >= current) continue;
        const bucket = bucketOf(t);
        for (let s = 0; s < block.slots; s++) if (block.has(s, k)) means.add(bucket, s, (f) => block.value(s, f, k));
      }
    }
    const byHour = new Map<number, number[]>();
    for (const bucket of [...means.buckets.keys()].sort((a, b) => a - b)) {
      const buckets = byHour.get(chunkOf(bucket));
      if (buckets) buckets.push(bucket);
      else byHour.set(chunkOf(bucket), [bucket]);
    }
    for (const [hour, buckets] of byHour) {
      const stored = this.rowsOf("metric_bucket", hour);
      const samples: Samples = new Map();
      for (const row of stored) blockOf(row).decodeInto(samples);
      for (const bucket of buckets) for (const [t, at] of means.samplesOf(bucket)) samples.set(t, at);
      this.writeParts("metric_bucket", hour, 0, samples, stored, cost, { seen: this.seenWith(hour, samples), now });
    }
    this.rolledTo = current;
    // Whole hours leave, before any is rewritten: those no new row was written over (fewer new hours
    // than expired ones, after an offline stretch).
    for (const table of ["metric_minute", "metric_bucket"] as const)
      cost.rowsWritten += this.sql.exec(`DELETE FROM ${table} WHERE t < ?`, expiryLine(table, now)).rowsWritten;
    // Raw hours rolled up and past the hour view and any re-sent batch; means past the week view.
    this.coarsenRaw(Math.min(now - RAW_FULL_MS, current), now, cost);
    this.coarsenDays(now - BUCKETS_FULL_MS, now, cost);
    if (this.legacy?.any) {
      const until = this.meta("legacyUntil")!;
      this.legacy.dropOlderThan("metric_raw", until, now - RAW_KEEP_MS);
      this.legacy.dropOlderThan("metric_5m", until, now - ROLLUP_KEEP_MS);
    }
    return cost.rowsWritten;
  }

  /** An hour's rows of a table, oldest first. */
  private rowsOf(table: Table, hour: number): StoredRow[] {
    const columns = table === "metric_bucket" ? `${SELECT_BLOCK}, seen` : SELECT_BLOCK;
    return this.sql
      .exec<StoredRow>(`${columns} FROM ${table} WHERE t >= ? AND t < ? ORDER BY t`, hour, hour + CHUNK_MS)
      .toArray();
  }

  /** Rewrites each raw hour that ended by `until` as the means of its samples over each minute (each
   *  a tick at its minute's start): the same means the day view computes from them, in the same
   *  order, so its answers stay exactly as they were. An hour whose rewrite would cost more than its
   *  bytes held (a node with a few VMs) is kept as it is. */
  private coarsenRaw(until: number, now: number, cost: IngestCost): void {
    const hours = this.sql
      .exec<{ hour: number; slots: number; bytes: number }>(
        `SELECT t / ${CHUNK_MS} * ${CHUNK_MS} AS hour, max(slots) AS slots, sum(${ROW_BYTES_SQL}) AS bytes
         FROM metric_minute WHERE t > ? AND t <= ? AND step = 0 GROUP BY hour ORDER BY hour`,
        (this.coarsenedTo.get("metric_minute") ?? until - COARSEN_LOOKBACK_MS) - CHUNK_MS,
        until - CHUNK_MS,
      )
      .toArray();
    this.coarsenedTo.set("metric_minute", until);
    for (const { hour, slots, bytes } of hours) {
      if (hour + CHUNK_MS > until) continue;
      const heldMs = hour + CHUNK_MS + RAW_KEEP_MS - now;
      if (!worthCoarsening(bytes, blockBytes(CHUNK_MS / MINUTE_MS, slots), heldMs)) continue;
      const stored = this.rowsOf("metric_minute", hour);
      const means = new BucketMeans();
      for (const row of stored) addToSpans(means, blockOf(row), MINUTE_MS);
      this.writeParts("metric_minute", hour, 0, samplesOfMeans(means), stored, cost, { step: MINUTE_MS });
    }
  }

  /** Writes each day of 5-minute means that ended by `until` (and after the last day so written) as
   *  one row of its 30-minute means, keyed by the day's last hour: written over that hour's rows, its
   *  other hours' rows shadowed from then on (see DAY_ROW_AT). The means are those the month view
   *  computes from the 5-minute means, in the same order, so its answers stay as they were. A day of
   *  an older object's hours already rewritten as 30-minute means is read as it is. */
  private coarsenDays(until: number, now: number, cost: IngestCost): void {
    const end = Math.floor(until / DAY_MS) * DAY_MS;
    const done = this.dayRows();
    const from = done.to || (this.coarsenedTo.get("metric_bucket") ?? until - COARSEN_LOOKBACK_MS) - DAY_MS;
    this.coarsenedTo.set("metric_bucket", until);
    if (from >= end) return;
    const days = this.sql
      .exec<{ day: number }>(
        `SELECT DISTINCT t / ${DAY_MS} * ${DAY_MS} AS day FROM metric_bucket WHERE t >= ? AND t < ? AND step = 0 ORDER BY day`,
        Math.max(from, 0),
        end,
      )
      .toArray();
    for (const { day } of days) {
      const means = new BucketMeans();
      const lastHour: StoredRow[] = [];
      let seen: ArrayBuffer | undefined;
      // One row at a time: only the day's means and its last hour's rows (to write over) are held.
      for (const row of this.sql.exec<StoredRow>(
        `${SELECT_BLOCK}, seen FROM metric_bucket WHERE t >= ? AND t < ? ORDER BY t`,
        day,
        day + DAY_MS,
      )) {
        addToSpans(means, blockOf(row), HALF_HOUR_MS);
        seen = row.seen as ArrayBuffer;
        if (row.t >= day + DAY_ROW_AT) lastHour.push(row);
      }
      const samples = samplesOfMeans(means);
      if (samples.size && seen)
        this.writeParts("metric_bucket", day + DAY_ROW_AT, 0, samples, lastHour, cost, {
          step: HALF_HOUR_MS,
          seen,
          now,
        });
      this.days = { from: this.dayRows().from || day, to: day + DAY_MS };
      cost.rowsWritten += this.sql.exec(
        `INSERT INTO metric_days (id, from_t, to_t) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET to_t = excluded.to_t`,
        this.days.from,
        this.days.to,
      ).rowsWritten;
    }
  }

  /** The next bucket to roll up, from the rows (storing it would be a row written at every roll-up):
   *  the one after the newest bucket of means (buckets are rolled up in order; one with no sample
   *  has no tick and nothing to roll up), or a fresh history's first raw bucket. */
  private rolledFrom(): number | null {
    const row = this.sql
      .exec<{ head: ArrayBuffer | null; step: number | null; raw: number | null; mark: number | null }>(
        `SELECT newest.head, newest.step, (SELECT min(t) FROM metric_minute) AS raw,
                (SELECT value FROM metric_meta WHERE key = 'rolledTo') AS mark
         FROM (SELECT 1) LEFT JOIN (SELECT head, step FROM metric_bucket ORDER BY t DESC LIMIT 1) AS newest`,
      )
      .one();
    const newest = row.head ? lastTick(row.head) : undefined;
    if (newest !== undefined)
      return Math.max(bucketOf(newest) + Math.max(row.step ?? 0, ROLLUP_STEP_MS), row.mark ?? 0);
    if (row.raw === null) return row.mark;
    return Math.max(bucketOf(row.raw), row.mark ?? 0);
  }

  /** When each slot was last seen, as of an hour's buckets of means: carried on from the newest row
   *  before the hour. Without one (a fresh object, or none kept after a long offline stretch), every
   *  slot known counts as seen long ago. */
  private seenWith(hour: number, samples: Samples): ArrayBuffer {
    const row = this.sql
      .exec<{ seen: ArrayBuffer }>("SELECT seen FROM metric_bucket WHERE t < ? ORDER BY t DESC LIMIT 1", hour)
      .toArray()[0];
    const before = row ? u32Of(row.seen) : new Uint32Array(Math.max(0, ...this.seriesIds().values()));
    let slots = before.length;
    for (const at of samples.values()) for (const slot of at.keys()) slots = Math.max(slots, slot + 1);
    const seen = new Uint32Array(slots);
    seen.set(before);
    for (const [t, at] of samples)
      for (const slot of at.keys()) seen[slot] = Math.max(seen[slot], bucketOf(t) / ROLLUP_STEP_MS);
    return seen.buffer;
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
    const means = new StepMeans();
    // Rows of an object written before packing come first: all older than any packed row.
    for (const old of this.legacy?.samples(raw ? "metric_raw" : "metric_5m", name, from) ?? [])
      means.add(Math.floor(old.t / stepMs) * stepMs, old.figures);
    if (id !== undefined) {
      const slot = id - 1;
      const { column, index } = placeOf(slot);
      const days = this.dayRows();
      const slices = this.sql
        .exec<{ b: ArrayBuffer | null }>(
          (raw ? SLICE_MINUTES : SLICE_BUCKETS)[column],
          index,
          chunkOf(from), // rows are keyed by their hour (a day of 30-minute means by its last)
          ...(raw ? [] : [days.from, days.to]),
        )
        .one().b;
      if (slices)
        eachSliceSample(slices, slot, (t, figures) => {
          if (t >= from) means.add(Math.floor(t / stepMs) * stepMs, figures);
        });
    }
    means.close();
    const points = means.steps.map(({ t, means: figures }) => {
      const point = { t } as MetricPoint;
      METRIC_FIELDS.forEach((field, f) => {
        point[field] = Number.isNaN(figures[f]) ? null : figures[f];
      });
      return point;
    });
    const resolution = raw ? (this.samplingInterval() ?? 10_000) : ROLLUP_STEP_MS;
    return seriesAnswer(range, now, points, resolution);
  }

  /** An object written row per sample: its raw samples not rolled up yet move into packed rows (the
   *  rest is read where it is until it expires). */
  private moveUnrolledRows(): void {
    if (!this.legacy?.any || this.meta("legacyUntil") !== null) return;
    this.transaction(() => {
      const cost: IngestCost = { rowsWritten: 0 };
      const byChunk = new Map<number, Samples>();
      // Everything left in the old tables is older than the first bucket not rolled up yet.
      const rolledTo = this.meta("rolledTo");
      this.setMeta("legacyUntil", rolledTo ?? Date.now());
      for (const old of this.legacy!.takeRawFrom(rolledTo ?? 0)) {
        const c = chunkOf(old.t);
        let samples = byChunk.get(c);
        if (!samples) byChunk.set(c, (samples = new Map<number, Map<number, Float64Array>>()));
        let at = samples.get(old.t);
        if (!at) samples.set(old.t, (at = new Map<number, Float64Array>()));
        at.set(this.slotFor(old.series, cost), old.figures);
      }
      for (const [c, samples] of byChunk) this.writeParts("metric_minute", c, 0, samples, [], cost);
    });
  }

  /** For the cost bench: the row writes the rows held still owe at steady state (an hour at full
   *  resolution to be coarsened: its rewrite as coarser means and its other parts' deletion; a row
   *  past retention is written over by a new hour's, whose write is that hour's), and the bytes a history of as many series as the newest raw row holds, at
   *  the sampling interval, holds at steady state (every tier full, rows as the layout sizes them). */
  costModel(now = Date.now()): { owedWrites: number; steadyBytes: number } {
    this.open();
    const slots = this.sql.exec<{ s: number | null }>("SELECT max(slots) AS s FROM metric_minute").one().s ?? 0;
    const ticks = CHUNK_MS / (this.samplingInterval() ?? 10_000);
    // Raw hours: as written, as 1-minute means, and whether they are rewritten so.
    const minute = (hourTicks: number, hourSlots: number) => {
      const full = blockBytes(hourTicks, hourSlots);
      const coarse = blockBytes(CHUNK_MS / MINUTE_MS, hourSlots);
      return { full, coarse, coarsened: worthCoarsening(full, coarse, RAW_KEEP_MS - RAW_FULL_MS) };
    };
    // A day's row of 30-minute means (and its seen column): the parts it is written as.
    const dayBytes = (daySlots: number) => blockBytes(DAY_MS / HALF_HOUR_MS, daySlots) + 4 * daySlots;
    const days = this.dayRows();
    let owedWrites = 0;
    for (const { step, rows, n, slots: s } of this.sql.exec<{ step: number; rows: number; n: number; slots: number }>(
      `SELECT step, count(*) AS rows, sum(n) AS n, max(slots) AS slots FROM metric_minute GROUP BY t / ${CHUNK_MS}, step`,
    )) {
      const { coarse, coarsened } = minute(n, s);
      if (step === 0 && coarsened) owedWrites += Math.max(rows, Math.ceil(coarse / PART_BYTES));
    }
    // An hour of 5-minute means owes a 24th of its day's row (its own row is written over by a new hour).
    for (const { s } of this.sql.exec<{ s: number }>(
      `SELECT max(slots) AS s FROM metric_bucket WHERE step = 0 AND NOT ${SHADOWED_SQL} GROUP BY t / ${CHUNK_MS}`,
      days.from,
      days.to,
    ))
      owedWrites += Math.ceil(dayBytes(s) / PART_BYTES) / 24;
    // Raw: RAW_FULL_MS as sampled (and the hour being filled, where ticks come as taken: an agent
    // sending a batch an hour holds it itself), then the rest of the day. Means: a week of 5-minute
    // means (and their seen column; the hour being filled's too, where it is), then the rest of 30
    // days as rows of a day (one kept until its last hour leaves: half a day more on average), and
    // half a day's hours of 5-minute means, shadowed, on average, until new hours are written over them.
    const newest = this.sql.exec<{ t: number | null }>("SELECT max(t) AS t FROM metric_minute WHERE step = 0").one().t;
    const filling = newest !== null && chunkOf(newest) >= chunkOf(now) ? 1 : 0;
    const raw = minute(ticks, slots);
    const rawFull = RAW_FULL_MS / CHUNK_MS + filling;
    const rawRest = (RAW_KEEP_MS - CHUNK_MS - RAW_FULL_MS) / CHUNK_MS;
    const bucketHour = blockBytes(CHUNK_MS / ROLLUP_STEP_MS, slots) + 4 * slots;
    const bucketFull = BUCKETS_FULL_MS / CHUNK_MS + filling;
    const dayRowsHeld = (ROLLUP_KEEP_MS - CHUNK_MS - BUCKETS_FULL_MS) / DAY_MS + 0.5;
    const steadyBytes =
      rawFull * raw.full +
      rawRest * (raw.coarsened ? raw.coarse : raw.full) +
      bucketFull * bucketHour +
      dayRowsHeld * dayBytes(slots) +
      ((DAY_ROW_AT / CHUNK_MS) * bucketHour) / 2;
    return { owedWrites, steadyBytes };
  }

  /** For tests and the bench: samples held (raw: VM or node samples; rollup: series × buckets) and
   *  the rows holding them. */
  counts(): { raw: number; rollup: number; minuteRows: number; bucketRows: number } {
    this.open();
    let raw = 0;
    let rollup = 0;
    let minuteRows = 0;
    let bucketRows = 0;
    for (const r of this.sql.exec<StoredRow>(`${SELECT_BLOCK} FROM metric_minute`)) {
      raw += blockOf(r).sampleCount();
      minuteRows++;
    }
    for (const r of this.sql.exec<StoredRow>(`${SELECT_BLOCK} FROM metric_bucket`)) {
      rollup += blockOf(r).sampleCount();
      bucketRows++;
    }
    raw += this.legacy?.count("metric_raw") ?? 0;
    rollup += this.legacy?.count("metric_5m") ?? 0;
    return { raw, rollup, minuteRows, bucketRows };
  }
}
