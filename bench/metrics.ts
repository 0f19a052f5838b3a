// Bench: metrics. (1) Storage cost per node, the packed history (a row per hour of raw samples, later
// of their 1-minute means, and one of 5-minute means, later 30-minute means) beside the row-per-sample
// baseline it replaced (bench/metrics-row-per-sample.ts),
// both over node:sqlite, whose changes() counts rows as the Durable Object's SQLite bills them
// (a deleted row counts as written): rows written per second at steady state (a full day held, so
// retention deletes as much as it stores), bytes stored, ingest CPU, and the range queries over a
// full object (a day of raw samples, 30 days of means), whose answers must be equal (a range reads
// one series' slice of each row: the packed rows keep every series in the same slot); then the move
// first use of such an object (its old rows read in place until they expire). 100 running VMs sampled every 10 s, sent a minute
// at a time, and also a tick at a time (a watched node). (2) A real GET /api/nodes/:id/metrics?range=24h
// through wrangler dev beside the floor probe's Durable Object RPC. (The libvirt access layer has its
// own section, bench/libvirt.ts.)
import { deepStrictEqual } from "node:assert";
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import {
  METRIC_FIELDS,
  METRIC_RANGES,
  METRICS_FRAME_SAMPLES,
  ROLLUP_STEP_MS,
  type MetricFigures,
  type MetricRange,
  type MetricsAnswer,
  type MetricsPayload,
} from "../protocol/metrics.ts";
import { createNode } from "../test/e2e/journey.ts";
import type { ControlPlane } from "../test/support/control-plane.ts";
import { BucketMeans, DATA_COLUMN_NAMES, encodeBlock, figuresArray } from "../worker/session/metric-blocks.ts";
import { MetricsHistory, type MetricsStorage } from "../worker/session/metrics.ts";
import { enroll, SimAgent, simVms } from "./fleet-agent.ts";
import { RowPerSampleHistory } from "./metrics-row-per-sample.ts";
import type { BenchRow } from "./table.ts";

const VMS = 100;
const INTERVAL_MS = 10_000;
const DAY = 86_400_000;
const HOUR = 3_600_000;
/** The same 100 VMs in every batch. */
const FLEET = simVms(VMS);

/** The slice of DurableObjectStorage that MetricsHistory uses, over node:sqlite, and the database's
 *  size in bytes (pages in use). */
