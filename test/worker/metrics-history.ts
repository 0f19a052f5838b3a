// What the metrics-history tests share: figures and ticks built from a CPU value, a fresh node
// object's storage with a history over it, and bucket-aligned times.
import { env, runInDurableObject } from "cloudflare:test";
import { ROLLUP_STEP_MS, type MetricFigures, type MetricsTick } from "../../protocol/metrics.ts";
import { MetricsHistory } from "../../worker/session/metrics.ts";
import type { NodeSession } from "../../worker/session/node-session.ts";
import { uuid } from "./support.ts";

export const DAY = 86_400_000;

/** A sample's figures, told apart by their CPU value. */
export const figures = (cpuPct: number, netRxBps: number | null = 10): MetricFigures => ({
  cpuPct,
  memUsedMiB: 100,
  memAssignedMiB: 512,
  diskReadBps: 1,
  diskWriteBps: 2,
  diskReadOps: 3,
  diskWriteOps: 4,
  netRxBps,
  netTxBps: null,
});

/** A tick of these VMs (id → CPU value), and of the node's totals if given. */
export const tickOf = (
  t: number,
  vms: Record<string, number>,
  node?: number,
  figuresOf: (cpu: number) => MetricFigures = figures,
): MetricsTick => ({
  t,
  vms: Object.entries(vms).map(([vmId, cpu]) => ({ vmId, ...figuresOf(cpu) })),
  ...(node === undefined ? {} : { node: figuresOf(node) }),
});

/** A fresh node object's storage, with a history of its own over it. */
export async function inFreshObject(
  prefix: string,
  fn: (history: MetricsHistory, storage: DurableObjectStorage) => void | Promise<void>,
): Promise<void> {
  const stub = env.NODE_SESSION.get(env.NODE_SESSION.idFromName(`${prefix}-${uuid()}`));
  await runInDurableObject(stub, (_: NodeSession, state) => fn(new MetricsHistory(state.storage), state.storage));
}

/** The start of a 5-minute bucket some days ago (so a bucket and its minutes line up in tests). */
export const bucketAgo = (days: number) => Math.floor(Date.now() / ROLLUP_STEP_MS) * ROLLUP_STEP_MS - days * DAY;

/** The start of the hour `t` is in: a row of raw samples holds an hour. */
export const hourOf = (t: number) => Math.floor(t / 3_600_000) * 3_600_000;

export const cpuOf = (points: { cpuPct: number | null }[]) => points.map((p) => p.cpuPct);
