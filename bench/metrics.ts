// Bench: metrics. (1) Ingestion cost per node: rows written per sample batch and per second (the
// node session's own MetricsHistory code over node:sqlite, whose changes() counts rows as the Durable
// Object's SQLite bills them) and bytes per `metrics` frame, for 100 running VMs sampled every 10 s
// and sent a minute at a time. (2) The
// 24 h query: the SQL over a full day of 100 VMs, and a real GET /api/nodes/:id/metrics?range=24h
// through wrangler dev beside the floor probe's Durable Object RPC. (The libvirt access layer has
// its own section, bench/libvirt.ts.)
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import type { MetricFigures, MetricsPayload } from "../protocol/metrics.ts";
import { createNode } from "../test/e2e/journey.ts";
import type { ControlPlane } from "../test/support/control-plane.ts";
import { MetricsHistory, type MetricsStorage } from "../worker/session/metrics.ts";
import { enroll, SimAgent, simVms } from "./fleet-agent.ts";
import type { BenchRow } from "./table.ts";

const VMS = 100;
const INTERVAL_MS = 10_000;
/** The same 100 VMs in every batch. */
const FLEET = simVms(VMS);

/** The slice of DurableObjectStorage that MetricsHistory uses, over node:sqlite. */
function sqliteStorage() {
  const db = new DatabaseSync(":memory:");
  const prepared = new Map<string, ReturnType<typeof db.prepare>>();
  const exec = (sql: string, ...params: unknown[]) => {
    let stmt = prepared.get(sql);
    if (!stmt) prepared.set(sql, (stmt = db.prepare(sql)));
    const isRead = /^\s*SELECT/i.test(sql);
    const rows = isRead
      ? (stmt.all(...(params as SQLInputValue[])) as Record<string, unknown>[])
      : (stmt.run(...(params as SQLInputValue[])), []);
    const rowsWritten = isRead ? 0 : Number((db.prepare("SELECT changes() AS c").get() as { c: number }).c);
    return { rowsWritten, toArray: () => rows, one: () => rows[0] };
  };
  const storage = {
    sql: { exec },
    transactionSync<T>(fn: () => T): T {
      db.exec("BEGIN");
      try {
        const out = fn();
        db.exec("COMMIT");
        return out;
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    },
  };
  return storage as unknown as MetricsStorage;
}

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
const tick = (t: number) => ({ t, vms: FLEET.map((v, i) => ({ vmId: v.uuid, ...figures(i) })), node: figures(0) });
/** A minute's batch as the agent sends it by default: 6 ticks 10 s apart, ending at `t`. */
const batch = (t: number, ticks = 6): MetricsPayload => ({
  intervalMs: INTERVAL_MS,
  ticks: Array.from({ length: ticks }, (_, i) => tick(t - (ticks - 1 - i) * INTERVAL_MS)),
});
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(n: number, fn: () => Promise<unknown> | unknown): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return Math.round(median(ms) * 100) / 100;
}

function ingestion(): BenchRow[] {
  const history = new MetricsHistory(sqliteStorage());
  const day = 86_400_000;
  const start = Math.floor(Date.now() / day) * day - day;
  let rows = 0;
  const batchMs = 6 * INTERVAL_MS;
  const batches = day / batchMs;
  const t0 = performance.now();
  for (let i = 1; i <= batches; i++)
    rows += history.ingest(batch(start + i * batchMs), start + i * batchMs).rowsWritten;
  const ingestMs = performance.now() - t0;
  const vmId = FLEET[0].uuid;
  const now = start + day;
  // A full day: 1,440 one-minute points for 24 h, 48 half-hour points for 30 d.
  const query = (range: "24h" | "30d", atLeast: number) => {
    const ms: number[] = [];
    for (let i = 0; i < 10; i++) {
      const q0 = performance.now();
      const points = history.series(vmId, range, now).points.length;
      ms.push(performance.now() - q0);
      if (points < atLeast)
        throw new Error(`the ${range} query found ${points} points: the bench's data is not what it measures`);
    }
    return Math.round(median(ms) * 100) / 100;
  };
  const frameBytes = Buffer.byteLength(
    JSON.stringify({ type: "metrics", id: "metrics-12345678-0", payload: batch(now) }),
  );
  return [
    {
      name: `metrics: rows written per batch (6 ticks of ${VMS} VMs + node totals; roll-up and retention amortized over a day)`,
      value: Math.round((rows / batches) * 10) / 10,
      unit: "rows",
    },
    {
      name: `metrics: DO rows written per second per node (${VMS} VMs sampled every 10 s; one batch, one wake-up, a minute)`,
      value: Math.round((rows / batches / (batchMs / 1000)) * 100) / 100,
      unit: "rows/s",
    },
    { name: `metrics: bytes per batch (one metrics frame: 6 ticks of ${VMS} VMs)`, value: frameBytes, unit: "B" },
    {
      name: `metrics: ingest CPU per batch (node:sqlite, same statements)`,
      value: Math.round((ingestMs / batches) * 1000) / 1000,
      unit: "ms",
    },
    {
      name: `metrics: 24 h query SQL over a full day (${VMS} VMs, ${history.counts().raw} raw rows; node:sqlite)`,
      value: query("24h", 1_400),
      unit: "ms",
    },
    { name: `metrics: 30 d query SQL (5-minute means)`, value: query("30d", 46), unit: "ms" },
  ];
}

async function restQuery(cp: ControlPlane, floorRows: BenchRow[]): Promise<BenchRow[]> {
  const { joinToken } = await createNode(cp, `bench-metrics-${Date.now()}`);
  const { credential, nodeId } = await enroll(cp.url, joinToken);
  const agent = new SimAgent(cp.url, credential, FLEET);
  await agent.start();
  try {
    for (let i = 0; i < 30; i++) agent.send({ type: "metrics", id: `m-${i}`, payload: batch(Date.now()) });
    await new Promise((r) => setTimeout(r, 1_000));
    const get = async () => {
      const res = await cp.api(`/api/nodes/${nodeId}/metrics?range=24h`);
      if (res.status !== 200) throw new Error(`metrics route: ${res.status}`);
      await res.arrayBuffer();
    };
    await get();
    const value = await timed(30, get);
    const floor = floorRows.find((r) => r.name.includes("Durable Object RPC, no socket"))?.value;
    return [
      {
        name: "metrics: GET /api/nodes/:id/metrics?range=24h (wrangler dev, median of 30)",
        value,
        unit: "ms",
        ...(floor
          ? {
              floor,
              overFloor: Math.round((value - floor) * 100) / 100,
              ratio: Math.round((value / floor) * 100) / 100,
            }
          : {}),
      },
    ];
  } finally {
    await agent.stop();
  }
}

export async function benchMetrics(cp: ControlPlane, floorRows: BenchRow[]): Promise<BenchRow[]> {
  const rows = ingestion();
  rows.push(...(await restQuery(cp, floorRows)));
  return rows;
}
