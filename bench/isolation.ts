// Bench section `isolation`: a viewer's VM list and an operator's reset_state on an honest node
// (its real agent on libvirt's test driver), idle and then while a rogue agent floods its own node
// for 10 s with 500-VM flip frames under the frame limit (test/support/rogue-agent.ts), on a control
// plane with the shipped limits. Prints p50 / max of both against their idle p50 (target: within 3x,
// none over 1 s), workerd's largest RSS before and during the flood, and the event rows written.
import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { enrollAgent, json, startControlPlane } from "../test/e2e/journey.ts";
import { writeNodeXml } from "../test/support/agent.ts";
import { RogueAgent } from "../test/support/rogue-agent.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

const FLOOD_MS = 10_000;
const IDLE_CALLS = 40;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

/** RSS (MiB) of every workerd process on the machine that belongs to this control plane's group. */
function workerdRssMiB(group: string): number {
  let total = 0;
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (!stat.includes("(workerd)") || fields[2] !== group) continue;
      const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      total += Number(rss?.[1] ?? 0) / 1024;
    } catch {
      // gone meanwhile
    }
  }
  return Math.round(total);
}

async function timed(call: () => Promise<Response>): Promise<number> {
  const t0 = performance.now();
  const res = await call();
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return performance.now() - t0;
}

export async function benchIsolation(): Promise<BenchRow[]> {
  const cp = await startControlPlane();
  const dir = mkdtempSync(join(tmpdir(), "qx-bench-iso-"));
  const web = randomUUID();
  const { agent } = await enrollAgent(cp, "honest", {
    libvirtUri: writeNodeXml(dir, [{ name: "honest-web", uuid: web, runstate: "running" }]),
    expectVms: 1,
  });
  try {
    const token = async (role: string) =>
      (await json<{ token: string }>(await cp.api("/api/tokens", { method: "POST", json: { name: role, role } })))
        .token;
    const viewer = await token("viewer");
    const operator = await token("operator");
    const list = () => cp.api("/api/vms?limit=50", { token: viewer });
    const reset = () => cp.api(`/api/vms/${web}/reset_state`, { method: "POST", token: operator });
    // wrangler's process group (ControlPlane starts it detached): its workerd is in it.
    const group = String(cp.pid);

    const idle = { list: [] as number[], reset: [] as number[] };
    for (let i = 0; i < IDLE_CALLS; i++) idle.list.push(await timed(list));
    // reset_state is limited to 60 a minute per token: half a second apart.
    for (let i = 0; i < 12; i++) {
      idle.reset.push(await timed(reset));
      await new Promise((r) => setTimeout(r, 500));
    }
    const rssIdle = workerdRssMiB(group);

    const rogue = await RogueAgent.enroll(cp, "rogue");
    const during = { list: [] as number[], reset: [] as number[] };
    let rssPeak = rssIdle;
    const start = Date.now();
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, workerdRssMiB(group))), 250);
    const flooding = rogue.flood(FLOOD_MS, 150);
    await Promise.all([
      (async () => {
        while (Date.now() - start < FLOOD_MS) during.list.push(await timed(list));
      })(),
      (async () => {
        while (Date.now() - start < FLOOD_MS) {
          during.reset.push(await timed(reset));
          await new Promise((r) => setTimeout(r, 500));
        }
      })(),
    ]);
    const outcome = await flooding;
    clearInterval(sampler);
    let events = 0;
    for (const id of rogue.uuids) {
      const { events: trail } = await json<{ events: { at: string }[] }>(await cp.api(`/api/vms/${id}/events`));
      events += trail.filter((e) => Date.parse(e.at) >= start).length;
    }

    const rows: BenchRow[] = [];
    for (const [what, unit] of [
      ["list", "viewer GET /api/vms"],
      ["reset", "operator reset_state (honest node)"],
    ] as const) {
      const base = Math.round(pct(idle[what], 50) * 10) / 10;
      const p50 = Math.round(pct(during[what], 50) * 10) / 10;
      const max = Math.round(Math.max(...during[what]));
      rows.push(
        { name: `${unit}: idle p50`, value: base, unit: "ms" },
        {
          name: `${unit}: p50 during the flood`,
          value: p50,
          unit: "ms",
          baseline: base,
          ratio: Math.round((p50 / base) * 100) / 100,
          ...goal("floodP50", { value: p50, baseline: base }),
        },
        {
          name: `${unit}: max during the flood (${during[what].length} calls)`,
          value: max,
          unit: "ms",
          baseline: base,
          ratio: Math.round((max / base) * 100) / 100,
          ...goal("floodMax", { value: max }),
        },
      );
    }
    rows.push(
      { name: "workerd RSS idle", value: rssIdle, unit: "MiB" },
      {
        name: "workerd RSS peak during the flood",
        value: rssPeak,
        unit: "MiB",
        baseline: rssIdle,
        ratio: Math.round((rssPeak / rssIdle) * 100) / 100,
      },
      {
        name: `rogue: event rows written in ${FLOOD_MS / 1000} s (${outcome.framesSent} frames, ${outcome.links} links)`,
        value: events,
        unit: "rows",
        ...goal("floodEvents", { value: events }),
        note: outcome.closes[0] ? `closed ${outcome.closes[0].code}: ${outcome.closes[0].reason}` : "never closed",
      },
    );
    return rows;
  } finally {
    await agent.dispose();
    await cp.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}
