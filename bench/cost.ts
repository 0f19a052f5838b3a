// Bench: what a node costs on Cloudflare. Nodes with 0, 10, 100 and 1,000 running VMs connect at once
// to one local control plane (wrangler dev, debug counts on), each through the real agent's link,
// inventory reporter (poll, digest) and metrics sampler at the agent's default intervals over a
// NAMED FAKE host (no libvirt: a thousand domains in memory). After a settle, every node's object
// counts over one window what Cloudflare bills (worker/cost-meter.ts): requests by kind, time it
// could not hibernate, rows read and written in D1 and in its own SQLite. An idle node's metrics
// come an hour at a time (the agent's default batch), longer than any window: each idle agent then
// replays the two clock hours before the current one through its real sampler, each sent when the
// next hour's first tick is taken (the first warms the history up: series names, first roll-up), and
// the second hour's counts, times the hours of a month, are its metrics' share. The bench turns the counts
// into dollars per node-month at list prices (bench/prices.ts), with and without the paid plan's
// allowances, and prices a 10,000-node fleet at 100 VMs each. The counts are kept in the output.
// Liveness: each agent's liveness socket goes to a shard (worker/session/liveness-watch.ts) whose
// alarm watches many nodes; the shard's counts are read too, and each node is priced its pings on
// the shard plus its share of the shard's alarms at the fleet's nodes per shard.
import { readdirSync, readFileSync } from "node:fs";
import { loadConfig, type AgentConfig } from "../agent/config.ts";
import { InventoryReporter } from "../agent/host/inventory.ts";
import type { Libvirt } from "../agent/host/libvirt.ts";
import { MetricsSampler } from "../agent/host/metrics.ts";
import { pino } from "pino";
import { METRICS_WATCH_POLL_MS } from "../protocol/metrics.ts";
import {
  HEARTBEAT_MS,
  livenessHeartbeats,
  OFFLINE_AFTER_MS,
  WATCHED_CHECK_INTERVALS,
  WIRE_FEATURES,
  type AgentMessage,
} from "../protocol/wire.ts";
import { createNode, eventually, json } from "../test/e2e/journey.ts";
import { ControlPlane } from "../test/support/control-plane.ts";
import { movingCounters } from "../test/support/moving-counters.ts";
import type { CostCounts } from "../worker/cost-counts.ts";
import { countD1Writes, d1File } from "./d1-writes.ts";
import { enroll, SimAgent, simVms, type SimVm } from "./fleet-agent.ts";
import {
  DO_MEMORY_GB,
  dollars,
  MONTH_S,
  PLAN_MINIMUM_USD,
  PRICE_SOURCES,
  PRICES,
  PRICES_READ,
  WS_MESSAGES_PER_REQUEST,
  type PriceKey,
} from "./prices.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

const SIZES = [0, 10, 100, 1000];
/** The counting window, all nodes at once: every once-a-minute message several times, and exactly one
 *  5-minute boundary of the metrics history (one roll-up); bounded for a shared machine. */
const WINDOW_MS = Number(process.env.BENCH_COST_WINDOW_S ?? 300) * 1000;
/** After every agent's first metrics batch landed (its history's tables made): the connect's own
 *  one-off work (first sync, reconciler pass, first liveness check) done. */
const SETTLE_MS = 10_000;
const FLEET_NODES = 10_000;
const FLEET_VMS = 100;
const HOUR_MS = 3_600_000;
const silent = pino({ level: "silent" });
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The agent's shipped defaults (no flags): the intervals every periodic message comes at. */
const AGENT_DEFAULTS = loadConfig(["--server", "https://control.example"], {}) as AgentConfig;

/** A NAMED FAKE libvirt: the domains of a SimAgent, all running, with counters that move with the
 *  time since it was made (a replayed hour reads them milliseconds apart: counters moved by a fixed
 *  step each read gave figures far past what any host shows, e.g. a node's CPU past 100,000 %). */
function fakeHost(vms: Map<string, SimVm>, agent: SimAgent): Libvirt {
  const born = Date.now();
  const host = {
    listDomains: async () => [...vms.values()].map((v) => agent.info(v)),
    activeCounters: async () => movingCounters([...vms.values()], born),
  };
  return host as unknown as Libvirt;
}

/** A simulated agent that also runs the real agent's periodic senders: the inventory reporter (poll
 *  every pollIntervalMs, sending only changes, and a digest every digestIntervalMs) and the metrics
 *  sampler (a tick every metricsIntervalMs, sent in batches). Counts what it sends, by type. */
class CostAgent extends SimAgent {
  readonly sent = new Map<string, number>();
  /** bytes of the metrics frames sent */
  metricsBytes = 0;
  private readonly reporter: InventoryReporter;
  private readonly sampler: MetricsSampler;
  private replayedBefore = false;
  /** while replaying an hour: the time the next tick is stamped with */
  private stamp: number | null = null;

