// Bench: a fleet of simulated agents (bench/fleet-agent.ts: the real agent's link and backoff, a
// fake in-memory host) on one local control plane, each enrolled as its own node. Measures the time
// until all are connected, a command's p99 with one agent connected against with all of them, and
// after a control-plane restart how the reconnects spread (jitter) and how long until all are back.
import type { ControlPlane } from "../test/support/control-plane.ts";
import { createNode, eventually } from "../test/e2e/journey.ts";
import { countD1Writes, d1File } from "./d1-writes.ts";
import { enroll, SimAgent, simVms } from "./fleet-agent.ts";
import { percentile, sequential } from "./load.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

/** Each p99 is over as many sequential reset_state calls as fit in this long (at most 5,000): long
 *  enough to take in the sessions' liveness wake-ups, which come about once a minute per node. */
const MEASURE_MS = 30_000;
const COMMANDS = 5_000;
/** Pause between the last inventory landing and the crowded measurement. */
const SETTLE_MS = 10_000;
/** The window over which D1 writes are counted at steady state: a connected node's liveness check,
 *  digest and reconciler pass come about once a minute (its lastSeenAt write only hourly). */
const STEADY_MS = 150_000;
/** Links opening at once: a fleet comes up host by host, not in one instant. */
const CONNECTING_AT_ONCE = 50;
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

/** Runs `work` over `items` with at most `limit` in flight. */
async function pool<T, R>(items: T[], limit: number, work: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await work(items[i], i);
      }
    }),
  );
  return out;
}

/** How many of `times` (epoch ms) fall in each whole second after `from`. */
function countPerSecond(times: number[], from: number): Map<number, number> {
  const counts = new Map<number, number>();
  for (const t of times) {
    const second = Math.floor((t - from) / 1000);
    counts.set(second, (counts.get(second) ?? 0) + 1);
  }
  return counts;
}

