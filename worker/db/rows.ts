// Rows of `vms` read with plain SQL (`SELECT *`, `RETURNING *`) as the VmRecord drizzle would give:
// the hot reads and writes skip the query builder, not the schema's column mapping.
import { getTableColumns, type Column } from "drizzle-orm";
import { vms, type VmRecord } from "./schema.ts";

const VM_COLUMNS = Object.entries(getTableColumns(vms)) as [keyof VmRecord, Column][];

/** A row of `vms` as D1 gives it (column names, driver values) as a VmRecord. */
export function vmFromRow(raw: Record<string, unknown>): VmRecord {
  const row: Record<string, unknown> = {};
  for (const [key, col] of VM_COLUMNS) {
    const v = raw[col.name];
    row[key] = v === null || v === undefined ? null : col.mapFromDriverValue(v);
  }
  return row as VmRecord;
}