export function sqliteStorage() {
  const db = new DatabaseSync(":memory:");
  const prepared = new Map<string, ReturnType<typeof db.prepare>>();
  const changes = db.prepare("SELECT changes() AS c");
  // DurableObjectStorage binds and returns BLOBs as ArrayBuffer; node:sqlite as Uint8Array.
  const bind = (params: unknown[]) =>
    params.map((p) => (p instanceof ArrayBuffer ? new Uint8Array(p) : p)) as SQLInputValue[];
  const exec = (sql: string, ...params: unknown[]) => {
    let stmt = prepared.get(sql);
    if (!stmt) prepared.set(sql, (stmt = db.prepare(sql)));
    const isRead = /^\s*SELECT/i.test(sql) || /\bRETURNING\b/i.test(sql);
    const rows = isRead ? (stmt.all(...bind(params)) as Record<string, unknown>[]) : (stmt.run(...bind(params)), []);
    const rowsWritten = /^\s*SELECT/i.test(sql) ? 0 : Number((changes.get() as { c: number }).c);
    return { rowsWritten, toArray: () => rows, one: () => rows[0], [Symbol.iterator]: () => rows[Symbol.iterator]() };
  };
  const storage = {
    sql: { exec },
    transactionSync<T>(fn: () => T): T {
      db.exec("BEGIN");
      try {
        const out = fn();
        db.exec("COMMIT");
        return out;
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    },
  };
  const bytes = () => {
    const n = (pragma: string) => Number(Object.values(db.prepare(`PRAGMA ${pragma}`).get()!)[0]);
    return (n("page_count") - n("freelist_count")) * n("page_size");
  };
  return { storage: storage as unknown as MetricsStorage, bytes, db };
}

/** Figures that move with time, with two decimals as the agent rounds them, and a VM without a
 *  network (nulls) among them. */
const figures = (i: number, t: number): MetricFigures => {
  const s = Math.floor(t / INTERVAL_MS);
  return {
    cpuPct: ((i * 7 + s * 13) % 10_000) / 100,
    memUsedMiB: 900 + i + (s % 50),
    memAssignedMiB: 2048,
    diskReadBps: 1e5 + i * 3.25 + (s % 1000),
    diskWriteBps: 2e5 + i + (s % 777) * 1.5,
    diskReadOps: 12,
    diskWriteOps: 30 + (s % 7),
    netRxBps: i === 3 ? null : 5e4 + (s % 91),
    netTxBps: i === 3 ? null : 3e4,
  };
};
const tick = (t: number) => ({
  t,
  vms: FLEET.map((v, i) => ({ vmId: v.uuid, ...figures(i, t) })),
  node: figures(0, t),
});
/** A minute's batch as the agent sends it by default: 6 ticks 10 s apart, ending at `t`. */
const batch = (t: number, ticks = 6): MetricsPayload => ({
  intervalMs: INTERVAL_MS,
  ticks: Array.from({ length: ticks }, (_, i) => tick(t - (ticks - 1 - i) * INTERVAL_MS)),
});
/** Checks a packed answer against the row-per-sample store's: the same points, each figure equal or,
 *  float32 holding ~7 significant digits, one off in the last digit shown. Returns how many are, by
 *  field. */
function differingFigures(actual: MetricsAnswer, expected: MetricsAnswer, what: string): Map<string, number> {
  const times = (a: MetricsAnswer) => ({ ...a, points: a.points.map((p) => p.t) });
  deepStrictEqual(times(actual), times(expected), `${what}: the points differ`);
  const differ = new Map<string, number>();
  expected.points.forEach((e, i) => {
    for (const f of METRIC_FIELDS) {
      const [a, x] = [actual.points[i][f], e[f]];
      if (a === x) continue;
      if (a === null || x === null || Math.abs(a - x) > 0.010_001 + Math.abs(x) * 2 ** -23)
        throw new Error(`${what}: ${f} at ${e.t} is ${a}, the baseline's ${x}`);
      differ.set(f, (differ.get(f) ?? 0) + 1);
    }
  });
  return differ;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits;

async function timed(n: number, fn: () => Promise<unknown> | unknown): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return round(median(ms));
}

type History = Pick<MetricsHistory, "ingest" | "series">;
type Store = { history: History; storage: MetricsStorage; bytes: () => number; db: DatabaseSync };

/** Feeds a store a day of minute batches (not counted), then counts rows written over `countMs` of
 *  steady state, fed by `feed` (whole minutes, or single ticks). */
function steadyState(store: Store, start: number, countMs: number, perFrame: number) {
  const batchMs = 6 * INTERVAL_MS;
  for (let t = start + batchMs; t <= start + DAY; t += batchMs) store.history.ingest(batch(t), t);
  let rows = 0;
  let frames = 0;
  const stepMs = perFrame * INTERVAL_MS;
  const t0 = performance.now();
  for (let t = start + DAY + stepMs; t <= start + DAY + countMs; t += stepMs) {
    rows += store.history.ingest(batch(t, perFrame), t).rowsWritten;
    frames++;
  }
  return { rowsPerS: rows / (countMs / 1000), cpuPerFrameMs: (performance.now() - t0) / frames };
}

/** An idle node's history as the agent feeds it by default: an hour's batch at a time, on the clock's
 *  hours (the batch goes when the next hour's first tick is taken), in frames of
 *  METRICS_FRAME_SAMPLES VM samples that the node's object holds until the last and stores whole. A
 *  day and a half is fed (a day held, so raw hours are rewritten as minute means and written over as
 *  they would), then `hours` more counted: rows written per hour, and ingest CPU per batch. */
function hourlyBatches(store: Store, start: number, hours: number) {
  const ticks = HOUR / INTERVAL_MS;
  // The hour ending at `end`, stored a second after it ended.
  const feed = (end: number) => store.history.ingest(batch(end - INTERVAL_MS, ticks), end + 1_000, true).rowsWritten;
  const first = Math.ceil(start / HOUR) * HOUR;
  for (let end = first + HOUR; end <= first + DAY + 12 * HOUR; end += HOUR) feed(end);
  let rows = 0;
  const t0 = performance.now();
  for (let h = 1; h <= hours; h++) rows += feed(first + DAY + 12 * HOUR + h * HOUR);
  return { rowsPerHour: rows / hours, cpuPerBatchMs: (performance.now() - t0) / hours };
}

/** Adds 29 more days of 5-minute means before the first one held, written straight into each
 *  store's tables (the same figures), so the 7 d and 30 d queries read a full object. The packed
 *  store's as it holds them at steady state: a row per hour, as 30-minute means for the hours that
 *  ended over a day before the week view's start (their means taken as its roll-up takes them), the
 *  later ones as 5-minute means; then a batch ending at `next` closes a bucket in both stores, and
 *  the packed one's roll-up rewrites the hours since past the week's start as 30-minute means. */
function olderMeans(old: Store, packed: Store, before: number, next: number) {
  const first = before - 29 * DAY;
  const cols = "cpu, mem_used, mem_assigned, disk_rd, disk_wr, disk_rd_ops, disk_wr_ops, net_rx, net_tx";
  const insertOld = old.db.prepare(
    `INSERT INTO metric_5m (series, t, ${cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertPacked = packed.db.prepare(
    `INSERT INTO metric_bucket (t, n, slots, w, head, ${DATA_COLUMN_NAMES.join(", ")}, seen, step) VALUES (?, ?, ?, ?, ?${", ?".repeat(DATA_COLUMN_NAMES.length)}, ?, ?)`,
  );
  const ids = new Map(
    (packed.db.prepare("SELECT id, series FROM metric_series").all() as { id: number; series: string }[]).map((r) => [
      r.series,
      r.id,
    ]),
  );
  const halfHour = METRIC_RANGES["30d"].stepMs;
  const coarseUntil = next - METRIC_RANGES["7d"].spanMs - DAY;
  old.db.exec("BEGIN");
  packed.db.exec("BEGIN");
  for (let hour = first; hour < before; hour += HOUR) {
    const coarse = hour + HOUR <= coarseUntil;
    const means = new BucketMeans();
    for (let b = hour; b < hour + HOUR; b += ROLLUP_STEP_MS) {
      const add = (series: string, f: MetricFigures) => {
        insertOld.run(series, b, ...(Object.values(f) as SQLInputValue[]));
        const figures = figuresArray(f);
        means.add(coarse ? Math.floor(b / halfHour) * halfHour : b, ids.get(series)! - 1, (i) => figures[i]);
      };
      FLEET.forEach((v, i) => add(v.uuid.toLowerCase(), figures(i, b)));
      add("node", figures(0, b));
    }
    const samples = new Map<number, Map<number, Float64Array>>();
    for (const span of means.buckets.keys()) for (const [t, at] of means.samplesOf(span)) samples.set(t, at);
    const block = encodeBlock(samples);
    const seen = new Uint32Array(ids.size).fill((hour + HOUR - ROLLUP_STEP_MS) / ROLLUP_STEP_MS);
    const blobs = [block.head, ...block.data, seen.buffer].map((x) => new Uint8Array(x));
    insertPacked.run(hour, block.n, block.slots, block.w, ...blobs, coarse ? halfHour : 0);
  }
  old.db.exec("COMMIT");
  packed.db.exec("COMMIT");
  for (const s of [old, packed]) s.history.ingest(batch(next), next);
}

function storage(): BenchRow[] {
  const rows: BenchRow[] = [];
  const start = Math.floor(Date.now() / DAY) * DAY - 2 * DAY;
  const open = (make: (s: MetricsStorage) => History): Store => {
    const { storage, bytes, db } = sqliteStorage();
    return { history: make(storage), storage, bytes, db };
  };
  const baseline = (s: MetricsStorage) => new RowPerSampleHistory(s);
  const packedHistory = (s: MetricsStorage) => new MetricsHistory(s);
  const old = open(baseline);
  const packed = open(packedHistory);
  // Minute batches: a day held, then an hour of steady state counted.
  const minute = { old: steadyState(old, start, HOUR, 6), packed: steadyState(packed, start, HOUR, 6) };
  // A tick per frame (the agent pushing samples as taken): a fresh pair of stores.
  const perTick = [open(baseline), open(packedHistory)];
  const tickFed = { old: steadyState(perTick[0], start, HOUR, 1), packed: steadyState(perTick[1], start, HOUR, 1) };
  const pair = (name: string, unit: string, o: number, p: number, digits = 2): BenchRow => ({
    name,
    value: round(p, digits),
    unit,
    baseline: round(o, digits),
    ratio: round(p / o, 4),
  });
  rows.push(
    pair(
      `metrics: DO rows written per second per node, minute batches (${VMS} VMs every 10 s, steady state: a day held; baseline: row per sample)`,
      "rows/s",
      minute.old.rowsPerS,
      minute.packed.rowsPerS,
      3,
    ),
    pair(
      `metrics: DO rows written per second per node, a tick per frame (watched node)`,
      "rows/s",
      tickFed.old.rowsPerS,
      tickFed.packed.rowsPerS,
      3,
    ),
    pair(
      "metrics: DO rows written per node-month, minute batches",
      "M rows",
      (minute.old.rowsPerS * 30 * DAY) / 1e9,
      (minute.packed.rowsPerS * 30 * DAY) / 1e9,
      3,
    ),
    pair(
      "metrics: ingest CPU per minute batch (node:sqlite)",
      "ms",
      minute.old.cpuPerFrameMs,
      minute.packed.cpuPerFrameMs,
    ),
    pair(
      "metrics: ingest CPU per single-tick frame (node:sqlite)",
      "ms",
      tickFed.old.cpuPerFrameMs,
      tickFed.packed.cpuPerFrameMs,
    ),
  );
  for (const s of perTick) s.db.close();
  const hourly = open(packedHistory);
  const batches = hourlyBatches(hourly, start, 3);
  hourly.db.close();
  rows.push(
    {
      name: `metrics: DO rows written per node-hour, hourly batches (the agent's default: on the clock's hours, in frames of ${METRICS_FRAME_SAMPLES} VM samples stored whole at the last; raw rewrites and rows written over included, the means' later rewrite, 1 an hour, not)`,
      value: round(batches.rowsPerHour, 1),
      unit: "rows",
    },
    {
      name: "metrics: ingest CPU per hourly batch, stored whole (node:sqlite)",
      value: round(batches.cpuPerBatchMs),
      unit: "ms",
    },
  );
  const now = start + DAY + HOUR;
  rows.push(
    pair("metrics: bytes stored, a day of raw samples + a day of means", "MB", old.bytes() / 1e6, packed.bytes() / 1e6),
  );
  // A packed row's payload: the minute rows (6 ticks of 100 VMs and the node) and the bucket rows.
  const rowBytes = (table: string) => {
    const lengths = ["head", ...DATA_COLUMN_NAMES].map((c) => `length(${c})`).join(" + ");
    return Number(Object.values(packed.db.prepare(`SELECT avg(${lengths}) AS b FROM ${table}`).get()!)[0]);
  };
  rows.push(
    {
      name: "metrics: bytes per row of raw samples (packed: part of an hour of every series, or an hour of their 1-minute means once two hours old)",
      value: Math.round(rowBytes("metric_minute")),
      unit: "B",
    },
    {
      name: "metrics: bytes per row of 5-minute means (packed: an hour of every series' means)",
      value: Math.round(rowBytes("metric_bucket")),
      unit: "B",
    },
  );
  // The queries are asked when the next bucket has closed: a batch at `asked` lands in both stores.
  const asked = now + ROLLUP_STEP_MS;
  // (the packed history woken afresh, as an object is after the rows it holds were written)
  packed.history = new MetricsHistory(packed.storage);
  olderMeans(old, packed, start, asked);
  rows.push(
    pair(
      "metrics: bytes stored, full object (a day raw + 30 days of means)",
      "MB",
      old.bytes() / 1e6,
      packed.bytes() / 1e6,
    ),
  );

  // The range queries over the full object: the same answer from both, timed.
  const vmId = FLEET[0].uuid;
  const lastVmId = FLEET[VMS - 1].uuid;
  const answers = new Map<MetricRange, MetricsAnswer>();
  const compared = { figures: 0, differ: new Map<string, number>() };
  const compare = (actual: MetricsAnswer, expected: MetricsAnswer, what: string) => {
    compared.figures += expected.points.length * METRIC_FIELDS.length;
    for (const [field, n] of differingFigures(actual, expected, what))
      compared.differ.set(field, (compared.differ.get(field) ?? 0) + n);
  };
  for (const range of Object.keys(METRIC_RANGES) as MetricRange[]) {
    const expected = old.history.series(vmId, range, asked);
    compare(packed.history.series(vmId, range, asked), expected, `the ${range} answers`);
    compare(packed.history.series(null, range, asked), old.history.series(null, range, asked), `the node's ${range}`);
    compare(
      packed.history.series(lastVmId, range, asked),
      old.history.series(lastVmId, range, asked),
      `the last VM's ${range}`,
    );
    if (expected.points.length < 12) throw new Error(`the ${range} query found ${expected.points.length} points`);
    answers.set(range, expected);
    // The two stores' queries alternate, so a shift in the machine's load weighs on both alike.
    const timed = (series: string | null) => {
      const ms = { old: [] as number[], packed: [] as number[] };
      for (let i = 0; i < 15; i++)
        for (const [key, s] of [
          ["old", old],
          ["packed", packed],
        ] as const) {
          const q0 = performance.now();
          s.history.series(series, range, asked);
          ms[key].push(performance.now() - q0);
        }
      return [median(ms.old), median(ms.packed)] as const;
    };
    rows.push(
      pair(
        `metrics: ${range} query of one VM over a full object (${(expected.points as unknown[]).length} points, answers as below; node:sqlite, median of 15, alternating)`,
        "ms",
        ...timed(vmId),
      ),
      pair(
        `metrics: ${range} query of the last VM seen (its slot past a bucket row's first page)`,
        "ms",
        ...timed(lastVmId),
      ),
      pair(`metrics: ${range} query of the node's totals (the node's metrics route)`, "ms", ...timed(null)),
    );
  }
  const byField = [...compared.differ].map(([field, n]) => `${field} ${n}`).join(", ");
  rows.push({
    name: `metrics: figures of the range answers above one off in their last shown digit from the baseline's (float32 figures; every other figure equal; ${byField || "none"})`,
    value: [...compared.differ.values()].reduce((a, b) => a + b, 0),
    unit: `of ${compared.figures}`,
  });
  packed.db.close();

  // A deployed object written row per sample: on first use its raw samples not rolled up yet move
  // into packed rows; the rest is read where it is until it expires.
  const moved = new MetricsHistory(old.storage);
  const m0 = performance.now();
  moved.series(vmId, "1h", asked);
  const moveMs = performance.now() - m0;
  let movedDiffer = 0;
  for (const [range, expected] of answers)
    for (const n of differingFigures(moved.series(vmId, range, asked), expected, `the moved ${range}`).values())
      movedDiffer += n;
  rows.push({
    name: `metrics: first use of a full row-per-sample object (${VMS} VMs: unrolled samples moved, then a 1h query; its answers then as the baseline's, ${movedDiffer} figures one off in the last digit)`,
    value: Math.round(moveMs),
    unit: "ms",
  });
  old.db.close();
  return rows;
}

async function restQuery(cp: ControlPlane, floorRows: BenchRow[]): Promise<BenchRow[]> {
  const { joinToken } = await createNode(cp, `bench-metrics-${Date.now()}`);
  const { credential, nodeId } = await enroll(cp.url, joinToken);
  const agent = new SimAgent(cp.url, credential, FLEET);
  await agent.start();
  try {
    for (let i = 0; i < 30; i++) agent.send({ type: "metrics", id: `m-${i}`, payload: batch(Date.now()) });
    await new Promise((r) => setTimeout(r, 1_000));
    const get = async () => {
      const res = await cp.api(`/api/nodes/${nodeId}/metrics?range=24h`);
      if (res.status !== 200) throw new Error(`metrics route: ${res.status}`);
      await res.arrayBuffer();
    };
    await get();
    const value = await timed(30, get);
    const floor = floorRows.find((r) => r.name.includes("Durable Object RPC, no socket"))?.value;
    return [
      {
        name: "metrics: GET /api/nodes/:id/metrics?range=24h (wrangler dev, median of 30)",
        value,
        unit: "ms",
        ...(floor
          ? {
              floor,
              overFloor: Math.round((value - floor) * 100) / 100,
              ratio: Math.round((value / floor) * 100) / 100,
            }
          : {}),
      },
    ];
  } finally {
    await agent.stop();
  }
}

export async function benchMetrics(cp: ControlPlane, floorRows: BenchRow[]): Promise<BenchRow[]> {
  // The wrangler query first: the storage part holds the event loop for a while, and a kept-alive
  // connection the server closed meanwhile would fail the next request.
  const rows = await restQuery(cp, floorRows);
  rows.push(...storage());
  return rows;
}
