// Bench: the soak. The demo (control plane + demo agent) runs for BENCH_SOAK_MIN minutes (default 10)
// the way an open dashboard uses it: `GET /api/vms` and `GET /api/nodes` every 3 s, the Monitoring
// tab's live view (its 1-hour charts read with watch=1 every 5 s, so the agent sends each sample
// as it is taken), a live log follow of a log that grows, metrics on, and, where the
// machine has QEMU, an open serial console: a second node whose agent runs on the real libvirtd with
// the echo guest (bench/echo-guest.ts), a line typed into it every 2 s and echoed back, the console
// opened again whenever it ends. On one clock it samples each agent's RSS and V8 heap (over its debug IPC channel, after a full GC), the heap of the
// Worker's isolate over workerd's inspector (CDP HeapProfiler.collectGarbage, then
// Runtime.getHeapUsage), the same for the floor probe's isolate under a like load (what the local
// runtime grows on its own), and the size of every in-memory collection (GET /api/debug/counts,
// answered only with QX_DEBUG_COUNTS=1). Prints the slope of each after a warm-up of a sixth of the
// run (10 minutes of 60).
import { METRICS_WATCH_POLL_MS } from "../protocol/metrics.ts";
import { appendFileSync, cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocket } from "ws";
import { FOLLOW_SUBPROTOCOL } from "../protocol/api.ts";
import { ConsoleClient } from "../protocol/console-client.ts";
import { AgentProcess, DEMO_LOG_DIR } from "../test/support/agent.ts";
import { ControlPlane, freePort } from "../test/support/control-plane.ts";
import { createNode, eventually, json, listVms, waitConnected } from "../test/e2e/journey.ts";
import { EchoGuest } from "./echo-guest.ts";
import { FLOOR_READ_ID, FloorProbe } from "./floor/probe.ts";
import type { BenchRow } from "./table.ts";
import { Inspector } from "./inspector.ts";
import { goal } from "./targets.ts";

const MiB = 1024 * 1024;
const POLL_MS = 3_000;
const MONITORING_MS = METRICS_WATCH_POLL_MS;
const LOG_LINE_MS = 1_000;
const CONSOLE_LINE_MS = 2_000;
const QEMU_URI = "qemu:///system";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den ? num / den : NaN;
}

type Sample = { t: number; figures: Record<string, number> };

/** Runs `tick` every `ms` until `stop()`; a tick that throws is counted, not fatal. */
function every(ms: number, tick: () => Promise<unknown>, failures: Map<string, number>, label: string) {
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = Date.now();
      try {
        await tick();
      } catch {
        failures.set(label, (failures.get(label) ?? 0) + 1);
      }
      await sleep(Math.max(0, ms - (Date.now() - t0)));
    }
  })();
  return async () => {
    running = false;
    await loop;
  };
}

/** Keeps one live follow of `vmId` open, opening it again if it closes; counts the frames. */
function followLog(cp: ControlPlane, vmId: string, token: string) {
  let frames = 0;
  let opens = 0;
  let ws: WebSocket | null = null;
  let running = true;
  const open = () => {
    if (!running) return;
    opens++;
    ws = new WebSocket(`${cp.url.replace(/^http/, "ws")}/api/vms/${vmId}/logs/follow`, [
      FOLLOW_SUBPROTOCOL,
      `bearer.${token}`,
    ]);
    ws.on("message", () => frames++);
    ws.on("error", () => {});
    ws.on("close", () => running && setTimeout(open, 2_000));
  };
  open();
  return {
    stats: () => ({ frames, opens }),
    stop: () => ((running = false), ws?.terminate()),
  };
}

/** Keeps one read-write console of `vmId` open, opening it again (a fresh ticket) when it ends;
 *  types a line every CONSOLE_LINE_MS and counts what comes back. */
