// Counts the rows the control plane writes to its local D1 database over a window: triggers put on
// every table of the database file wrangler dev keeps under its --persist-to directory (bench only;
// the directory is the bench's own and is thrown away). Rows, not statements: what D1 bills as rows
// written, and what a single-writer database has to take at steady state.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";

/** The D1 database file of a wrangler dev data directory (one D1 binding). */
export function d1File(persistDir: string): string {
  const dir = join(persistDir, "v3", "d1", "miniflare-D1DatabaseObject");
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".sqlite") && f !== "metadata.sqlite") : [];
  if (files.length !== 1) throw new Error(`expected one D1 database file in ${dir}, found ${files.length}`);
  return join(dir, files[0]);
}

export type WriteCount = { rows: number; byTable: Record<string, number> };

/** Starts counting; the returned function stops, removes the triggers and says what was written. */
export function countD1Writes(file: string): () => WriteCount {
  const db = new DatabaseSync(file);
  db.exec("PRAGMA busy_timeout = 5000");
  const tables = (
    db
      .prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' AND name <> 'd1_migrations'",
      )
      .all() as { name: string }[]
  ).map((t) => t.name);
  db.exec("CREATE TABLE IF NOT EXISTS bench_writes (tbl TEXT PRIMARY KEY, n INTEGER NOT NULL)");
  const triggers: string[] = [];
  for (const t of tables) {
    for (const op of ["INSERT", "UPDATE", "DELETE"]) {
      const name = `bench_count_${t}_${op.toLowerCase()}`;
      db.exec(
        `CREATE TRIGGER ${name} AFTER ${op} ON "${t}" BEGIN INSERT INTO bench_writes VALUES ('${t}', 1) ON CONFLICT (tbl) DO UPDATE SET n = n + 1; END`,
      );
      triggers.push(name);
    }
  }
  return () => {
    for (const name of triggers) db.exec(`DROP TRIGGER IF EXISTS ${name}`);
    const byTable = Object.fromEntries(
      (db.prepare("SELECT tbl, n FROM bench_writes").all() as { tbl: string; n: number }[]).map((r) => [r.tbl, r.n]),
    );
    db.exec("DROP TABLE bench_writes");
    db.close();
    return { rows: Object.values(byTable).reduce((a, b) => a + b, 0), byTable };
  };
}