  constructor(url: string, credential: string, vms: SimVm[]) {
    super(url, credential, vms);
    const host = fakeHost(this.vms, this);
    const send = (msg: AgentMessage) => this.send(msg);
    const peerFeatures = () => new Set<string>(WIRE_FEATURES);
    this.reporter = new InventoryReporter({
      libvirt: host,
      send,
      log: silent,
      pollMs: AGENT_DEFAULTS.pollIntervalMs,
      digestIntervalMs: AGENT_DEFAULTS.digestIntervalMs,
      peerFeatures,
    });
    this.sampler = new MetricsSampler({
      libvirt: host,
      intervalMs: AGENT_DEFAULTS.metricsIntervalMs,
      log: silent,
      send,
      peerFeatures,
      hostCpus: 64,
      serverNow: () => this.stamp ?? this.link.serverNow(),
      batchTicks: Math.round(AGENT_DEFAULTS.metricsBatchMs / AGENT_DEFAULTS.metricsIntervalMs),
      paceBytesPerSecond: AGENT_DEFAULTS.metricsPace,
    });
  }

  /** Takes ticks stamped every interval from `from` through `to`, as fast as the fake host answers:
   *  the sampler sends them as it would have then (an hour's batch once a tick of the next hour is
   *  taken). */
  async replayBatch(from: number, to: number): Promise<void> {
    // Counters only, on the first run (a later one would take a tick stamped now, out of the replay).
    if (!this.replayedBefore) await this.sampler.sampleNow();
    this.replayedBefore = true;
    for (let t = from; t <= to; t += AGENT_DEFAULTS.metricsIntervalMs) {
      this.stamp = t;
      await this.sampler.sampleNow();
      // A big host's hour goes in several batches, minutes apart, each paced by the sampler: the next
      // tick waits until a batch is sent, as the ten seconds between two real ticks would.
      await this.sampler.idle();
    }
    this.stamp = null;
  }

  /** Sends what the sampler holds now (a watched node's first frame, before the window). */
  flushMetrics(): void {
    this.sampler.flush();
  }

  /** Announces what the real agent does, `liveMetrics` included. */
  protected override features: string[] | undefined = [...WIRE_FEATURES];

  protected override onLiveMetrics(leaseMs: number): void {
    this.sampler.live(leaseMs);
  }

  protected override onMetricsStored(id: string): void {
    this.sampler.stored(id);
  }

  override send(msg: AgentMessage): boolean {
    this.sent.set(msg.type, (this.sent.get(msg.type) ?? 0) + 1);
    if (msg.type === "metrics") this.metricsBytes += JSON.stringify(msg).length;
    return super.send(msg);
  }

  /** `sampling`: the sampler runs on its timer (a watched node); an idle node's hour is replayed. */
  async run(sampling: boolean): Promise<void> {
    await this.start();
    await this.reporter.fullSync(); // what the real agent reports on connect, as its own baseline
    this.reporter.startPolling();
    if (sampling) this.sampler.start();
  }

  async halt(): Promise<void> {
    this.reporter.stopPolling();
    this.sampler.stop();
    await this.stop();
  }
}

/** CPU seconds used so far by the control plane's workerd processes (its process group). */
function workerdCpuSeconds(groupId: number | undefined): number {
  if (!groupId) return Number.NaN;
  let ticks = 0;
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // after the name: state(0) ppid(1) pgrp(2) … utime(11) stime(12)
      if (Number(fields[2]) !== groupId || !stat.includes("(workerd)")) continue;
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // the process ended meanwhile
    }
  }
  return ticks / 100; // USER_HZ
}

type Snapshot = {
  session: CostCounts & { sqliteBytes: number; history: { owedWrites: number; steadyBytes: number } };
  calls: Record<string, number>;
};
/** `watch`: a VM whose Monitoring tab is open through the window (its chart fetched as the tab does). */
type Scenario = {
  label: string;
  vms: number;
  nodeId: string;
  agent: CostAgent;
  watch?: { vmId: string; fetches: number };
};
/** The Monitoring tab: its 1 h chart read with `watch=1` every METRICS_WATCH_POLL_MS while open
 *  (web/src/features/metrics/api), which keeps the agent sending each sample as it is taken. */
const TAB_REFETCH_MS = METRICS_WATCH_POLL_MS;

type ShardCounts = CostCounts & { sockets: number };
type Shards = { nodesPerShard: number; shards: Record<string, ShardCounts | null> };

/** Every liveness shard's counts, summed (the bench's fleet fits one shard; more are added up). */
async function shardsOf(cp: ControlPlane): Promise<{ nodesPerShard: number; total: ShardCounts }> {
  const res = await cp.api("/api/debug/counts?liveness=1");
  if (!res.ok) throw new Error(`debug counts: HTTP ${res.status} ${await res.text()}`);
  const { liveness } = await json<{ liveness: Shards }>(res);
  const total: ShardCounts = {
    wakes: {},
    activeMs: 0,
    timedRuns: 0,
    d1: { statements: 0, rowsRead: 0, rowsWritten: 0, withoutMeta: 0 },
    sqlite: { rowsRead: 0, rowsWritten: 0, kvReads: 0, kvWrites: 0, alarmWrites: 0 },
    sockets: 0,
  };
  for (const c of Object.values(liveness.shards)) {
    if (!c) continue;
    for (const [k, n] of Object.entries(c.wakes)) total.wakes[k] = (total.wakes[k] ?? 0) + n;
    total.activeMs += c.activeMs;
    total.sockets += c.sockets;
    for (const k of Object.keys(total.sqlite) as (keyof CostCounts["sqlite"])[]) total.sqlite[k] += c.sqlite[k];
  }
  return { nodesPerShard: liveness.nodesPerShard, total };
}

