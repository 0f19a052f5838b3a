// Bench: REST reads, the command round trip (reset_state without force: REST → Worker → Durable
// Object → real agent → libvirt test driver → back), the same libvirt call made in-process (the
// agent's own share), and logs end to end. Every figure sits beside its floor, measured just before
// it in the same run: the floor probe (bench/floor/) doing the same platform hops with none of our
// code, since local workerd, local D1 and this machine set what any code could reach.
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { logAnswerFrames } from "../agent/host/commands.ts";
import { Libvirt } from "../agent/host/libvirt.ts";
import { logFacts, readVmLog } from "../agent/logs/vm-log.ts";
import { lastLines } from "../protocol/log-excerpt.ts";
import { AgentMessage, EXCERPT_MAX_BYTES, MAX_LOG_BYTES, parseFrame } from "../protocol/wire.ts";
import { DEMO_LOG_DIR, demoLibvirtUri } from "../test/support/agent.ts";
import type { ControlPlane } from "../test/support/control-plane.ts";
import { DEMO, json } from "../test/e2e/journey.ts";
import { FLOOR_READ_ID, type FloorProbe } from "./floor/probe.ts";
import { alternating, interleaved, percentile, type LoadResult, type Target } from "./load.ts";
import type { BenchRow } from "./table.ts";
import { ensureLog } from "./tail.ts";
import { goal, type TargetId } from "./targets.ts";

const ONE_CONN_REQUESTS = 1_000;
const MANY_CONNS = 50;
/** Throughput: floor and product take turns, ROUNDS rounds of ROUND_SECONDS each. */
const ROUNDS = 5;
const ROUND_SECONDS = 2;
/** The row saying how big the product's 1,000-line logs answer is: the floor's N-byte echo uses it. */
export const LOG_ANSWER_ROW = "GET logs?lines=1000 answer size (the floor echo's N)";

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

const GiB = 1024 ** 3;
/** The demo's logs with web-01's grown to 1 GiB (real hosts have such logs): 1 GiB of QEMU lines,
 *  then the demo's own web-01 log, so its last lines (and the answers' size) stay the demo's. Kept
 *  between runs when already there at the right size. */
export function restLogDir(): string {
  const dir = "/tmp/qx-bench/rest-logs";
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(DEMO_LOG_DIR)) if (f !== "web-01.log") copyFileSync(join(DEMO_LOG_DIR, f), join(dir, f));
  const demo = readFileSync(join(DEMO_LOG_DIR, "web-01.log"));
  const big = join(dir, "web-01.log");
  if (!existsSync(big) || statSync(big).size !== GiB + demo.length) {
    copyFileSync(ensureLog("/tmp/qx-bench/tail-1g.log", GiB), big);
    appendFileSync(big, demo);
  }
  return dir;
}

/** Non-2xx and transport errors of a run, as one row. */
const failuresRow = (name: string, r: LoadResult): BenchRow => ({
  name: `${name}: non-2xx + errors`,
  value: r.non2xx + r.errors,
  unit: "count",
  ...goal("restErrors", { value: r.non2xx + r.errors }),
  note: Object.entries(r.statuses)
    .map(([s, n]) => `${s}×${n}`)
    .join(" "),
});

/** A product figure beside the floor's: difference, ratio and (if any) its target. */
function besideFloor(
  name: string,
  unit: "ms" | "req/s",
  value: number,
  floor: number,
  floorName: string,
  target?: TargetId,
): BenchRow {
  const d = unit === "ms" ? 2 : 0;
  return {
    name,
    value: round(value, d),
    unit,
    floor: round(floor, d),
    overFloor: round(value - floor, d),
    ratio: round(value / floor),
    ...(target ? goal(target, { value, floor }) : {}),
    note: `floor: ${floorName}`,
  };
}

/** p50 at one connection, floor and product taking turns request by request (the machine's noise
 *  falls on both alike). */
async function p50Pair(floor: Target, product: Target, count = ONE_CONN_REQUESTS) {
  const [f, p] = await interleaved([floor, product], count);
  return { f: f, p: p };
}

async function throughputPair(floor: Target, product: Target) {
  const [f, p] = await alternating([floor, product], MANY_CONNS, ROUND_SECONDS, ROUNDS);
  return { f: f, p: p };
}

