// Bench: what a watched Monitoring tab costs a node, beside the same node unwatched, per minute at
// steady state: agent → object frames and their bytes (incoming WebSocket messages bill as 1/20 of
// a request each), object → agent `metrics.live` frames (counted by the session's own MetricsWatch
// under the tab's polls), the tab's reads, and the rows the node's MetricsHistory writes when the
// same samples come a tick per frame instead of a minute per frame (its own code over node:sqlite,
// whose changes() counts rows the way the Durable Object's SQLite bills them; bench/metrics.ts's adapter).
import { METRICS_WATCH_POLL_MS, type MetricFigures, type MetricsPayload } from "../protocol/metrics.ts";
import { MetricsHistory } from "../worker/session/metrics.ts";
import { MetricsWatch } from "../worker/session/metrics-watch.ts";
import { sqliteStorage } from "./metrics.ts";
import type { BenchRow } from "./table.ts";

const VMS = 100;
const INTERVAL_MS = 10_000;
const TICKS_PER_BATCH = 6;
const MINUTES = 60;
const vmIds = Array.from({ length: VMS }, () => crypto.randomUUID());

const figures = (i: number): MetricFigures => ({
  cpuPct: (i * 7) % 100,
  memUsedMiB: 900 + i,
  memAssignedMiB: 2048,
  diskReadBps: 1e5 + i,
  diskWriteBps: 2e5 + i,
  diskReadOps: 12,
  diskWriteOps: 30,
  netRxBps: 5e4,
  netTxBps: 3e4,
});
const tick = (t: number) => ({ t, vms: vmIds.map((vmId, i) => ({ vmId, ...figures(i) })), node: figures(0) });

/** An hour of samples into a fresh history, `perFrame` ticks per frame: frames, bytes and rows per minute. */
function ingestHour(perFrame: number) {
  const history = new MetricsHistory(sqliteStorage().storage);
  const start = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 2 * 3_600_000;
  let rows = 0;
  let bytes = 0;
  let frames = 0;
  const ticks = (MINUTES * 60_000) / INTERVAL_MS;
  for (let i = 0; i < ticks; i += perFrame) {
    const payload: MetricsPayload = {
      intervalMs: INTERVAL_MS,
      ticks: Array.from({ length: perFrame }, (_, k) => tick(start + (i + k) * INTERVAL_MS)),
    };
    const now = start + (i + perFrame) * INTERVAL_MS;
    rows += history.ingest(payload, now).rowsWritten;
    bytes += Buffer.byteLength(JSON.stringify({ type: "metrics", id: "metrics-12345678-0", payload }));
    frames++;
  }
  return { framesPerMin: frames / MINUTES, bytesPerMin: bytes / MINUTES, rowsPerMin: rows / MINUTES };
}

/** `metrics.live` frames a minute while one or more tabs poll, as the session sends them. */
function controlFramesPerMinute(tabs: number): number {
  const watch = new MetricsWatch();
  let sent = 0;
  const link = { send: () => sent++ };
  const start = Date.now();
  for (let t = 0; t < MINUTES * 60_000; t += METRICS_WATCH_POLL_MS)
    for (let tab = 0; tab < tabs; tab++) watch.watched(link, ["liveMetrics"], start + t + tab * 37);
  return sent / MINUTES;
}

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

export async function benchMetricsLive(): Promise<BenchRow[]> {
  const batched = ingestHour(TICKS_PER_BATCH);
  const live = ingestHour(1);
  const reads = 60_000 / METRICS_WATCH_POLL_MS;
  const what = `${VMS} VMs sampled every ${INTERVAL_MS / 1000} s`;
  return [
    { name: `metrics live: agent frames per minute, unwatched (${what})`, value: batched.framesPerMin, unit: "/min" },
    {
      name: `metrics live: agent frames per minute, watched`,
      value: live.framesPerMin,
      unit: "/min",
      baseline: batched.framesPerMin,
      ratio: round(live.framesPerMin / batched.framesPerMin),
    },
    {
      name: `metrics live: billed DO requests per minute from those frames (20 messages = 1), watched`,
      value: round(live.framesPerMin / 20, 3),
      unit: "req/min",
      baseline: round(batched.framesPerMin / 20, 3),
    },
    {
      name: `metrics live: agent bytes per minute, watched`,
      value: Math.round(live.bytesPerMin),
      unit: "B/min",
      baseline: Math.round(batched.bytesPerMin),
      ratio: round(live.bytesPerMin / batched.bytesPerMin),
    },
    {
      name: `metrics live: DO SQLite rows written per minute, watched (same samples a tick per frame)`,
      value: round(live.rowsPerMin, 1),
      unit: "rows/min",
      baseline: round(batched.rowsPerMin, 1),
      ratio: round(live.rowsPerMin / batched.rowsPerMin),
    },
    {
      name: `metrics live: metrics.live frames per minute to the agent, 1 tab (object → agent, not billed)`,
      value: round(controlFramesPerMinute(1)),
      unit: "/min",
    },
    {
      name: `metrics live: metrics.live frames per minute to the agent, 10 tabs`,
      value: round(controlFramesPerMinute(10)),
      unit: "/min",
    },
    {
      name: `metrics live: chart reads per minute per open tab (each a Worker request and a DO RPC)`,
      value: reads,
      unit: "/min",
      baseline: 6,
      note: "baseline: the 1 h chart's 10 s refetch before live mode",
    },
  ];
}