function holdConsole(cp: ControlPlane, vmId: string, token: string, failures: Map<string, number>) {
  let shown = 0;
  let opens = 0;
  let line = 0;
  let client: ConsoleClient | null = null;
  let running = true;
  const ends = new Map<string, number>();
  const open = async () => {
    if (!running) return;
    try {
      const res = await cp.api(`/api/vms/${vmId}/console`, { method: "POST", token, json: { mode: "rw" } });
      const { ticket, url } = await json<{ ticket: string; url: string }>(res);
      opens++;
      client = new ConsoleClient({
        ticket,
        connect: () => new WebSocket(new URL(url, cp.url).href.replace(/^http/, "ws")),
        onOutput: (bytes) => (shown += bytes.byteLength),
        onState: (state) => {
          if (state.kind !== "ended" || !running) return;
          ends.set(state.reason, (ends.get(state.reason) ?? 0) + 1);
          setTimeout(() => void open(), 2_000);
        },
      });
    } catch {
      failures.set("console open", (failures.get("console open") ?? 0) + 1);
      setTimeout(() => void open(), 5_000);
    }
  };
  void open();
  const typing = setInterval(
    () => client?.send(new TextEncoder().encode(`soak console line ${++line}\r\n`)),
    CONSOLE_LINE_MS,
  );
  return {
    stats: () => ({ shown, opens, typed: line, ends: [...ends].map(([k, v]) => `${k} ${v}`).join(", ") }),
    stop: () => {
      running = false;
      clearInterval(typing);
      client?.close();
    },
  };
}

/** Where the machine has QEMU: a second node whose agent runs on the real libvirtd, with the echo
 *  guest's console held open. Null, with why, where it cannot run. */
async function startConsoleLoad(
  cp: ControlPlane,
  operator: string,
  failures: Map<string, number>,
  cleanup: (() => unknown)[],
): Promise<{ skipped: string } | { agent: AgentProcess; nodeId: string; held: ReturnType<typeof holdConsole> }> {
  let guest: EchoGuest;
  try {
    guest = await EchoGuest.start(QEMU_URI, `soak-console-${Date.now().toString(36)}`);
  } catch (err) {
    return { skipped: (err as Error).message.split("\n")[0] };
  }
  cleanup.unshift(() => guest.dispose());
  const { node, joinToken } = await createNode(cp, `soak-console-${Date.now()}`);
  // Its inventory is the whole libvirtd's: other guests on this host come and go in it.
  const agent = AgentProcess.start({
    server: cp.url,
    token: joinToken,
    libvirtUri: QEMU_URI,
    logDir: "/var/log/libvirt/qemu",
    args: ["--poll-interval", "3000", "--log-level", "warn"],
    nodeFlags: ["--expose-gc"],
    debugCounts: true,
  });
  cleanup.unshift(() => agent.dispose());
  await waitConnected(cp, node.id, true, 60_000);
  await eventually("the echo guest listed", async () => (await cp.api(`/api/vms/${guest.uuid}`)).ok, 60_000);
  const held = holdConsole(cp, guest.uuid, operator, failures);
  cleanup.unshift(() => held.stop());
  return { agent, nodeId: node.id, held };
}