/** The liveness shard over the window, and one node's part of it in a month at the fleet's size. */
type ShardUsage = {
  alarms: number;
  wakes: Record<string, number>;
  sockets: number;
  rowsRead: number;
  rowsWritten: number;
  activeMs: number;
  nodesPerShard: number;
  /** pings one node sends its shard in the window (auto-answered) */
  pingsPerNode: number;
  /** a node's share, billed units in a month */
  month: Partial<Record<PriceKey, number>>;
};

function shardUsage(
  before: { total: ShardCounts },
  after: { nodesPerShard: number; total: ShardCounts },
  windowS: number,
): ShardUsage {
  const wakes = minus(after.total.wakes, before.total.wakes);
  const alarms = wakes.alarm ?? 0;
  const rowsRead = after.total.sqlite.rowsRead - before.total.sqlite.rowsRead;
  const rowsWritten = after.total.sqlite.rowsWritten - before.total.sqlite.rowsWritten;
  const activeMs = after.total.activeMs - before.total.activeMs;
  const share = 1 / after.nodesPerShard;
  // Answered by the runtime, so not seen by the shard: the agent's, at the rate the welcome gives it
  // (the bench's control plane runs the default OFFLINE_AFTER_MS).
  const pingsPerNode = Math.floor(
    (windowS * 1000) / (HEARTBEAT_MS * livenessHeartbeats(OFFLINE_AFTER_MS, HEARTBEAT_MS)),
  );
  const perMonth = (n: number) => (n * MONTH_S) / windowS;
  // The shard's own requests (its alarms; socket events and messages other than pings are a node's
  // connects, none at steady state) split over the nodes it watches, plus the node's own pings on it.
  const shardRequests =
    alarms +
    (wakes.fetch ?? 0) +
    (wakes.webSocketClose ?? 0) +
    (wakes.webSocketError ?? 0) +
    (wakes.webSocketMessage ?? 0) / WS_MESSAGES_PER_REQUEST;
  return {
    alarms,
    wakes,
    sockets: after.total.sockets,
    rowsRead,
    rowsWritten,
    activeMs,
    nodesPerShard: after.nodesPerShard,
    pingsPerNode,
    month: {
      doRequests: perMonth(shardRequests * share + pingsPerNode / WS_MESSAGES_PER_REQUEST),
      doDuration: perMonth((activeMs / 1000) * DO_MEMORY_GB * share),
      doRowsRead: perMonth(rowsRead * share),
      doRowsWritten: perMonth(rowsWritten * share),
    },
  };
}

async function costOf(cp: ControlPlane, nodeId: string): Promise<Snapshot> {
  const res = await cp.api(`/api/debug/counts?node=${nodeId}&cost=1`);
  if (!res.ok) throw new Error(`debug counts: HTTP ${res.status} ${await res.text()}`);
  const body = await json<{ cost?: Snapshot }>(res);
  if (!body.cost?.session) throw new Error("the control plane kept no cost counts (QX_DEBUG_COUNTS not on?)");
  return body.cost;
}

const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
/** Runtime events that ran a handler (an object built again after hibernation is part of its wake). */
const handlerWakes = (w: Record<string, number>) => sum(w) - (w.constructed ?? 0);
/** What happened in the window: counts are cumulative per object id (the meter outlives the object's evictions). */
const minus = (a: Record<string, number>, b: Record<string, number>) =>
  Object.fromEntries(Object.keys(a).map((k) => [k, a[k] - (b[k] ?? 0)]));

/** One node's counts over the window, and what they come to in a month. */
type Usage = {
  label: string;
  windowS: number;
  wakes: Record<string, number>;
  calls: Record<string, number>;
  pings: number;
  sent: Record<string, number>;
  activeMs: number;
  d1: { statements: number; rowsRead: number; rowsWritten: number; withoutMeta: number };
  sqlite: CostCounts["sqlite"];
  /** how much the object's SQLite grew in the window */
  grewBytes: number;
  /** rows its SQL wrote that will be deleted again when they expire (modelled, see below) */
  expiryRows: number;
  /** an idle node's metrics: one hour's batch, replayed (counts of that hour alone) */
  hour?: HourCounts;
  /** billed units in a month, by price */
  month: Partial<Record<PriceKey, number>>;
};

/** What one hour's metrics batch cost its node's object: frames, rows (its SQL's only: alarms and KV
 *  calls are the window's), rows at expiry, time awake, SQLite growth. */
type HourCounts = {
  frames: number;
  rowsRead: number;
  rowsWritten: number;
  expiryRows: number;
  activeMs: number;
  grewBytes: number;
};
const HOURS_A_MONTH = MONTH_S / 3600;

