// `npm run bench`: the benchmark suite. Starts the real control plane (wrangler dev, loopback only,
// rate limits lifted through a config without the [[ratelimits]] bindings, so reset_state and
// enrollment can be driven past 60 and 30 a minute), a real agent on libvirt's test driver (the
// shipped demo host), simulated agents for the fleet, and the floor probe (bench/floor/: the same
// platform hops with none of our code, started the same way). Prints a table of figures, floors and
// baselines measured in the same run, differences, ratios and targets, and writes
// bench/results.json. Never pass/fail.
//   BENCH_FLEET=N    fleet size (default 1000)
//   BENCH_ONLY=a,b   sections: rest, floor, inventory, fleet, metrics, metrics-live, tail, agent-rss, libvirt, digest, isolation, retention, vnc, console, cost, soak
//                    and fresh-start (a fresh clone through npm install and npm start; only when named)
//   BENCH_COST_WINDOW_S=N  the cost section's counting window in seconds (default 300)
//   BENCH_SOAK_MIN=N soak length in minutes (default 10; 60 for the long run)
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ControlPlane } from "../test/support/control-plane.ts";
import { enrollAgent, json } from "../test/e2e/journey.ts";
import { DEMO_LOG_DIR } from "../test/support/agent.ts";
import { benchFleet } from "./fleet.ts";
import { benchFloorHops } from "./floor/hops.ts";
import { FloorProbe } from "./floor/probe.ts";
import { benchInventory } from "./inventory.ts";
import { benchRest, LOG_ANSWER_ROW, restLogDir } from "./rest.ts";
import { formatTable, judge, type BenchRow } from "./table.ts";

const only = process.env.BENCH_ONLY?.split(",").map((s) => s.trim());
const wanted = (section: string) => !only || only.includes(section);
const fleetSize = Number(process.env.BENCH_FLEET ?? 1000);

const rows: BenchRow[] = [];
const section = async (name: string, run: () => Promise<BenchRow[]>) => {
  if (!wanted(name)) return;
  const t0 = Date.now();
  process.stderr.write(`bench: ${name}…\n`);
  try {
    rows.push(...(await run()));
  } catch (err) {
    rows.push({
      name: `${name}: FAILED`,
      value: NaN,
      unit: "",
      note: String((err as Error).stack ?? err)
        .split("\n")
        .slice(0, 3)
        .join(" / "),
    });
  }
  process.stderr.write(`bench: ${name} done in ${Math.round((Date.now() - t0) / 1000)} s\n`);
};

/** Benches owned by the agent's module files (bench/tail.ts, bench/agent-rss.ts): loaded if present. */
async function external(file: string, fn: string): Promise<BenchRow[]> {
  const path = join(import.meta.dirname, file);
  if (!existsSync(path)) throw new Error(`${file} not found`);
  const mod = (await import(pathToFileURL(path).href)) as Record<string, () => Promise<BenchRow[]>>;
  const run = mod[fn] ?? Object.values(mod).find((v) => typeof v === "function");
  if (typeof run !== "function") throw new Error(`${file} exports no bench function`);
  return run();
}

/** Without the product's answer in this run: the size a 1,000-line logs answer of the demo's
 *  web-01 has (its last 1,000 lines as JSON, plus the answer's other fields). */
function demoLogAnswerBytes(): number {
  const lines = readFileSync(join(DEMO_LOG_DIR, "web-01.log"), "utf8").split("\n").slice(-1001).join("\n");
  return Buffer.byteLength(JSON.stringify({ qemuLog: lines })) + 300;
}

const started = Date.now();
const needsCp = ["rest", "inventory", "fleet", "metrics"].some(wanted);
const needsFloor = ["rest", "floor"].some(wanted);
const cp = needsCp ? await ControlPlane.start({ rateLimits: false }) : null;
const floor = needsFloor
  ? await FloorProbe.start().catch(
      (err: Error) => (
        rows.push({ name: "floor probe: FAILED to start", value: NaN, unit: "", note: err.message.split("\n")[0] }),
        null
      ),
    )
  : null;
