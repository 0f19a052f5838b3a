// Bench baseline only: the metrics history as it was stored before packing, a row per series per
// sample (raw, a day) and per series per 5-minute bucket (means, 30 days), kept verbatim so the bench
// measures the packed store against it in the same run.
import type { IngestCost, MetricsStorage } from "../worker/session/metrics.ts";
import {
  METRIC_FIELDS,
  METRIC_RANGES,
  RAW_KEEP_MS,
  ROLLUP_KEEP_MS,
  ROLLUP_STEP_MS,
  seriesAnswer,
  type MetricFigures,
  type MetricPoint,
  type MetricRange,
  type MetricsAnswer,
  type MetricsPayload,
} from "../protocol/metrics.ts";

/** The series of the node's own totals (a VM's series is keyed by its UUID). */
const NODE_SERIES = "node";
const COLUMNS = [
  "cpu",
  "mem_used",
  "mem_assigned",
  "disk_rd",
  "disk_wr",
  "disk_rd_ops",
  "disk_wr_ops",
  "net_rx",
  "net_tx",
] as const;
const FIELD_OF = Object.fromEntries(COLUMNS.map((c, i) => [c, METRIC_FIELDS[i]])) as Record<
  (typeof COLUMNS)[number],
  keyof MetricFigures
>;
const columnDefs = COLUMNS.map((c) => `${c} REAL`).join(", ");

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS metric_raw (series TEXT NOT NULL, t INTEGER NOT NULL, ${columnDefs}, PRIMARY KEY (series, t)) WITHOUT ROWID`,
  `CREATE TABLE IF NOT EXISTS metric_5m (series TEXT NOT NULL, t INTEGER NOT NULL, ${columnDefs}, PRIMARY KEY (series, t)) WITHOUT ROWID`,
  `CREATE TABLE IF NOT EXISTS metric_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
];
const INSERT_RAW = `INSERT OR REPLACE INTO metric_raw (series, t, ${COLUMNS.join(", ")}) VALUES (?, ?, ${COLUMNS.map(() => "?").join(", ")})`;
// avg() leaves nulls out: a bucket where a VM had no disk stays null, not zero.
const ROLL_UP = `INSERT OR REPLACE INTO metric_5m (series, t, ${COLUMNS.join(", ")})
  SELECT series, (t / ${ROLLUP_STEP_MS}) * ${ROLLUP_STEP_MS} AS bucket, ${COLUMNS.map((c) => `avg(${c})`).join(", ")}
  FROM metric_raw WHERE t >= ? AND t < ? GROUP BY series, bucket`;

export class RowPerSampleHistory {
  private readonly storage: MetricsStorage;
  private ready = false;
  /** start of the next 5-minute bucket to roll up (cached from metric_meta) */
  private rolledTo: number | null = null;

  constructor(storage: MetricsStorage) {
    this.storage = storage;
  }

  private get sql(): MetricsStorage["sql"] {
    if (!this.ready) {
      for (const statement of SCHEMA) this.storage.sql.exec(statement);
      this.ready = true;
    }
    return this.storage.sql;
  }

  private meta(key: string): number | null {
    const row = this.sql.exec<{ value: number }>("SELECT value FROM metric_meta WHERE key = ?", key).toArray()[0];
    return row ? row.value : null;
  }

  private setMeta(key: string, value: number): number {
    return this.sql.exec("INSERT OR REPLACE INTO metric_meta (key, value) VALUES (?, ?)", key, value).rowsWritten;
  }

  /** Stores one frame's ticks (one transaction); past a 5-minute boundary, rolls up the closed
   *  buckets and drops what is past its retention. */
  ingest(payload: MetricsPayload, now = Date.now()): IngestCost {
    return this.storage.transactionSync(() => {
      const sql = this.sql;
      let rowsWritten = 0;
      for (const tick of payload.ticks) {
        if (tick.t > now + 60_000 || tick.t < now - RAW_KEEP_MS) continue;
        const insert = (series: string, f: MetricFigures) => {
          rowsWritten += sql.exec(INSERT_RAW, series, tick.t, ...COLUMNS.map((c) => f[FIELD_OF[c]])).rowsWritten;
        };
        for (const vm of tick.vms) insert(vm.vmId.toLowerCase(), vm);
        if (tick.node) insert(NODE_SERIES, tick.node);
      }
      if (this.meta("intervalMs") !== payload.intervalMs) rowsWritten += this.setMeta("intervalMs", payload.intervalMs);
      rowsWritten += this.rollUp(now);
      return { rowsWritten };
    });
  }

  /** Rolls up every closed bucket not rolled up yet (several after an offline stretch: one statement). */
  private rollUp(now: number): number {
    const current = Math.floor(now / ROLLUP_STEP_MS) * ROLLUP_STEP_MS;
    this.rolledTo ??= this.meta("rolledTo");
    if (this.rolledTo === null) return this.setMeta("rolledTo", (this.rolledTo = current));
    if (this.rolledTo >= current) return 0;
    let written = this.sql.exec(ROLL_UP, this.rolledTo, current).rowsWritten;
    written += this.sql.exec("DELETE FROM metric_raw WHERE t < ?", now - RAW_KEEP_MS).rowsWritten;
    written += this.sql.exec("DELETE FROM metric_5m WHERE t < ?", now - ROLLUP_KEEP_MS).rowsWritten;
    written += this.setMeta("rolledTo", (this.rolledTo = current));
    return written;
  }

  /** A VM's series (or, with null, the node's totals) over a range: a day from the raw samples,
   *  longer ranges from the 5-minute means. */
  series(vmId: string | null, range: MetricRange, now = Date.now()): MetricsAnswer {
    const { spanMs, stepMs } = METRIC_RANGES[range];
    const raw = spanMs <= RAW_KEEP_MS;
    const table = raw ? "metric_raw" : "metric_5m";
    const rows = this.sql
      .exec<Record<string, number | null>>(
        `SELECT (t / ${stepMs}) * ${stepMs} AS b, ${COLUMNS.map((c) => `avg(${c}) AS ${c}`).join(", ")} FROM ${table} WHERE series = ? AND t >= ? GROUP BY b ORDER BY b`,
        vmId?.toLowerCase() ?? NODE_SERIES,
        now - spanMs,
      )
      .toArray();
    const points = rows.map(
      (r) => ({ t: r.b!, ...Object.fromEntries(COLUMNS.map((c) => [FIELD_OF[c], r[c] ?? null])) }) as MetricPoint,
    );
    const resolution = raw ? (this.meta("intervalMs") ?? 10_000) : ROLLUP_STEP_MS;
    return seriesAnswer(range, now, points, resolution);
  }

  /** For tests and the bench: rows held per table. */
  counts(): { raw: number; rollup: number } {
    const count = (table: string) => this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM ${table}`).one().n;
    return { raw: count("metric_raw"), rollup: count("metric_5m") };
  }
}