function hourCounts(before: Snapshot, after: Snapshot, frames: number): HourCounts {
  const a = after.session;
  const b = before.session;
  return {
    frames,
    rowsRead: a.sqlite.rowsRead - b.sqlite.rowsRead - (a.sqlite.kvReads - b.sqlite.kvReads),
    rowsWritten:
      a.sqlite.rowsWritten -
      b.sqlite.rowsWritten -
      (a.sqlite.kvWrites - b.sqlite.kvWrites) -
      (a.sqlite.alarmWrites - b.sqlite.alarmWrites),
    expiryRows: Math.max(0, a.history.owedWrites - b.history.owedWrites),
    activeMs: a.activeMs - b.activeMs,
    grewBytes: a.sqliteBytes - b.sqliteBytes,
  };
}

/** A watched node's last sign of life is written by its shard once per LAST_SEEN_WRITE_MS (hourly by
 *  default), in a look the shard runs anyway: one D1 row for all the shard's nodes, a share of it per
 *  node at the fleet's nodes per shard. Its object wakes once per WATCHED_CHECK_INTERVALS of them for
 *  a check of its own: an alarm (a request, and a row to set it), which writes the node's own
 *  lastSeenAt (a D1 row). Both more rarely than any window: modelled. */
const LAST_SEEN_WRITES_A_MONTH = MONTH_S / 3600;
const WATCHED_CHECKS_A_MONTH = LAST_SEEN_WRITES_A_MONTH / WATCHED_CHECK_INTERVALS;
/** A node's D1 rows written a month for its last sign of life: its share of its shard's row, and
 *  its object's own checks. */
const lastSeenD1Rows = (nodesPerShard: number) => LAST_SEEN_WRITES_A_MONTH / nodesPerShard + WATCHED_CHECKS_A_MONTH;

function usage(
  s: Scenario,
  before: Snapshot,
  after: Snapshot,
  windowS: number,
  sentBefore: Map<string, number>,
  sentAfter: Map<string, number>,
  shard: ShardUsage,
  hour?: HourCounts,
): Usage {
  const wakes = minus(after.session.wakes, before.session.wakes);
  const calls = minus(after.calls, before.calls);
  const sent = Object.fromEntries([...sentAfter].map(([k, v]) => [k, v - (sentBefore.get(k) ?? 0)]));
  // Pings: one per heartbeat, answered by the runtime (auto-response) without waking the object.
  const pings = Math.floor((windowS * 1000) / HEARTBEAT_MS);
  const d1 = minus(after.session.d1, before.session.d1) as Usage["d1"];
  const sqlite = minus(after.session.sqlite, before.session.sqlite) as Usage["sqlite"];
  const activeMs = after.session.activeMs - before.session.activeMs;
  const grewBytes = after.session.sqliteBytes - before.session.sqliteBytes;
  // Storage held at steady state: the metrics history's, as its layout sizes every tier once full
  // (raw hours, then 1-minute means for the rest of the day; 5-minute means for a week, then
  // 30-minute means for the rest of 30 days) for the series it holds now (page overhead left out).
  const steadyGb = after.session.history.steadyBytes / 1e9;
  // A deleted row is billed as written. A fresh history holds nothing old enough to be coarsened or
  // to expire, so the window sees none of those writes: the history counts what the rows it holds
  // still owe (an hour's rewrite as coarser means, its other parts deleted, the rest deleted at
  // expiry), and the growth of that is what the window's rows will cost later.
  const expiryRows = Math.max(0, after.session.history.owedWrites - before.session.history.owedWrites);
  const perMonth = (n: number) => (n * MONTH_S) / windowS;
  const hourly = (n: number) => (hour ? n * HOURS_A_MONTH : 0);
  const wsMessages = wakes.webSocketMessage ?? 0;
  // Billed requests: RPC calls and fetches, alarms, other socket events, and incoming messages at 20:1.
  // Auto-answered pings are priced as incoming messages too (the pages exempt protocol pings and say
  // auto-responses add no duration; whether they count as requests is not stated): the worse case.
  const requests =
    sum(calls) +
    (wakes.alarm ?? 0) +
    (wakes.webSocketClose ?? 0) +
    (wakes.webSocketError ?? 0) +
    (wsMessages + pings) / WS_MESSAGES_PER_REQUEST;
  const shardPart = (k: PriceKey) => shard.month[k] ?? 0;
  return {
    label: s.label,
    windowS,
    wakes,
    calls,
    pings,
    sent,
    activeMs,
    d1,
    sqlite,
    grewBytes,
    expiryRows,
    hour,
    month: {
      ...(s.watch ? { workerRequests: perMonth(s.watch.fetches) } : {}),
      doStorage: steadyGb,
      doRequests:
        perMonth(requests) +
        hourly((hour?.frames ?? 0) / WS_MESSAGES_PER_REQUEST) +
        shardPart("doRequests") +
        WATCHED_CHECKS_A_MONTH,
      doDuration:
        perMonth((activeMs / 1000) * DO_MEMORY_GB) +
        hourly(((hour?.activeMs ?? 0) / 1000) * DO_MEMORY_GB) +
        shardPart("doDuration"),
      doRowsRead: perMonth(sqlite.rowsRead) + hourly(hour?.rowsRead ?? 0) + shardPart("doRowsRead"),
      doRowsWritten:
        perMonth(sqlite.rowsWritten + expiryRows) +
        hourly((hour?.rowsWritten ?? 0) + (hour?.expiryRows ?? 0)) +
        shardPart("doRowsWritten") +
        WATCHED_CHECKS_A_MONTH,
      d1RowsRead: perMonth(d1.rowsRead),
      // lastSeenAt, rarer than the window: modelled (below)
      d1RowsWritten: perMonth(d1.rowsWritten) + lastSeenD1Rows(shard.nodesPerShard),
    },
  };
}