export async function benchSoak(): Promise<BenchRow[]> {
  const minutes = Number(process.env.BENCH_SOAK_MIN ?? 10);
  const runMs = minutes * 60_000;
  const warmupMs = runMs / 6;
  // About 40 samples after warm-up, never closer than 5 s nor further apart than 30 s.
  const sampleMs = Math.min(30_000, Math.max(5_000, Math.round((runMs - warmupMs) / 40)));

  const [cpInspectorPort, floorInspectorPort] = [await freePort(), await freePort()];
  const logDir = mkdtempSync(join(tmpdir(), "qx-soak-logs-"));
  cpSync(DEMO_LOG_DIR, logDir, { recursive: true });
  const cp = await ControlPlane.start({
    rateLimits: false,
    inspectorPort: cpInspectorPort,
    vars: { QX_DEBUG_COUNTS: "1" },
  });
  const floor = await FloorProbe.start(floorInspectorPort).catch(async (err: Error) => {
    await cp.dispose();
    throw err;
  });
  const cleanup: (() => unknown)[] = [
    () => floor.dispose(),
    () => cp.dispose(),
    () => rmSync(logDir, { recursive: true, force: true }),
  ];
  try {
    const token = async (role: string) =>
      (
        await json<{ token: string }>(
          await cp.api("/api/tokens", { method: "POST", json: { name: `soak-${role}`, role } }),
        )
      ).token;
    const [viewer, operator] = [await token("viewer"), await token("operator")];
    const { node, joinToken } = await createNode(cp, `soak-demo-${Date.now()}`);
    // The agent as shipped: 3 s inventory polls, 10 s metrics (its default), its live follow polling.
    const agent = AgentProcess.start({
      server: cp.url,
      token: joinToken,
      logDir,
      args: ["--poll-interval", "3000", "--log-level", "warn"],
      nodeFlags: ["--expose-gc"],
      debugCounts: true,
    });
    cleanup.unshift(() => agent.dispose());
    await waitConnected(cp, node.id, true, 60_000);
    const web = await eventually("the demo's web-01 listed", async () =>
      (await listVms(cp, node.id)).find((v) => v.name === "web-01"),
    );

    const failures = new Map<string, number>();
    const webLog = join(logDir, "web-01.log");
    let line = 0;
    const stops = [
      every(
        POLL_MS,
        async () => {
          const answers = await Promise.all([
            cp.api("/api/vms", { token: viewer }),
            cp.api("/api/nodes", { token: viewer }),
          ]);
          for (const r of answers) if (!r.ok) throw new Error(String(r.status));
          await Promise.all(answers.map((r) => r.arrayBuffer()));
        },
        failures,
        "dashboard poll",
      ),
      every(
        MONITORING_MS,
        async () => {
          const answers = await Promise.all([
            cp.api(`/api/vms/${web.id}/metrics?range=1h&watch=1`, { token: viewer }),
            cp.api(`/api/nodes/${node.id}/metrics?range=1h&watch=1`, { token: viewer }),
          ]);
          for (const r of answers) if (!r.ok) throw new Error(String(r.status));
          await Promise.all(answers.map((r) => r.arrayBuffer()));
        },
        failures,
        "monitoring poll",
      ),
      every(
        LOG_LINE_MS,
        async () => {
          appendFileSync(
            webLog,
            `${new Date().toISOString()} soak line ${++line}: qemu-system-x86_64: guest keeps running\n`,
          );
        },
        failures,
        "log append",
      ),
      // The floor probe under a like load: a token check, a D1 read and a frame to a Node client and back.
      every(
        POLL_MS,
        async () => {
          const answers = await Promise.all([
            fetch(`${floor.url}/auth`, { headers: { authorization: `Bearer ${viewer}` } }),
            fetch(`${floor.url}/items/${FLOOR_READ_ID}`),
            fetch(`${floor.url}/echo-json?bytes=2000`, { method: "POST" }),
          ]);
          for (const r of answers) if (!r.ok) throw new Error(String(r.status));
          await Promise.all(answers.map((r) => r.arrayBuffer()));
        },
        failures,
        "floor poll",
      ),
    ];
    const follow = followLog(cp, web.id, operator);
    cleanup.unshift(() => follow.stop());
    const consoleLoad = await startConsoleLoad(cp, operator, failures, cleanup);
    const withConsole = "held" in consoleLoad ? consoleLoad : null;

    const cpInspector = new Inspector(cpInspectorPort);
    const floorInspector = new Inspector(floorInspectorPort);
    cleanup.unshift(() => (cpInspector.close(), floorInspector.close()));
    const samples: Sample[] = [];
    const t0 = Date.now();
    // BENCH_SOAK_SNAPSHOTS=1: a heap snapshot of the Worker's isolate after warm-up and at the end,
    // compared by constructor, to name what grows (a snapshot is slow: off by default).
    const snapshots = process.env.BENCH_SOAK_SNAPSHOTS === "1";
    let atWarmup: Map<string, { count: number; bytes: number }> | null = null;
    while (Date.now() - t0 < runMs) {
      const tick = Date.now();
      if (snapshots && !atWarmup && tick - t0 >= warmupMs) atWarmup = await cpInspector.heapByConstructor();
      try {
        const counts = (nodeId: string) =>
          cp
            .api(`/api/debug/counts?node=${nodeId}`)
            .then((r) => json<{ worker: Record<string, number>; session: Record<string, number> }>(r));
        const [cpHeap, floorHeap, agentCounts, debug, consoleAgentCounts, consoleDebug] = await Promise.all([
          cpInspector.heapAfterGc(),
          floorInspector.heapAfterGc(),
          agent.debugCounts(),
          counts(node.id),
          withConsole?.agent.debugCounts(),
          withConsole ? counts(withConsole.nodeId) : undefined,
        ]);
        samples.push({
          t: tick - t0,
          figures: {
            "isolate heap": cpHeap / MiB,
            "floor isolate heap": floorHeap / MiB,
            "agent RSS": agentCounts.rssBytes / MiB,
            "agent V8 heap": agentCounts.heapUsedBytes / MiB,
            ...prefixed("agent", agentCounts.counts),
            ...prefixed("worker", debug.worker),
            ...prefixed("session", debug.session),
            ...(consoleAgentCounts && consoleDebug
              ? {
                  "console agent RSS": consoleAgentCounts.rssBytes / MiB,
                  "console agent V8 heap": consoleAgentCounts.heapUsedBytes / MiB,
                  ...prefixed("console-agent", consoleAgentCounts.counts),
                  ...prefixed("console-session", consoleDebug.session),
                }
              : {}),
          },
        });
      } catch (err) {
        const key = `sample (${(err as Error).message.slice(0, 80)})`;
        failures.set(key, (failures.get(key) ?? 0) + 1);
      }
      await sleep(Math.max(0, sampleMs - (Date.now() - tick)));
    }
    const grown = atWarmup ? heapGrowth(atWarmup, await cpInspector.heapByConstructor()) : undefined;
    await Promise.all(stops.map((stop) => stop()));
    const followed = follow.stats();
    const consoled = withConsole ? withConsole.held.stats() : { skipped: (consoleLoad as { skipped: string }).skipped };
    // Every sample, for a look at a curve the slope alone hides (a reset, a step, a level).
    writeFileSync(join(import.meta.dirname, "soak-samples.json"), JSON.stringify(samples) + "\n");
    const rows = soakRows(samples, { minutes, warmupMs, sampleMs, failures, followed, consoled });
    if (grown)
      rows.push({
        name: "soak: Worker isolate heap grown after warm-up, largest by constructor (snapshots)",
        value: Math.round(grown.total / 1024),
        unit: "KiB",
        note: grown.top,
      });
    return rows;
  } finally {
    for (const step of cleanup) await step();
  }
}

