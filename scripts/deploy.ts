// `npm run deploy`: builds the dashboard and the install assets, applies the remote D1 migrations, and only when every one
// of them is applied ships the Worker. Code that expects a column the database lacks fails its
// queries, so the schema goes first; migrations are written so the code still running tolerates them
// (see the README's "Deploying to Cloudflare").
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..");
const DATABASE = "quantix-edge";

const say = (line: string) => console.log(`[deploy] ${line}`);

/** Runs a command in the repository with our output; returns its stdout when asked to capture it. */
function run(cmd: string, args: string[], capture = false): { ok: boolean; stdout: string } {
  const r = spawnSync(cmd, args, {
    cwd: ROOT,
    stdio: ["inherit", capture ? "pipe" : "inherit", "inherit"],
    encoding: "utf8",
  });
  if (capture) process.stdout.write(r.stdout ?? "");
  return { ok: r.status === 0, stdout: r.stdout ?? "" };
}

function stop(why: string): never {
  say(`${why}: the Worker was not deployed.`);
  process.exit(1);
}

say("building the dashboard and the agent it serves (npm run build)");
if (!run("npm", ["run", "build"]).ok) stop("the build failed");

say(`applying the remote D1 migrations of ${DATABASE}`);
if (!run("wrangler", ["d1", "migrations", "apply", DATABASE, "--remote"]).ok)
  stop("a migration failed (wrangler says which above)");
// Answering "no" to wrangler's confirmation also exits 0, so ask again what is still pending.
const pending = run("wrangler", ["d1", "migrations", "list", DATABASE, "--remote"], true);
if (!pending.ok) stop("could not list the remote migrations");
if (!pending.stdout.includes("No migrations to apply")) stop("some migrations are still unapplied (listed above)");

say("migrations applied; deploying the Worker");
if (!run("wrangler", ["deploy"]).ok)
  stop("wrangler deploy failed (the migrations stay applied, which the running Worker tolerates)");
say("done");