export async function benchRest(
  cp: ControlPlane,
  operatorToken: string,
  floor: FloorProbe,
  logDir: string,
): Promise<BenchRow[]> {
  const auth = { authorization: `Bearer ${operatorToken}` };
  const health: Target = { url: `${cp.url}/api/health` };
  const vm: Target = { url: `${cp.url}/api/vms/${DEMO.web01}`, headers: auth };
  // Authenticated but no D1 (the token is cached): splits GET /api/vms/:id's cost into auth and its D1 read.
  const me: Target = { url: `${cp.url}/api/me`, headers: auth };
  const reset: Target = { url: `${cp.url}/api/vms/${DEMO.web01}/reset_state`, method: "POST", headers: auth };
  const logs: Target = { url: `${cp.url}/api/vms/${DEMO.web01}/logs?lines=1000`, headers: auth };

  // Sanity: the routes answer the documented shapes before they are timed.
  const logsProbe = await fetch(logs.url, { headers: auth });
  const logAnswer = new Uint8Array(await logsProbe.clone().arrayBuffer()).byteLength;
  const probe = await json<{ linesReturned?: number }>(logsProbe);
  if (probe.linesReturned !== 1000) throw new Error(`logs probe: ${JSON.stringify(probe).slice(0, 300)}`);
  const resetProbe = await json<{ source?: string }>(await fetch(reset.url, { method: "POST", headers: auth }));
  if (resetProbe.source !== "hypervisor")
    throw new Error(`reset_state probe: ${JSON.stringify(resetProbe).slice(0, 300)}`);

  const trivial: Target = { url: `${floor.url}/trivial` };
  const authLike: Target = { url: `${floor.url}/auth`, headers: auth };
  const d1Read: Target = { url: `${floor.url}/items/${FLOOR_READ_ID}` };
  const echoWrite: Target = { url: `${floor.url}/echo-write`, method: "POST" };
  const echoLog: Target = { url: `${floor.url}/echo?bytes=${logAnswer}`, method: "POST" };

  const rows: BenchRow[] = [{ name: LOG_ANSWER_ROW, value: logAnswer, unit: "bytes" }];

  // REST reads
  const h1 = await p50Pair(trivial, health);
  const m1 = await p50Pair(authLike, me);
  const v1 = await p50Pair(d1Read, vm);
  rows.push(besideFloor("GET /api/health p50, 1 conn", "ms", h1.p.p50, h1.f.p50, "trivial JSON route"));
  rows.push(
    besideFloor(
      "GET /api/me p50, 1 conn (auth, no D1)",
      "ms",
      m1.p.p50,
      m1.f.p50,
      "SHA-256 of the bearer token + a Map lookup",
    ),
  );
  rows.push(
    besideFloor(
      "GET /api/vms/:id p50, 1 conn",
      "ms",
      v1.p.p50,
      v1.f.p50,
      "D1 point read by primary key, 10,000 rows",
      "vmShowP50",
    ),
  );
  const h50 = await throughputPair(trivial, health);
  const m50 = await throughputPair(authLike, me);
  const v50 = await throughputPair(d1Read, vm);
  rows.push(
    besideFloor(`GET /api/health throughput, ${MANY_CONNS} conns`, "req/s", h50.p.rps, h50.f.rps, "trivial JSON route"),
  );
  rows.push(
    besideFloor(
      `GET /api/me throughput, ${MANY_CONNS} conns (auth, no D1)`,
      "req/s",
      m50.p.rps,
      m50.f.rps,
      "SHA-256 of the bearer token + a Map lookup",
    ),
  );
  rows.push(
    besideFloor(
      `GET /api/vms/:id throughput, ${MANY_CONNS} conns`,
      "req/s",
      v50.p.rps,
      v50.f.rps,
      "D1 point read by primary key, 10,000 rows",
      "vmShowThroughput",
    ),
  );
  rows.push(
    failuresRow("GET /api/vms/:id", {
      ...v50.p,
      non2xx: v50.p.non2xx + v1.p.non2xx,
      errors: v50.p.errors + v1.p.errors,
    }),
  );
  rows.push(
    failuresRow("floor probe, reads", {
      ...v50.f,
      non2xx: v50.f.non2xx + v1.f.non2xx + h50.f.non2xx,
      errors: v50.f.errors + v1.f.errors + h50.f.errors,
    }),
  );

  // Command round trip
  const r1 = await p50Pair(echoWrite, reset);
  rows.push(
    besideFloor(
      "reset_state round trip p50, 1 conn",
      "ms",
      r1.p.p50,
      r1.f.p50,
      "Durable Object round trip over a hibernatable WebSocket to an echoing ws client, then one D1 write",
      "resetP50",
    ),
  );
  const r50 = await throughputPair(echoWrite, reset);
  rows.push(
    besideFloor(
      `reset_state throughput, ${MANY_CONNS} conns`,
      "req/s",
      r50.p.rps,
      r50.f.rps,
      "the same echo + D1 write",
      "resetThroughput",
    ),
  );
  rows.push(
    failuresRow("reset_state", { ...r50.p, non2xx: r50.p.non2xx + r1.p.non2xx, errors: r50.p.errors + r1.p.errors }),
  );
  rows.push(
    failuresRow("floor probe, echo + D1 write", {
      ...r50.f,
      non2xx: r50.f.non2xx + r1.f.non2xx,
      errors: r50.f.errors + r1.f.errors,
    }),
  );
  rows.push(await directLibvirt(r1.p.p50));
  const excerptP50 = inProcessP50(() => lastLines(readVmLog(logDir, "web-01", 20, 16 * EXCERPT_MAX_BYTES).text, 20));
  rows.push({
    name: "reset_state, agent: the event's 20-line log excerpt read, in-process p50",
    value: round(excerptP50, 3),
    unit: "ms",
    baseline: round(r1.p.p50),
    ratio: round(excerptP50 / r1.p.p50, 3),
    note: "baseline: the round trip's p50",
  });

  // Logs end to end
  const l1 = await p50Pair(echoLog, logs, 150);
  rows.push(
    besideFloor(
      "GET logs?lines=1000 p50, 1 conn",
      "ms",
      l1.p.p50,
      l1.f.p50,
      `the same echo carrying ${logAnswer} bytes back, no D1`,
      "logsP50",
    ),
  );
  rows.push(failuresRow("GET logs?lines=1000", l1.p));
  rows.push(...logShares(l1.p.p50, logDir));
  return rows;
}