/** What grew between two snapshots, the ten largest by bytes. */
function heapGrowth(
  before: Map<string, { count: number; bytes: number }>,
  after: Map<string, { count: number; bytes: number }>,
) {
  const diffs = [...after].map(([key, a]) => {
    const b = before.get(key) ?? { count: 0, bytes: 0 };
    return { key, count: a.count - b.count, bytes: a.bytes - b.bytes };
  });
  const total = diffs.reduce((sum, d) => sum + d.bytes, 0);
  const top = diffs
    .sort((x, y) => y.bytes - x.bytes)
    .slice(0, 10)
    .map((d) => `${d.key.slice(0, 60)} ${d.count > 0 ? "+" : ""}${d.count} (${Math.round(d.bytes / 1024)} KiB)`)
    .join("; ");
  return { total, top };
}

const prefixed = (source: string, counts: Record<string, number>) =>
  Object.fromEntries(Object.entries(counts).map(([k, v]) => [`${source}.${k}`, v]));

function soakRows(
  samples: Sample[],
  run: {
    minutes: number;
    warmupMs: number;
    sampleMs: number;
    failures: Map<string, number>;
    followed: { frames: number; opens: number };
    consoled: { shown: number; opens: number; typed: number; ends: string } | { skipped: string };
  },
): BenchRow[] {
  const kept = samples.filter((s) => s.t >= run.warmupMs);
  const hours = kept.map((s) => s.t / 3_600_000);
  const series = (name: string) => kept.map((s) => s.figures[name] ?? NaN);
  const perHour = (name: string) => Math.round(slope(hours, series(name)) * 100) / 100;
  const span = (name: string) => {
    const ys = series(name);
    return `${Math.min(...ys).toFixed(2)}..${Math.max(...ys).toFixed(2)}`;
  };
  const warmup =
    run.warmupMs >= 60_000 ? `${Math.round(run.warmupMs / 60_000)} min` : `${Math.round(run.warmupMs / 1000)} s`;
  const label = `${run.minutes} min, after ${warmup} warm-up, ${kept.length} samples ${run.sampleMs / 1000} s apart`;
  const heap = perHour("isolate heap");
  const floorHeap = perHour("floor isolate heap");
  const rows: BenchRow[] = [
    {
      name: `soak: heap slope, Worker + node session isolate (one isolate under wrangler dev; ${label})`,
      value: heap,
      unit: "MiB/h",
      floor: floorHeap,
      overFloor: Math.round((heap - floorHeap) * 100) / 100,
      ...goal("soakIsolateHeap", { value: heap, floor: floorHeap }),
      note: `heap after GC ${span("isolate heap")} MiB; floor probe's isolate ${span("floor isolate heap")} MiB`,
    },
    {
      name: "soak: agent RSS slope",
      value: perHour("agent RSS"),
      unit: "MiB/h",
      ...goal("soakAgentRss", { value: perHour("agent RSS") }),
      note: `RSS ${span("agent RSS")} MiB`,
    },
    {
      name: "soak: agent V8 heap slope (after GC)",
      value: perHour("agent V8 heap"),
      unit: "MiB/h",
      note: `heap ${span("agent V8 heap")} MiB`,
    },
  ];
  if ("skipped" in run.consoled)
    rows.push({
      name: "soak: open console (needs QEMU)",
      value: NaN,
      unit: "",
      note: `not run: ${run.consoled.skipped}`,
    });
  else
    rows.push(
      {
        name: "soak: console agent RSS slope (the second node, on the real libvirtd, holding the open console)",
        value: perHour("console agent RSS"),
        unit: "MiB/h",
        ...goal("soakAgentRss", { value: perHour("console agent RSS") }),
        note: `RSS ${span("console agent RSS")} MiB`,
      },
      {
        name: "soak: console agent V8 heap slope (after GC)",
        value: perHour("console agent V8 heap"),
        unit: "MiB/h",
        note: `heap ${span("console agent V8 heap")} MiB`,
      },
      {
        name: "soak: console bytes shown (lines typed, echoed)",
        value: run.consoled.shown,
        unit: `B (${run.consoled.typed} lines, ${run.consoled.opens} opens)`,
        note: run.consoled.ends ? `ended: ${run.consoled.ends}` : undefined,
      },
    );
  const counted = Object.keys(kept[0]?.figures ?? {}).filter((k) =>
    /^(agent|worker|session|console-agent|console-session)\./.test(k),
  );
  for (const name of counted)
    rows.push({
      name: `soak count: ${name} (slope)`,
      value: perHour(name),
      unit: "/h",
      note: `after warm-up ${span(name)}`,
    });
  const failed = [...run.failures].map(([k, v]) => `${k}: ${v}`).join("; ");
  rows.push({
    name: "soak: live follow frames received (reopened)",
    value: run.followed.frames,
    unit: `frames (${run.followed.opens} opens)`,
    note: failed ? `failed ticks: ${failed}` : undefined,
  });
  return rows;
}

if (import.meta.main) console.table(await benchSoak());
