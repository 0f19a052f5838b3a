// The row-per-sample tables (metric_raw, metric_5m) an object written before packing still holds:
// read beside the packed rows until all they hold is past its retention, then dropped whole (no
// per-row deletes, which would each bill as a row written). Only their raw samples not yet rolled up
// are moved into packed rows, once, so each roll-up reads one store.
import type { MetricsStorage } from "./metric-storage.ts";

const COLUMNS = "cpu, mem_used, mem_assigned, disk_rd, disk_wr, disk_rd_ops, disk_wr_ops, net_rx, net_tx";
const COLUMN_COUNT = 9;

export type LegacyTable = "metric_raw" | "metric_5m";
/** One old row: the series, its time and the figures (METRIC_FIELDS order, NaN for null). */
export type LegacySample = { series: string; t: number; figures: Float64Array };

type Row = Record<string, number | string | null>;
const sampleOf = (row: Row): LegacySample => {
  const values = Object.values(row);
  return {
    series: row.series as string,
    t: row.t as number,
    figures: Float64Array.from({ length: COLUMN_COUNT }, (_, i) => (values[2 + i] as number | null) ?? NaN),
  };
};

export class LegacyTables {
  private readonly sql: MetricsStorage["sql"];
  private readonly present: Set<LegacyTable>;

  constructor(sql: MetricsStorage["sql"]) {
    this.sql = sql;
    this.present = new Set(
      sql
        .exec<{ name: LegacyTable }>(
          "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('metric_raw', 'metric_5m')",
        )
        .toArray()
        .map((r) => r.name),
    );
  }

  get any(): boolean {
    return this.present.size > 0;
  }

  /** Takes out the raw samples at or after `from` (those not rolled up yet: a few minutes' worth). */
  takeRawFrom(from: number): LegacySample[] {
    if (!this.present.has("metric_raw")) return [];
    const rows = this.sql
      .exec<Row>(`SELECT series, t, ${COLUMNS} FROM metric_raw WHERE t >= ? ORDER BY t`, from)
      .toArray()
      .map(sampleOf);
    if (rows.length) this.sql.exec("DELETE FROM metric_raw WHERE t >= ?", from);
    return rows;
  }

  /** A series' old rows in `table` from `from` on, oldest first. */
  samples(table: LegacyTable, series: string, from: number): LegacySample[] {
    if (!this.present.has(table)) return [];
    return this.sql
      .exec<Row>(`SELECT series, t, ${COLUMNS} FROM ${table} WHERE series = ? AND t >= ? ORDER BY t`, series, from)
      .toArray()
      .map(sampleOf);
  }

  /** Rows held per table (tests and the bench). */
  count(table: LegacyTable): number {
    if (!this.present.has(table)) return 0;
    return this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM ${table}`).one().n;
  }

  /** Drops a table once every row it holds (all older than `until`) is older than `before`. */
  dropOlderThan(table: LegacyTable, until: number, before: number): void {
    if (!this.present.has(table) || until >= before) return;
    this.sql.exec(`DROP TABLE ${table}`);
    this.present.delete(table);
  }
}