/** p50 of `fn` run in this process (after a warm-up). */
function inProcessP50(fn: () => unknown, runs = 300): number {
  for (let i = 0; i < 20; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return percentile(times, 50);
}

/** Where a 1,000-line logs answer spends CPU outside the platform, each part timed in this process
 *  with the product's own functions: the agent reading the file and framing it, the session parsing
 *  and validating the frames, the Worker serializing the answer. */
function logShares(roundTripP50: number, logDir: string): BenchRow[] {
  const id = crypto.randomUUID();
  const agentFrames = () => {
    const tail = readVmLog(logDir, "web-01", 1000, MAX_LOG_BYTES);
    // As to a control plane that takes the text in the result (this one does).
    const frames = logAnswerFrames(id, tail, true).map((frame) => JSON.stringify(frame));
    return { frames, text: tail.text, tail };
  };
  const { frames, text, tail } = agentFrames();
  const answer = { qemuLog: text, ...logFacts(tail), capturedAt: new Date().toISOString() };
  const shares: [string, number][] = [
    ["agent: read 1,000 lines and frame them", inProcessP50(agentFrames)],
    [
      "session: JSON.parse + zod of the answer's frames",
      inProcessP50(() => frames.map((f) => parseFrame(AgentMessage, f))),
    ],
    ["Worker: JSON of the logs answer", inProcessP50(() => JSON.stringify(answer))],
  ];
  return shares.map(([what, p50]) => ({
    name: `logs 1,000 lines, ${what}, in-process p50`,
    value: round(p50, 3),
    unit: "ms",
    baseline: round(roundTripP50),
    ratio: round(p50 / roundTripP50, 3),
    note: "baseline: the logs round trip's p50",
  }));
}

/** The agent's share of reset_state: the libvirt calls its vm.state makes (state and name, asked at
 *  once), in-process back to back on the same host (a warm daemon: a lower bound). */
async function directLibvirt(roundTripP50: number): Promise<BenchRow> {
  const libvirt = new Libvirt(demoLibvirtUri(), pino({ level: "silent" }));
  try {
    for (let i = 0; i < 50; i++) await libvirt.stateAndName(DEMO.web01);
    const times: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t0 = performance.now();
      await libvirt.stateAndName(DEMO.web01);
      times.push(performance.now() - t0);
    }
    const p50 = percentile(times, 50);
    return {
      name: "libvirt state and name calls in-process (agent's share) p50",
      value: round(p50, 3),
      unit: "ms",
      baseline: round(roundTripP50),
      ratio: round(p50 / roundTripP50, 3),
      note: "baseline: the round trip's p50",
    };
  } finally {
    await libvirt.close();
  }
}
