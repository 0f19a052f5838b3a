// The local D1 migrations of `npm start` and the test control plane (scripts/local-d1.ts): a new
// database gets every migration in one wrangler run, and ends up as wrangler's own
// `d1 migrations apply` leaves it, bookkeeping included, so wrangler finds nothing left to apply.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runOwned } from "../../scripts/child-processes.ts";
import { localD1Exists, migrateLocalD1, migrationNames } from "../../scripts/local-d1.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const WRANGLER = join(ROOT, "node_modules/wrangler/bin/wrangler.js");
const ENV = {
  ...process.env,
  CI: "true",
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_HIDE_BANNER: "true",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};
const dirs: string[] = [];
const newDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "qx-d1-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const wrangler = (args: string[], persistDir: string) =>
  runOwned(process.execPath, [WRANGLER, "d1", ...args, "DB", "--local", "--persist-to", persistDir], {
    cwd: ROOT,
    env: ENV,
  });

/** The schema and the applied migrations, read through wrangler. */
async function contents(persistDir: string) {
  const sql =
    "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name <> '_cf_METADATA' ORDER BY type, name;" +
    " SELECT name FROM d1_migrations ORDER BY id;";
  const { stdout } = await wrangler(["execute", "--json", "--command", sql], persistDir);
  const [schema, applied] = JSON.parse(stdout) as { results: Record<string, string>[] }[];
  return { schema: schema.results, applied: applied.results.map((r) => r.name) };
}

describe("local D1 migrations", () => {
  it("a new database gets every migration at once, as wrangler's own apply would leave it", {
    timeout: 240_000,
  }, async () => {
    const ours = newDir();
    const theirs = newDir();
    expect(localD1Exists(ours)).toBe(false);
    expect(await migrateLocalD1(ours, ENV)).toEqual(migrationNames());
    expect(localD1Exists(ours)).toBe(true);
    await wrangler(["migrations", "apply"], theirs);

    const [a, b] = await Promise.all([contents(ours), contents(theirs)]);
    expect(a.applied).toEqual(migrationNames());
    expect(a.schema.length).toBeGreaterThan(5);
    expect(a).toEqual(b);

    // Wrangler's bookkeeping is complete: nothing left for it, nor for us.
    expect((await wrangler(["migrations", "apply"], ours)).stdout).toMatch(/No migrations to apply/);
    expect(await migrateLocalD1(ours, ENV)).toEqual([]);
  });
});