/** What a node's liveness costs in a month at list: the pings on its link and on its shard, its
 *  object's own alarms in the window (at idle nothing else sets one: the fallback check, lastSeenAt)
 *  with the row each alarm set writes, its share of its shard's alarms, and the hourly lastSeenAt. */
function livenessMonth(u: Usage, shard: ShardUsage): { usd: number; parts: string } {
  const perMonth = (n: number) => (n * MONTH_S) / u.windowS;
  const linkPings = dollars("doRequests", perMonth(u.pings / WS_MESSAGES_PER_REQUEST), false);
  const shardPings = dollars("doRequests", perMonth(shard.pingsPerNode / WS_MESSAGES_PER_REQUEST), false);
  const ownAlarms =
    dollars("doRequests", perMonth(u.wakes.alarm ?? 0), false) +
    dollars("doRowsWritten", perMonth(u.sqlite.alarmWrites), false);
  const share =
    (Object.keys(shard.month) as PriceKey[]).reduce((a, k) => a + dollars(k, shard.month[k] ?? 0, false), 0) -
    shardPings;
  const lastSeen =
    dollars("d1RowsWritten", lastSeenD1Rows(shard.nodesPerShard), false) +
    dollars("doRequests", WATCHED_CHECKS_A_MONTH, false) +
    dollars("doRowsWritten", WATCHED_CHECKS_A_MONTH, false);
  return {
    usd: linkPings + shardPings + ownAlarms + share + lastSeen,
    parts: `pings on the link ${money(linkPings)}, on the shard ${money(shardPings)}; its object's alarms ${u.wakes.alarm ?? 0} (${u.sqlite.alarmWrites} set) in ${round(u.windowS, 0)} s = ${money(ownAlarms)}; shard share ${money(share)}; lastSeenAt hourly by the shard and its object's check every ${WATCHED_CHECK_INTERVALS} h (modelled: a D1 row an hour for the shard's ${shard.nodesPerShard.toLocaleString("en")} nodes, an alarm and a D1 row every ${WATCHED_CHECK_INTERVALS} h) ${money(lastSeen)}`,
  };
}

const usd = (u: Usage["month"], allowance: boolean) =>
  (Object.keys(u) as PriceKey[]).reduce((a, k) => a + dollars(k, u[k] ?? 0, allowance), 0);
const money = (x: number) => (x >= 100 ? `$${x.toFixed(0)}` : x >= 1 ? `$${x.toFixed(2)}` : `$${x.toFixed(5)}`);
const big = (x: number) => (x >= 1e6 ? `${round(x / 1e6, 2)}M` : x >= 1e4 ? `${round(x / 1e3, 1)}k` : `${round(x, 1)}`);

