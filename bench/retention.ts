// Bench section `retention`: a million host events past their age, deleted by the events' retention
// in its small batches (the cron handler, triggered back to back rather than once a minute, so the
// deletion runs as hard as it ever can; wrangler dev's /cdn-cgi/handler/scheduled), while a viewer
// lists VMs without pause. Prints the list's p50 / p99 / max during the deletion beside its idle p50
// with their ratios (targets: p99 within 4x idle p50, no call over 250 ms), how many cron runs the
// million rows took and how long.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { enrollAgent, json, SHORT_DEADLINES } from "../test/e2e/journey.ts";
import { writeNodeXml } from "../test/support/agent.ts";
import { ControlPlane } from "../test/support/control-plane.ts";
import { d1File } from "./d1-writes.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

const OLD_ROWS = 1_000_000;
const IDLE_CALLS = 100;
/** Host events are kept 30 days by default: these are 40 days old. */
const OLD_AGE_MS = 40 * 86_400_000;
/** The whole deletion may take this long before the section gives up. */
const DELETION_CAP_MS = 15 * 60_000;
/** The shipped RETENTION_BATCHES_PER_RUN and RETENTION_BATCH_ROWS (wrangler.toml). */
const RUN_STATEMENTS = 1000;
const RUN_ROWS = 100;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Span = { from: number; to: number };

async function timed(call: () => Promise<Response>, spans?: Span[]): Promise<number> {
  const t0 = performance.now();
  const res = await call();
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  const t1 = performance.now();
  spans?.push({ from: t0, to: t1 });
  return t1 - t0;
}

