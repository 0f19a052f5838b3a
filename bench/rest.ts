// Bench: REST reads, the command round trip (reset_state without force: REST → Worker → Durable
// Object → real agent → libvirt test driver → back), the same libvirt call made in-process (the
// agent's own share), and logs end to end. Every figure sits beside GET /api/health measured just
// before it in the same run, since local workerd and this machine set the floor.
import { pino } from "pino";
import { Libvirt } from "../agent/libvirt.ts";
import { demoLibvirtUri } from "../test/support/agent.ts";
import type { ControlPlane } from "../test/support/control-plane.ts";
import { DEMO, json } from "../test/e2e/journey.ts";
import { concurrent, percentile, sequential, type LoadResult, type Target } from "./load.ts";
import type { BenchRow } from "./table.ts";

const ONE_CONN_REQUESTS = 300;
const MANY_CONNS = 50;
const MANY_SECONDS = 5;

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

/** Non-2xx and transport errors of a run, as one row (target: none). */
const failuresRow = (name: string, r: LoadResult): BenchRow => ({
  name: `${name}: non-2xx + errors`,
  value: r.non2xx + r.errors,
  unit: "count",
  target: "= 0",
  met: r.non2xx + r.errors === 0,
  note: Object.entries(r.statuses).map(([s, n]) => `${s}×${n}`).join(" "),
});

export async function benchRest(cp: ControlPlane, operatorToken: string): Promise<BenchRow[]> {
  const auth = { authorization: `Bearer ${operatorToken}` };
  const health: Target = { url: `${cp.url}/api/health` };
  const vm: Target = { url: `${cp.url}/api/vms/${DEMO.web01}`, headers: auth };
  // Authenticated but no D1 (the token is cached): splits GET /api/vms/:id's cost into auth and its D1 read.
  const me: Target = { url: `${cp.url}/api/me`, headers: auth };
  const reset: Target = { url: `${cp.url}/api/vms/${DEMO.web01}/reset_state`, method: "POST", headers: auth };
  const logs: Target = { url: `${cp.url}/api/vms/${DEMO.web01}/logs?lines=1000`, headers: auth };

  // Sanity: the routes answer the documented shapes before they are timed.
  const probe = await json(await fetch(logs.url, { headers: auth }));
  if (probe.linesReturned !== 1000) throw new Error(`logs probe: ${JSON.stringify(probe).slice(0, 300)}`);
  const resetProbe = await json(await fetch(reset.url, { method: "POST", headers: auth }));
  if (resetProbe.source !== "hypervisor") throw new Error(`reset_state probe: ${JSON.stringify(resetProbe).slice(0, 300)}`);

  const rows: BenchRow[] = [];

  // REST reads
  const h1 = await sequential(health, ONE_CONN_REQUESTS);
  const m1 = await sequential(me, ONE_CONN_REQUESTS);
  const v1 = await sequential(vm, ONE_CONN_REQUESTS);
  rows.push({ name: "GET /api/health p50, 1 conn (baseline)", value: round(h1.p50), unit: "ms", note: `${round(h1.rps, 0)} req/s` });
  rows.push({ name: "GET /api/me p50, 1 conn (auth, no D1)", value: round(m1.p50), unit: "ms", baseline: round(h1.p50), ratio: round(m1.p50 / h1.p50), note: "for reading the next row: its extra over this is one local D1 read" });
  rows.push({ name: "GET /api/vms/:id p50, 1 conn", value: round(v1.p50), unit: "ms", baseline: round(h1.p50), ratio: round(v1.p50 / h1.p50), target: "≤ health + 2 ms", met: v1.p50 <= h1.p50 + 2 });
  const h50 = await concurrent(health, MANY_CONNS, MANY_SECONDS);
  const m50 = await concurrent(me, MANY_CONNS, MANY_SECONDS);
  const v50 = await concurrent(vm, MANY_CONNS, MANY_SECONDS);
  rows.push({ name: `GET /api/health throughput, ${MANY_CONNS} conns (baseline)`, value: round(h50.rps, 0), unit: "req/s" });
  rows.push({ name: `GET /api/me throughput, ${MANY_CONNS} conns (auth, no D1)`, value: round(m50.rps, 0), unit: "req/s", baseline: round(h50.rps, 0), ratio: round(m50.rps / h50.rps) });
  rows.push({ name: `GET /api/vms/:id throughput, ${MANY_CONNS} conns`, value: round(v50.rps, 0), unit: "req/s", baseline: round(h50.rps, 0), ratio: round(v50.rps / h50.rps), target: "≥ 0.8× health", met: v50.rps >= 0.8 * h50.rps });
  rows.push(failuresRow("GET /api/vms/:id", { ...v50, non2xx: v50.non2xx + v1.non2xx, errors: v50.errors + v1.errors }));

  // Command round trip
  const h1b = await sequential(health, ONE_CONN_REQUESTS);
  const r1 = await sequential(reset, ONE_CONN_REQUESTS);
  rows.push({ name: "reset_state round trip p50, 1 conn", value: round(r1.p50), unit: "ms", baseline: round(h1b.p50), ratio: round(r1.p50 / h1b.p50), target: "≤ health + 6 ms", met: r1.p50 <= h1b.p50 + 6 });
  const h50b = await concurrent(health, MANY_CONNS, MANY_SECONDS);
  const r50 = await concurrent(reset, MANY_CONNS, MANY_SECONDS);
  rows.push({ name: `reset_state throughput, ${MANY_CONNS} conns`, value: round(r50.rps, 0), unit: "req/s", baseline: round(h50b.rps, 0), ratio: round(r50.rps / h50b.rps), target: "≥ 0.4× health", met: r50.rps >= 0.4 * h50b.rps });
  rows.push(failuresRow("reset_state", { ...r50, non2xx: r50.non2xx + r1.non2xx, errors: r50.errors + r1.errors }));
  rows.push(await directLibvirt(r1.p50));

  // Logs end to end
  const h1c = await sequential(health, ONE_CONN_REQUESTS);
  const l1 = await sequential(logs, 150);
  rows.push({ name: "GET logs?lines=1000 p50, 1 conn", value: round(l1.p50), unit: "ms", baseline: round(h1c.p50), ratio: round(l1.p50 / h1c.p50), target: "≤ health + 10 ms", met: l1.p50 <= h1c.p50 + 10 });
  rows.push(failuresRow("GET logs?lines=1000", l1));
  return rows;
}

/** The agent's share of reset_state: the same vm.state libvirt call, in-process, on the same host. */
async function directLibvirt(roundTripP50: number): Promise<BenchRow> {
  const libvirt = new Libvirt(demoLibvirtUri(), pino({ level: "silent" }));
  try {
    for (let i = 0; i < 50; i++) await libvirt.state(DEMO.web01);
    const times: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t0 = performance.now();
      await libvirt.state(DEMO.web01);
      times.push(performance.now() - t0);
    }
    const p50 = percentile(times, 50);
    return { name: "libvirt state call in-process (agent's share) p50", value: round(p50, 3), unit: "ms", baseline: round(roundTripP50), ratio: round(p50 / roundTripP50, 3), note: "baseline: the round trip's p50" };
  } finally {
    await libvirt.close();
  }
}