/** Rejects when `p` has not settled within `ms` (every wait in a bench is bounded). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>(
    (_, fail) => (timer = setTimeout(() => fail(new Error(`${what}: not within ${ms} ms`)), ms)),
  );
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export async function benchFleet(cp: ControlPlane, operatorToken: string, size: number): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const enrollStart = performance.now();
  const creds = await pool(
    Array.from({ length: size }, (_, i) => i),
    16,
    async (i) => {
      const { joinToken } = await createNode(cp, `fleet-${String(i).padStart(4, "0")}-${Date.now()}`);
      return enroll(cp.url, joinToken, `fleet-host-${i}`);
    },
  );
  const enrollMs = performance.now() - enrollStart;
  const agents = creds.map((c, i) => new SimAgent(cp.url, c.credential, simVms(1, `fleet${i}`)));
  const [first, ...rest] = agents;
  const probeVm = [...first.vms.values()][0];
  const reset = {
    url: `${cp.url}/api/vms/${probeVm.uuid}/reset_state`,
    method: "POST" as const,
    headers: { authorization: `Bearer ${operatorToken}` },
  };

  try {
    await first.start();
    await eventually("first fleet VM listed", async () => (await cp.api(`/api/vms/${probeVm.uuid}`)).ok, 30_000);
    const alone = await sequential(reset, COMMANDS, MEASURE_MS);

    const t0 = performance.now();
    const wall0 = Date.now();
    try {
      await within(
        pool(rest, CONNECTING_AT_ONCE, (a) => a.start()),
        180_000,
        "fleet connect",
      );
    } catch (err) {
      const up = agents.filter((a) => a.connectedAt.length > 0).length;
      throw new Error(
        `${(err as Error).message}; ${up} of ${size} connected; control plane output: ${cp.logs.slice(-1500)}`,
      );
    }
    const allUpMs = performance.now() - t0;
    rows.push({
      name: `fleet: ${size} simulated agents, start → all connected (${CONNECTING_AT_ONCE} opening at a time)`,
      value: Math.round(allUpMs),
      unit: "ms",
      note: `enrolling ${size} nodes (create + join) took ${Math.round(enrollMs)} ms; last welcome ${Math.max(...rest.map((a) => a.connectedAt[0] - wall0))} ms after start`,
    });
    // Let their inventories land before timing commands beside them.
    await eventually(
      "fleet inventories stored",
      async () => {
        const res = await cp.api(`/api/vms?q=fleet${size - 1}-0&limit=5`);
        return res.ok && ((await res.json()) as { vms: unknown[] }).vms.length > 0;
      },
      120_000,
      500,
    );
    // Steady state, not the tail of the connect storm: every session's after-sync work (the reconciler's
    // pass, missing-VM marks, liveness writes) done before timing commands beside them.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    // Steady state with nobody asking anything: what the fleet alone writes to D1.
    const stopCounting = countD1Writes(d1File(cp.persistDir));
    // One write we make ourselves, to know the counting sees the control plane's writes at all.
    await cp.api("/api/tokens", { method: "POST", json: { name: `bench-marker-${Date.now()}`, role: "viewer" } });
    await new Promise((r) => setTimeout(r, STEADY_MS));
    const counted = stopCounting();
    if ((counted.byTable.api_tokens ?? 0) < 1)
      throw new Error("the D1 write count did not see a token created in the window");
    const steady = {
      rows: counted.rows - 1,
      byTable: { ...counted.byTable, api_tokens: counted.byTable.api_tokens - 1 },
    };
    const perNodeHour = steady.rows / size / (STEADY_MS / 3_600_000);
    rows.push({
      name: `fleet: D1 rows written per node per hour at steady state (${size} agents connected, nothing asked)`,
      value: round(perNodeHour, 1),
      unit: "rows",
      note: `${steady.rows} rows in ${STEADY_MS / 1000} s (${round(steady.rows / (STEADY_MS / 1000), 1)} rows/s for the fleet): ${
        Object.entries(steady.byTable)
          .filter(([, n]) => n > 0)
          .map(([t, n]) => `${t} ${n}`)
          .join(", ") || "none"
      }`,
    });
    const crowded = await sequential(reset, COMMANDS, MEASURE_MS);
    rows.push({
      name: "fleet: reset_state p99 with 1 agent connected (baseline)",
      value: round(alone.p99),
      unit: "ms",
      note: `p50 ${round(alone.p50)} ms over ${alone.requests} calls in ${MEASURE_MS / 1000} s, non-2xx ${alone.non2xx + alone.errors}`,
    });
    rows.push({
      name: `fleet: reset_state p99 with ${size} agents connected`,
      value: round(crowded.p99),
      unit: "ms",
      baseline: round(alone.p99),
      ratio: round(crowded.p99 / alone.p99),
      ...goal("fleetResetP99", { value: crowded.p99, baseline: alone.p99 }),
      ...(crowded.non2xx + crowded.errors > 0 ? { met: false } : {}), // a fast failure is no success
      note: `p50 ${round(crowded.p50)} ms over ${crowded.requests} calls in ${MEASURE_MS / 1000} s from ${SETTLE_MS / 1000} s after the last inventory landed, non-2xx ${crowded.non2xx + crowded.errors}`,
    });

    // Control-plane restart: every link drops; the agents come back on their own backoff.
    const before = agents.map((a) => a.connectedAt.length);
    const stopAt = Date.now();
    await cp.restart();
    const upAt = Date.now();
    let back: number[] = [];
    try {
      await eventually(
        "all agents reconnected",
        async () => agents.every((a, i) => a.connectedAt.length > before[i]),
        90_000,
        250,
      );
    } catch {
      // reported below as a shortfall
    }
    back = agents.flatMap((a, i) => (a.connectedAt.length > before[i] ? [a.connectedAt[before[i]]] : []));
    const perSecond = countPerSecond(back, upAt);
    const busiest = Math.max(0, ...perSecond.values());
    // The agents' side of it: their attempts per second from the moment the links dropped.
    const attempts = agents.flatMap((a) => a.attemptedAt.filter((t) => t >= stopAt));
    const attemptsPerSecond = countPerSecond(attempts, stopAt);
    const histogram = (m: Map<number, number>, n: number) =>
      Array.from({ length: n }, (_, i) => m.get(i) ?? 0).join(" ");
    const lastBack = back.length ? Math.max(...back) - upAt : NaN;
    const shortfall = back.length < size ? `; control plane output: ${cp.logs.replace(/\s+/g, " ").slice(-600)}` : "";
    rows.push({
      name: "fleet restart: agents back",
      value: back.length,
      unit: `of ${size}`,
      baseline: size,
      ...goal("fleetBack", { value: back.length, baseline: size }),
      note: `control plane down→healthy in ${upAt - stopAt} ms${shortfall}`,
    });
    rows.push({
      name: "fleet restart: most reconnects in any one second",
      value: busiest,
      unit: "agents",
      baseline: size,
      ratio: round(busiest / size, 3),
      ...goal("fleetReconnectBurst", { value: busiest, baseline: size }),
      ...(back.length < size ? { met: false } : {}), // a quiet second because agents never came back
      note: `welcomes per second from control plane up: ${histogram(perSecond, 12)} …`,
    });
    rows.push({
      name: "fleet restart: most reconnect attempts in any one second (agents' jitter)",
      value: Math.max(0, ...attemptsPerSecond.values()),
      unit: "attempts",
      baseline: size,
      ratio: round(Math.max(0, ...attemptsPerSecond.values()) / size, 3),
      note: `attempts per second from the drop (down for ${upAt - stopAt} ms): ${histogram(attemptsPerSecond, 12)} …; ${attempts.length} attempts in all`,
    });
    rows.push({
      name: "fleet restart: control plane up → last agent back",
      value: Math.round(lastBack),
      unit: "ms",
      ...goal("fleetLastBack", { value: lastBack }),
      note: `median ${Math.round(
        percentile(
          back.map((t) => t - upAt),
          50,
        ),
      )} ms`,
    });
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
  }
  return rows;
}