export async function benchRetention(): Promise<BenchRow[]> {
  const cp = await ControlPlane.start({ vars: { ...SHORT_DEADLINES }, rateLimits: false });
  const dir = mkdtempSync(join(tmpdir(), "qx-bench-retention-"));
  const vms = Array.from({ length: 20 }, (_, i) => ({
    name: `kept-${i}`,
    uuid: randomUUID(),
    runstate: "running" as const,
  }));
  const { agent } = await enrollAgent(cp, "retention", {
    libvirtUri: writeNodeXml(dir, vms),
    expectVms: vms.length,
  });
  const { token: viewer } = await json<{ token: string }>(
    await cp.api("/api/tokens", { method: "POST", json: { name: "viewer", role: "viewer" } }),
  );
  // A thousand VMs long gone, a thousand old state changes each (their per-VM count is within
  // bounds, so only age removes them), written straight into the database file while wrangler is
  // stopped; the agent links again once it is back.
  await cp.stop();
  const cutoff = Date.now() - OLD_AGE_MS;
  const seedStarted = performance.now();
  const seed = new DatabaseSync(d1File(cp.persistDir));
  seed.exec(
    `INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
     WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${OLD_ROWS - 1})
     SELECT 'gone-' || (i % 1000), ${cutoff} + i, 'agent:retention', 'state_changed', 'running', 'shutoff',
            'agent', 'the guest stopped' FROM n`,
  );
  seed.close();
  const seedS = (performance.now() - seedStarted) / 1000;
  await cp.boot();
  const db = new DatabaseSync(d1File(cp.persistDir), { readOnly: true });
  try {
    db.exec("PRAGMA busy_timeout = 10000");
    const oldLeft = db.prepare(
      `SELECT count(*) AS n FROM vm_events WHERE source = 'agent' AND at < ${Date.now() - 30 * 86_400_000}`,
    );
    const left = () => (oldLeft.get() as { n: number }).n;
    if (left() !== OLD_ROWS) throw new Error(`seeded ${left()} old rows, expected ${OLD_ROWS}`);

    const list = () => cp.api("/api/vms?limit=50", { token: viewer });
    const idle: number[] = [];
    for (let i = 0; i < IDLE_CALLS; i++) idle.push(await timed(list));

    const during: number[] = [];
    const calls: Span[] = [];
    /** The local cron trigger's own HTTP requests (in production the cron is no request at all). */
    const triggers: Span[] = [];
    let runs = 0;
    let deleting = true;
    const started = performance.now();
    const viewerLoop = (async () => {
      while (deleting) during.push(await timed(list, calls));
    })();
    try {
      // Each trigger starts one run (at most its statement budget of batches); the next is sent once
      // the count has stopped moving, so runs never overlap, as once-a-minute cron runs would not.
      let last = left();
      let idleRuns = 0;
      while (last > 0) {
        if (performance.now() - started > DELETION_CAP_MS)
          throw new Error(`${last} old rows left after ${DELETION_CAP_MS / 60_000} min`);
        const sent = performance.now();
        const res = await fetch(`${cp.url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`);
        const said = await res.text();
        triggers.push({ from: sent, to: performance.now() });
        if (!res.ok || said.trim() !== "ok")
          throw new Error(`the cron trigger answered ${res.status}: ${said.slice(0, 100)}`);
        runs++;
        const before = last;
        for (;;) {
          await sleep(250);
          const now = left();
          if (now === last || now === 0) {
            last = now;
            break;
          }
          last = now;
        }
        idleRuns = last === before ? idleRuns + 1 : 0;
        if (idleRuns >= 5) throw new Error(`5 cron runs in a row deleted nothing; ${last} old rows left`);
      }
    } finally {
      deleting = false;
      await viewerLoop;
    }
    const deletionS = (performance.now() - started) / 1000;

    const base = Math.round(pct(idle, 50) * 10) / 10;
    const ratio = (ms: number) => Math.round((ms / base) * 100) / 100;
    const p50 = Math.round(pct(during, 50) * 10) / 10;
    const p99 = Math.round(pct(during, 99));
    const max = Math.round(Math.max(...during));
    // The list calls made while a run was going on (wrangler dev answers the trigger request once its
    // run is over, so the request spans the run), apart from those between runs.
    const behind = calls.filter((c) => triggers.some((t) => c.from < t.to && c.to > t.from));
    const slowestBehind = behind.length ? Math.round(Math.max(...behind.map((c) => c.to - c.from))) : 0;
    const triggerMs = triggers.map((t) => t.to - t.from);
    const viewerList = "viewer GET /api/vms";
    return [
      {
        name: `retention: ${OLD_ROWS.toLocaleString("en")} old event rows seeded`,
        value: Math.round(seedS * 10) / 10,
        unit: "s",
      },
      {
        name: `retention: ${viewerList} idle p50 (beside the old rows)`,
        value: base,
        unit: "ms",
        note: `idle p99 ${Math.round(pct(idle, 99))} ms, max ${Math.round(Math.max(...idle))} ms (${idle.length} calls): the machine's own spread`,
      },
      {
        name: `retention: ${viewerList} p50 while they are deleted`,
        value: p50,
        unit: "ms",
        baseline: base,
        ratio: ratio(p50),
      },
      {
        name: `retention: ${viewerList} p99 while they are deleted`,
        value: p99,
        unit: "ms",
        baseline: base,
        ratio: ratio(p99),
        ...goal("retentionP99", { value: p99, baseline: base }),
      },
      {
        name: `retention: ${viewerList} max while they are deleted (${during.length} calls)`,
        value: max,
        unit: "ms",
        baseline: base,
        ratio: ratio(max),
        ...goal("retentionMax", { value: max }),
      },
      {
        name: `retention: ${viewerList}, the ${behind.length} calls made while a cron run was going on: slowest`,
        value: slowestBehind,
        unit: "ms",
        baseline: base,
        ratio: ratio(slowestBehind),
        note: `the trigger requests (each one run) took p50 ${Math.round(pct(triggerMs, 50))} ms, max ${Math.round(Math.max(...triggerMs))} ms`,
      },
      {
        name: "retention: cron runs to delete them",
        value: runs,
        unit: "runs",
        note: `a run deletes at most ${(RUN_STATEMENTS * RUN_ROWS).toLocaleString("en")} rows (${RUN_STATEMENTS} statements of ${RUN_ROWS}) and starts no statement after 15 s: at one run a minute, a million rows are gone in ${Math.ceil(OLD_ROWS / (RUN_STATEMENTS * RUN_ROWS))} minutes at best`,
      },
      {
        name: `retention: time to delete them (${runs} cron runs back to back)`,
        value: Math.round(deletionS),
        unit: "s",
      },
      {
        name: "retention: rows deleted per second",
        value: Math.round(OLD_ROWS / deletionS),
        unit: "rows/s",
      },
    ];
  } catch (err) {
    throw new Error(`${String(err)}; wrangler said: ${cp.logs.slice(-800)}`);
  } finally {
    db.close();
    await agent.dispose();
    await cp.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}
