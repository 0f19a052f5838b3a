// Atomic multi-statement writes on D1 (`DB.batch`), for statements drizzle's own `db.batch` can't
// carry: drizzle 0.45 fails on raw `sql` items with parameters, and our guarded writes are raw
// (INSERT ... SELECT ... WHERE EXISTS, json_each upserts). Builders and `sql` mix freely here.
import { SQL } from "drizzle-orm";
import { SQLiteAsyncDialect } from "drizzle-orm/sqlite-core";
import type { Database } from "./client.ts";

const dialect = new SQLiteAsyncDialect();

/** A statement written as SQL text with its parameters (no query builder compile per call). */
export type Raw = { toSQL(): { sql: string; params: unknown[] } };
export const raw = (text: string, params: unknown[]): Raw => ({ toSQL: () => ({ sql: text, params }) });

export type Statement = SQL | Raw;

export function compile(s: Statement): { sql: string; params: unknown[] } {
  return s instanceof SQL ? dialect.sqlToQuery(s) : s.toSQL();
}

/** Runs the statements in one D1 batch (one transaction); results in order, rows as D1 gives them. */
export async function runBatch(db: Database, statements: Statement[]): Promise<D1Result[]> {
  const d1 = db.$client;
  return d1.batch(
    statements.map((s) => {
      const q = compile(s);
      return d1.prepare(q.sql).bind(...q.params);
    }),
  );
}

export const changes = (r: D1Result | undefined) => r?.meta?.changes ?? 0;