try {
  const operator = cp
    ? (
        await json<{ token: string }>(
          await cp.api("/api/tokens", { method: "POST", json: { name: "bench", role: "operator" } }),
        )
      ).token
    : "";
  if (cp) {
    await section("rest", async () => {
      if (!floor) throw new Error("the floor probe did not start");
      // The agent as shipped polls its host every 3 s; the end-to-end tests' 200 ms poll would put
      // work on the agent the product never does beside every timed command.
      // web-01's QEMU log is 1 GiB: reads take the file's end, whatever its size.
      const logDir = restLogDir();
      const { agent } = await enrollAgent(cp, `bench-demo-${Date.now()}`, {
        args: ["--poll-interval", "3000"],
        logDir,
      });
      try {
        const rows = await benchRest(cp, operator, floor, logDir);
        const size = statSync(join(logDir, "web-01.log")).size;
        return [{ name: "rest: web-01's QEMU log size", value: Math.round(size / 1024 ** 2), unit: "MiB" }, ...rows];
      } finally {
        await agent.dispose();
      }
    });
  }
  if (floor) {
    const logAnswerBytes = rows.find((r) => r.name === LOG_ANSWER_ROW)?.value ?? demoLogAnswerBytes();
    await section("floor", () => benchFloorHops(floor, logAnswerBytes));
    // Idle from here on: stopped so the later sections have the machine to themselves.
    await floor.dispose();
  }
  if (cp) {
    await section("inventory", () => benchInventory(cp));
    await section("fleet", () => benchFleet(cp, operator, fleetSize));
    await section("metrics", async () => (await import("./metrics.ts")).benchMetrics(cp, rows));
  }
  await section("tail", () => external("tail.ts", "benchTail"));
  await section("agent-rss", () => external("agent-rss.ts", "benchAgentRss"));
  await section("libvirt", () => external("libvirt.ts", "benchLibvirt"));
  await section("metrics-live", () => external("metrics-live.ts", "benchMetricsLive"));
  await section("digest", () => external("digest.ts", "benchDigest"));
  // Its own control plane with the shipped limits (the rate limits are part of what is measured).
  await section("isolation", () => external("isolation.ts", "benchIsolation"));
  await section("retention", () => external("retention.ts", "benchRetention")); // its own control plane
  await section("vnc", () => external("vnc.ts", "benchVnc")); // needs QEMU; its own control plane
  // Needs QEMU; its own control plane (inspector port, debug counts) and floor probe.
  await section("console", () => external("console.ts", "benchConsole"));
  // Its own control plane with debug counts on (the cost meter); prints its table as it ends.
  await section("cost", async () => (await import("./cost.ts")).benchCost());
  // Last, on its own control plane and floor probe (debug counts on, inspector ports it reads).
  await section("soak", async () => (await import("./soak.ts")).benchSoak());
  // A clone of its own, its own npm install and npm start; only when named (it installs every package).
  if (only?.includes("fresh-start")) await section("fresh-start", () => external("fresh-start.ts", "benchFreshStart"));
} finally {
  await floor?.dispose();
  await cp?.dispose();
}

const table = formatTable(rows);
console.log(
  `\nQuantix Edge bench — ${new Date().toISOString()} — ${cpus().length} cores, load ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}, ${Math.round((Date.now() - started) / 1000)} s`,
);
console.log(
  "rate limits lifted for this run (wrangler config without [[ratelimits]]); every floor and baseline measured in this run\n",
);
console.log(table);
const results = {
  at: new Date().toISOString(),
  cores: cpus().length,
  loadavg: loadavg(),
  fleetSize,
  rows: rows.map((r) => ({ ...r, met: judge(r) })),
};
writeFileSync(join(import.meta.dirname, "results.json"), JSON.stringify(results, null, 2) + "\n");
console.log("\nwritten: bench/results.json");