function printTable(
  usages: Usage[],
  fleet: { list: number; billed: number; month: Usage["month"] },
  cpuPerWakeMs: number,
  d1Check: string,
  shard: ShardUsage,
): void {
  const out: string[] = [];
  out.push(`\nCost per node-month at Cloudflare list prices (read ${PRICES_READ}: ${PRICE_SOURCES.join(", ")})`);
  out.push(
    `window ${usages[0]?.windowS ?? 0} s per node, all nodes at once, scaled to a 30-day month; the agent at its defaults: heartbeat ${HEARTBEAT_MS / 1000} s, inventory poll ${AGENT_DEFAULTS.pollIntervalMs / 1000} s (local), digest ${AGENT_DEFAULTS.digestIntervalMs / 1000} s, metrics sampled every ${AGENT_DEFAULTS.metricsIntervalMs / 1000} s`,
  );
  const head = [
    "node",
    "sent by agent (frames)",
    "DO wakes",
    "RPC",
    "pings",
    "active ms",
    "SQLite grew",
    "DO rows r/w",
    "D1 stmts, rows r/w",
    "$/month list",
    "$ allowances",
  ];
  const rows = usages.map((u) => [
    u.label,
    Object.entries(u.sent)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(", ") || "none",
    Object.entries(u.wakes)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(", ") || "none",
    Object.entries(u.calls)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(", ") || "0",
    String(u.pings),
    String(u.activeMs),
    `${round(u.grewBytes / 1024, 0)} KiB`,
    `${u.sqlite.rowsRead}/${u.sqlite.rowsWritten} + ${u.expiryRows} later (kv ${u.sqlite.kvReads}/${u.sqlite.kvWrites}, alarms ${u.sqlite.alarmWrites})`,
    `${u.d1.statements}, ${u.d1.rowsRead}/${u.d1.rowsWritten}${u.d1.withoutMeta ? ` (${u.d1.withoutMeta} without meta)` : ""}`,
    money(usd(u.month, false)),
    money(usd(u.month, true)),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => "| " + cells.map((c, i) => c.padEnd(widths[i])).join(" | ") + " |";
  out.push(line(head), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...rows.map(line));
  out.push("\nan idle node's metrics, one hour's batch (replayed; times 720 in the month):");
  for (const u of usages)
    if (u.hour)
      out.push(
        `  ${u.label}: ${u.hour.frames} frames, DO rows ${u.hour.rowsRead}/${u.hour.rowsWritten} + ${u.hour.expiryRows} later (coarsened, expired), active ${u.hour.activeMs} ms, SQLite grew ${round(u.hour.grewBytes / 1024, 0)} KiB`,
      );
  out.push(
    `\nliveness shard in the window: ${shard.sockets} sockets held, wakes ${JSON.stringify(shard.wakes)}, rows ${shard.rowsRead}/${shard.rowsWritten}, active ${shard.activeMs} ms; priced per node at ${shard.nodesPerShard.toLocaleString("en")} nodes a shard (the ${FLEET_NODES.toLocaleString("en")}-node fleet's), plus each node's ${shard.pingsPerNode} pings on it`,
  );
  out.push("liveness per node-month (list):");
  for (const u of usages) {
    const l = livenessMonth(u, shard);
    out.push(`  ${u.label}: ${money(l.usd)} (${l.parts})`);
  }
  out.push("\nper node-month, by price (list):");
  for (const u of usages) {
    out.push(
      `  ${u.label}: ` +
        (Object.keys(u.month) as PriceKey[])
          .map((k) => `${PRICES[k].what} ${big(u.month[k] ?? 0)} = ${money(dollars(k, u.month[k] ?? 0, false))}`)
          .join("; "),
    );
  }
  out.push(
    `\nfleet of ${FLEET_NODES.toLocaleString("en")} nodes at ${FLEET_VMS} VMs: ${money(fleet.list)}/month at list; ${money(fleet.billed)}/month billed (the plan's $${PLAN_MINIMUM_USD} minimum + what is beyond its allowances): ` +
      (Object.keys(fleet.month) as PriceKey[])
        .map((k) => `${PRICES[k].what} ${big(fleet.month[k] ?? 0)} → ${money(dollars(k, fleet.month[k] ?? 0, true))}`)
        .join("; "),
  );
  out.push(
    `CPU per wake (all of workerd's CPU in the window, local D1 included, over every node's wakes): ${round(cpuPerWakeMs, 2)} ms`,
  );
  out.push(`D1 rows written, all nodes, counted twice: ${d1Check}`);
  out.push(
    "storage: the metrics history's bytes at steady state as its layout sizes them for the series it holds (raw samples for the last hour stored, and the hour being filled where samples come as taken, 1-minute means for the rest of the day; 5-minute means for a week, a row a day of 30-minute means for the rest of 30 days, and half a day's hours of 5-minute means waiting to be written over; SQLite's page overhead left out): GB-month. Rows written: the window's, plus what the rows the history gained still owe (each raw hour rewritten once as minute means, a 24th of its day's row of 30-minute means: a fresh history has none old enough yet; modelled)",
  );
  out.push(
    "left out: D1 storage (a few KB per node), the long-poll transport (a held poll keeps its object awake), a Monitoring tab's traffic (its own rows), the once-a-minute cron (fleet-wide, not per node)",
  );
  console.log(out.join("\n"));
}

/** Replays an hour of an idle node's ticks from `from` and waits until its object took every frame. */
async function replayed(cp: ControlPlane, s: Scenario, from: number, to: number): Promise<HourCounts> {
  const before = await costOf(cp, s.nodeId);
  const sent = s.agent.sent.get("metrics") ?? 0;
  await s.agent.replayBatch(from, to);
  const frames = (s.agent.sent.get("metrics") ?? 0) - sent;
  const links = s.agent.connectedAt.length;
  let last = "";
  let after = before;
  let woke = 0;
  // Taken once every frame woke the object and its counts stopped moving (frames are handled after
  // their wake is counted).
  await eventually(
    `the ${s.vms}-VM node's hour of metrics stored`,
    async () => {
      after = await costOf(cp, s.nodeId);
      woke = (after.session.wakes.webSocketMessage ?? 0) - (before.session.wakes.webSocketMessage ?? 0);
      // (rows read move at every look: counting the history's rows reads them)
      const now = JSON.stringify([after.session.sqlite.rowsWritten, after.session.history.owedWrites]);
      const settled = woke >= frames && now === last;
      last = now;
      return settled;
    },
    300_000,
    1_000,
  ).catch((err: unknown) => {
    const refused = s.agent.refusals.map((r) => r.code).join(", ") || "none";
    throw new Error(
      `${String(err)}: ${woke} of ${frames} frames arrived; the link came up ${s.agent.connectedAt.length - links} times meanwhile; refusals: ${refused}`,
    );
  });
  return hourCounts(before, after, frames);
}

export async function benchCost(): Promise<BenchRow[]> {
  const cp = await ControlPlane.start({ rateLimits: false, vars: { QX_DEBUG_COUNTS: "1" } });
  const scenarios: Scenario[] = [];
  try {
    for (const vms of SIZES) {
      const { joinToken } = await createNode(cp, `cost-${vms}-vms-${Date.now()}`);
      const { nodeId, credential } = await enroll(cp.url, joinToken, `cost-host-${vms}`);
      const agent = new CostAgent(cp.url, credential, simVms(vms, `cost${vms}`));
      scenarios.push({ label: `idle, ${vms} running VMs`, vms, nodeId, agent });
    }
    {
      const { joinToken } = await createNode(cp, `cost-watched-${Date.now()}`);
      const { nodeId, credential } = await enroll(cp.url, joinToken, "cost-host-watched");
      const agent = new CostAgent(cp.url, credential, simVms(FLEET_VMS, "costwatched"));
      const vmId = [...agent.vms.keys()][0];
      scenarios.push({
        label: `${FLEET_VMS} running VMs, a Monitoring tab's live view open (1 h chart every ${TAB_REFETCH_MS / 1000} s, samples as taken)`,
        vms: FLEET_VMS,
        nodeId,
        agent,
        watch: { vmId, fetches: 0 },
      });
    }
    await Promise.all(scenarios.map((s) => s.agent.run(s.watch !== undefined)));
    for (const s of scenarios)
      await eventually(
        `inventory of the ${s.vms}-VM node stored`,
        async () =>
          (await json<{ node: { vmCount: number } }>(await cp.api(`/api/nodes/${s.nodeId}`))).node.vmCount === s.vms,
        120_000,
        500,
      );
    // The hour before the last, replayed: series names and the first roll-up are not a steady month's.
    const idle = scenarios.filter((s) => !s.watch);
    // The replayed hours are clock hours, as the agent's hourly batches are: the hour before the last
    // one ended, then that one; each ends with the next hour's first tick, which sends it.
    const lastHour = Math.floor(Date.now() / HOUR_MS) * HOUR_MS - HOUR_MS;
    for (const s of idle) await replayed(cp, s, lastHour - HOUR_MS, lastHour);
    // A watched node's first frame (its series' names) before the window, too.
    for (const s of scenarios.filter((x) => x.watch)) {
      await eventually(
        "the watched node's first metrics sent",
        async () => {
          s.agent.flushMetrics();
          return (s.agent.sent.get("metrics") ?? 0) > 0;
        },
        120_000,
        2_000,
      );
    }
    await sleep(SETTLE_MS);

    await eventually(
      "every agent's liveness socket held by a shard",
      async () => (await shardsOf(cp)).total.sockets >= scenarios.length,
      60_000,
      500,
    );
    const shardBefore = await shardsOf(cp);
    const before = await Promise.all(scenarios.map((s) => costOf(cp, s.nodeId)));
    const sentBefore = scenarios.map((s) => new Map(s.agent.sent));
    const cpu0 = workerdCpuSeconds(cp.pid);
    const stopD1 = countD1Writes(d1File(cp.persistDir));
    const t0 = Date.now();
    const watching = scenarios.map(async (s) => {
      if (!s.watch) return;
      while (Date.now() - t0 < WINDOW_MS - TAB_REFETCH_MS / 2) {
        const res = await cp.api(`/api/vms/${s.watch.vmId}/metrics?range=1h&watch=1`);
        if (!res.ok)
          throw new Error(
            `the Monitoring tab's fetch: HTTP ${res.status} ${await res.text()}; control plane output: ${cp.logs.slice(-1500)}`,
          );
        await res.arrayBuffer();
        s.watch.fetches++;
        await sleep(TAB_REFETCH_MS);
      }
    });
    const watched = Promise.all(watching);
    watched.catch(() => {}); // awaited below, after the window
    await sleep(WINDOW_MS);
    await watched;
    const after = await Promise.all(scenarios.map((s) => costOf(cp, s.nodeId)));
    const shardAfter = await shardsOf(cp);
    // (taken now: the replayed hour below sends frames of its own, digests among them)
    const sentAfter = scenarios.map((s) => new Map(s.agent.sent));
    const windowS = (Date.now() - t0) / 1000;
    const shard = shardUsage(shardBefore, shardAfter, windowS);
    const cpuS = workerdCpuSeconds(cp.pid) - cpu0;
    const triggered = stopD1();

    // Then the last hour: its counts alone are one hourly batch's.
    const hours = new Map<Scenario, HourCounts>();
    const step = AGENT_DEFAULTS.metricsIntervalMs;
    for (const s of idle) hours.set(s, await replayed(cp, s, lastHour + step, lastHour + HOUR_MS));

    const usages = scenarios.map((s, i) =>
      usage(s, before[i], after[i], windowS, sentBefore[i], sentAfter[i], shard, hours.get(s)),
    );
    // A node whose link was dropped (or that was flagged) during the run has counts that are not its steady
    // state's: said beside the table, with the close codes and reasons the control plane gave.
    const troubles: string[] = [];
    for (const s of scenarios) {
      const { node } = await json<{ node: { flag: { code: string; message: string } | null } }>(
        await cp.api(`/api/nodes/${s.nodeId}`),
      );
      const lost = s.agent.linkLost.map((l) => `${l.code} ${l.reason}`);
      if (lost.length || node.flag)
        troubles.push(
          `  ${s.label}: link lost ${lost.length} times${lost.length ? ` (${lost.join("; ")})` : ""}${node.flag ? `; flagged ${node.flag.code}: ${node.flag.message}` : ""}`,
        );
    }
    console.log(
      troubles.length
        ? `\nlinks lost or nodes flagged during the run:\n${troubles.join("\n")}`
        : "\nno link lost, no node flagged during the run",
    );
    const totalWakes = usages.reduce((a, u) => a + handlerWakes(u.wakes) + sum(u.calls), 0);
    const cpuPerWakeMs = totalWakes ? (cpuS * 1000) / totalWakes : Number.NaN;
    const metered = usages.reduce((a, u) => a + u.d1.rowsWritten, 0);
    const d1Check = `${triggered.rows} by triggers on the local D1 file (${
      Object.entries(triggered.byTable)
        .filter(([, n]) => n > 0)
        .map(([t, n]) => `${t} ${n}`)
        .join(", ") || "none"
    }), ${metered} by the D1 answers' meta (a written row of an indexed column counts twice there)`;

    const hundred = usages[SIZES.indexOf(FLEET_VMS)]; // the fleet's nodes: idle, nobody watching
    const fleetMonth = Object.fromEntries(
      (Object.keys(hundred.month) as PriceKey[]).map((k) => [k, (hundred.month[k] ?? 0) * FLEET_NODES]),
    ) as Usage["month"];
    const fleet = { list: usd(fleetMonth, false), billed: PLAN_MINIMUM_USD + usd(fleetMonth, true), month: fleetMonth };
    printTable(usages, fleet, cpuPerWakeMs, d1Check, shard);

    const rows: BenchRow[] = usages.map((u, i) => {
      const list = usd(u.month, false);
      return {
        name: `cost: ${u.label}, per node-month at list prices`,
        value: round(list, 5),
        unit: "$",
        ...(SIZES[i] === FLEET_VMS ? goal("costIdleNode", { value: list }) : {}),
        ...(scenarios[i].watch ? { unit: "$ if watched all month" } : {}),
        note: `${Object.entries(u.sent)
          .filter(([, n]) => n > 0)
          .map(([k, n]) => `${k} ${n}`)
          .join(
            ", ",
          )} sent in ${round(u.windowS, 0)} s; wakes ${JSON.stringify(u.wakes)}, RPC ${sum(u.calls)}, pings ${u.pings}, active ${u.activeMs} ms, DO rows ${u.sqlite.rowsRead}/${u.sqlite.rowsWritten}, D1 rows ${u.d1.rowsRead}/${u.d1.rowsWritten}`,
      };
    });
    rows.push({
      name: `cost: fleet of ${FLEET_NODES.toLocaleString("en")} nodes at ${FLEET_VMS} VMs, per month billed (allowances and the $${PLAN_MINIMUM_USD} minimum in)`,
      value: round(fleet.billed, 2),
      unit: "$",
      ...goal("costFleet", { value: fleet.billed }),
      note: `at list, no allowances: ${money(fleet.list)}`,
    });
    for (const [i, u] of usages.entries()) {
      const share = (u.activeMs / (u.windowS * 1000)) * 100;
      rows.push({
        name: `cost: ${u.label}, share of the window its object is awake`,
        value: round(share, 3),
        unit: "%",
        ...(SIZES[i] === FLEET_VMS ? goal("costAwakeShare", { value: share }) : {}),
        note: `${u.activeMs} ms over ${handlerWakes(u.wakes)} wakes (built again after hibernating ${u.wakes.constructed ?? 0} times): handlers and their waitUntil work, the only time the meter counts; nothing else holds the object (no timer but a held long-poll's, a paced inbox's or a waiting caller's; every socket accepted for hibernation), a reading of the code the local runtime cannot confirm`,
      });
    }
    rows.push({ name: "cost: CPU per wake (workerd, local D1 included)", value: round(cpuPerWakeMs, 2), unit: "ms" });
    {
      const l = livenessMonth(hundred, shard);
      rows.push({
        name: `cost: liveness of an idle ${FLEET_VMS}-VM node, per node-month at list prices`,
        value: round(l.usd, 5),
        unit: "$",
        note: `${l.parts}; shard: ${shard.alarms} alarms, ${shard.sockets} sockets, rows ${shard.rowsRead}/${shard.rowsWritten} in ${round(windowS, 0)} s, ${shard.nodesPerShard} nodes a shard at the fleet's size`,
      });
    }
    return rows;
  } finally {
    await Promise.all(scenarios.map((s) => s.agent.halt()));
    await cp.dispose();
  }
}
