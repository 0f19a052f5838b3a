// The D1 migrations applied to a local database (wrangler dev's --persist-to directory).
// `wrangler d1 migrations apply --local` starts a workerd for its bookkeeping table, one to list what
// is applied and one per migration: on a new database, about 20 s of a first `npm start` on a busy
// machine. Where no local D1 exists yet, every migration goes in one `wrangler d1 execute --file`
// instead (one workerd), written as wrangler writes each: the migration's SQL, then its row in
// d1_migrations, all in one batch (one transaction). A database that exists is left to wrangler.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { runOwned } from "./child-processes.ts";

const ROOT = resolve(import.meta.dirname, "..");
const WRANGLER = join(ROOT, "node_modules/wrangler/bin/wrangler.js");
const MIGRATIONS_DIR = join(ROOT, "migrations");
/** wrangler's default bookkeeping table (wrangler.toml sets no `migrations_table`), quoted as it quotes it. */
const MIGRATIONS_TABLE = '"d1_migrations"';

/** The migration files, in the order wrangler applies them. */
export const migrationNames = () =>
  readdirSync(MIGRATIONS_DIR)
    .filter((n) => n.endsWith(".sql"))
    .sort();

/** Every migration with its bookkeeping row, as one SQL text (a database with none applied). */
export function allMigrationsSql(): string {
  const parts = [
    `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE}(
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		name       TEXT UNIQUE,
		applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL
);`,
  ];
  for (const name of migrationNames())
    parts.push(
      `${readFileSync(join(MIGRATIONS_DIR, name), "utf8")}\nINSERT INTO ${MIGRATIONS_TABLE} (name)\nvalues ('${name.replace(/'/g, "''")}');`,
    );
  return `${parts.join("\n")}\n`;
}

/** Whether wrangler has made a local D1 database under `persistDir` yet. */
export const localD1Exists = (persistDir: string) => existsSync(join(persistDir, "v3/d1"));

/**
 * Applies what is missing; answers the names applied (empty: up to date). A failure throws an
 * error carrying wrangler's stdout and stderr.
 */
export async function migrateLocalD1(persistDir: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  const wrangler = (args: string[]) =>
    runOwned(process.execPath, [WRANGLER, "d1", ...args, "DB", "--local", "--persist-to", persistDir], {
      cwd: ROOT,
      env: { ...env, CI: "true" }, // non-interactive: no confirmation prompt
    });
  if (localD1Exists(persistDir)) {
    const { stdout } = await wrangler(["migrations", "apply"]);
    return [...new Set([...stdout.matchAll(/^│\s*(\S+\.sql)\s*│\s*✅/gm)].map((m) => m[1]))];
  }
  const dir = mkdtempSync(join(tmpdir(), "qx-migrations-"));
  try {
    const file = join(dir, "all.sql");
    writeFileSync(file, allMigrationsSql());
    await wrangler(["execute", "--file", file]);
    return migrationNames();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
