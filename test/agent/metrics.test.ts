// The agent's metrics sampler against libvirt's test driver (whose CPU time is synthetic: libvirt
// reports the wall clock), and how a series becomes an answer with offline stretches as gaps.
import { afterEach, describe, expect, it, vi } from "vitest";
import { ConfigError, loadConfig } from "../../agent/config.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { startLocalApi } from "../../agent/local/local-api.ts";
import { MetricsSampler, figuresBetween, nodeTotals } from "../../agent/host/metrics.ts";
import { MetricFigures, seriesAnswer, type MetricPoint } from "../../protocol/metrics.ts";
import { TEST_URI, VMS, recorder, silentLog } from "./helpers.ts";

const opened: Libvirt[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((l) => l.close()));
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("metrics sampler on the test driver", () => {
  it("samples running VMs (synthetic CPU time, assigned memory), pushes them only to a control plane that announced metrics", async () => {
    const libvirt = new Libvirt(TEST_URI, silentLog);
    opened.push(libvirt);
    const rec = recorder();
    let features = new Set<string>();
    const sampler = new MetricsSampler({
      libvirt,
      intervalMs: 10_000,
      log: silentLog,
      send: rec.send,
      peerFeatures: () => features,
      hostCpus: 4,
      batchTicks: 2,
    });
    await sampler.sampleNow();
    await sleep(300);
    await sampler.sampleNow(); // the control plane did not announce metrics: kept, not sent
    expect(rec.sent).toEqual([]);
    features = new Set(["metrics"]);
    await sleep(300);
    await sampler.sampleNow(); // a batch of two: the tick kept and this one

    const [frame] = rec.sent;
    expect(frame?.type).toBe("metrics");
    if (frame?.type !== "metrics") return;
    expect(frame.payload.ticks.length).toBe(2);
    const [first, second] = frame.payload.ticks;
    expect(second.t).toBeGreaterThan(first.t);
    const byId = new Map(second.vms.map((v) => [v.vmId, v]));
    // running and blocked count as running; paused, shut off and the rest are not sampled
    expect([...byId.keys()].sort()).toEqual([VMS.running.uuid, VMS.blocked.uuid].sort());
    const web = byId.get(VMS.running.uuid)!;
    expect(web.cpuPct).toBeGreaterThan(0);
    expect(web.memAssignedMiB).toBe(1024);
    expect(web.memUsedMiB).toBeGreaterThan(0);
    expect(web.diskReadBps).toBeNull(); // the test driver has no block statistics
    expect(second.node?.cpuPct).toBeGreaterThan(0);
    expect(second.node?.memAssignedMiB).toBe(1024 + 512);

    const series = sampler.series(VMS.running.uuid, "1h");
    expect(series.points.length).toBeGreaterThanOrEqual(1); // samples within one or two 10 s steps
    expect(series.points.every((p) => p.cpuPct !== null && p.cpuPct > 0)).toBe(true);
    expect(sampler.series(VMS.paused.uuid, "1h").points).toEqual([]);
  });

  it("a VM that stopped keeps its series while 24 h can still show it, then its ring is dropped", async () => {
    const libvirt = new Libvirt(TEST_URI, silentLog);
    opened.push(libvirt);
    const sampler = new MetricsSampler({
      libvirt,
      intervalMs: 10_000,
      log: silentLog,
      send: recorder().send,
      peerFeatures: () => new Set(),
    });
    await sampler.sampleNow();
    await sleep(300);
    await sampler.sampleNow();
    // the running and the blocked VM, and the node's totals
    expect(sampler.counts()).toMatchObject({ metricsPrevious: 2, metricsRings: 3 });
    await libvirt.destroy(VMS.running.uuid);
    await sleep(300);
    await sampler.sampleNow();
    expect(sampler.counts()).toMatchObject({ metricsPrevious: 1, metricsRings: 3 });
    expect(sampler.series(VMS.running.uuid, "24h").points.length).toBeGreaterThan(0);

    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 24 * 3_600_000 + 60_000 });
    try {
      await sampler.sampleNow();
    } finally {
      vi.useRealTimers();
    }
    // the blocked VM's ring and the node's stay: both were fed this tick
    expect(sampler.counts()).toMatchObject({ metricsPrevious: 1, metricsRings: 2 });
    expect(sampler.series(VMS.running.uuid, "24h").points).toEqual([]);
  });

  it("a counter that went back (the domain restarted) gives no figure for that tick", () => {
    const c = (t: number, cpuTimeNs: number, wrBytes: number | null) => ({
      t,
      cpuTimeNs,
      rdBytes: null,
      wrBytes,
      rdReqs: null,
      wrReqs: null,
      rxBytes: null,
      txBytes: null,
    });
    const mem = { memUsedMiB: 10, memAssignedMiB: 64 };
    expect(figuresBetween(c(0, 5e9, 100), c(1_000, 1e9, 50), 1, mem)).toMatchObject({
      cpuPct: null,
      diskWriteBps: null,
      memUsedMiB: 10,
    });
    expect(figuresBetween(c(0, 0, 0), c(2_000, 1e9, 4096), 2, mem)).toMatchObject({ cpuPct: 25, diskWriteBps: 2048 });
  });

  it("a figure past what the control plane takes (counters read a moment apart) goes as a gap, not in a frame it would refuse", () => {
    const c = (t: number, cpuTimeNs: number) => ({
      t,
      cpuTimeNs,
      rdBytes: null,
      wrBytes: null,
      rdReqs: null,
      wrReqs: null,
      rxBytes: null,
      txBytes: null,
    });
    const mem = { memUsedMiB: 10, memAssignedMiB: 64 };
    const figures = figuresBetween(c(0, 0), c(1, 2e9), 1, mem); // 2 s of CPU in 1 ms: 200,000 %
    expect(figures).toMatchObject({ cpuPct: null, memUsedMiB: 10 });
    expect(MetricFigures.safeParse(figures).success).toBe(true);
    const node = nodeTotals(
      Array.from({ length: 100 }, () => ({ figures: { ...figures, cpuPct: 90_000 }, vcpus: 1 })),
      1,
    );
    expect(node.cpuPct).toBeNull();
    expect(MetricFigures.safeParse(node).success).toBe(true);
  });
});

describe("series answers", () => {
  const point = (t: number, cpuPct: number): MetricPoint => ({
    t,
    cpuPct,
    memUsedMiB: 1,
    memAssignedMiB: 2,
    diskReadBps: null,
    diskWriteBps: null,
    diskReadOps: null,
    diskWriteOps: null,
    netRxBps: null,
    netTxBps: null,
  });

  it("averages into the range's step and marks an offline stretch, and the silence up to now, as gaps", () => {
    const now = 10_000_000;
    const before = [0, 10_000, 20_000].map((d) => point(now - 1_800_000 + d, 10 + d / 1_000));
    const after = [0, 10_000].map((d) => point(now - 600_000 + d, 50));
    const answer = seriesAnswer("1h", now, [...before, ...after]);
    expect(answer.stepMs).toBe(10_000);
    const gaps = answer.points.filter((p) => p.cpuPct === null);
    expect(gaps.length).toBe(2); // between the two stretches, and after the last sample
    expect(answer.points.map((p) => p.cpuPct)).toEqual([10, 20, 30, null, 50, 50, null]);

    const day = seriesAnswer("24h", now, [...before, ...after]);
    expect(day.stepMs).toBe(60_000);
    expect(day.points.filter((p) => p.cpuPct !== null).map((p) => p.cpuPct)).toEqual(expect.arrayContaining([50]));
  });
});

describe("host view's metrics route", () => {
  it("answers the agent's in-memory series of a VM found by UUID or name; a bad range is 400, an unknown VM 404, no token 401", async () => {
    const libvirt = new Libvirt(TEST_URI, silentLog);
    opened.push(libvirt);
    const sampler = new MetricsSampler({
      libvirt,
      intervalMs: 10_000,
      log: silentLog,
      send: () => true,
      peerFeatures: () => new Set(),
    });
    await sampler.sampleNow();
    await sleep(200);
    await sampler.sampleNow();
    const api = await startLocalApi({
      host: "127.0.0.1",
      port: 0,
      acceptsToken: (t) => t === "host-token",
      libvirt,
      metrics: sampler,
      logDir: "/nonexistent",
      webDir: "/nonexistent",
      log: silentLog,
    });
    try {
      const get = (path: string, token: string | null = "host-token") =>
        fetch(api.url + path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      const byId = await get(`/api/v1/vms/${VMS.running.uuid}/metrics?range=1h`);
      expect(byId.status).toBe(200);
      const answer = (await byId.json()) as { range: string; stepMs: number; points: { cpuPct: number | null }[] };
      expect(answer).toMatchObject({ range: "1h", stepMs: 10_000 });
      expect(answer.points.some((p) => p.cpuPct !== null && p.cpuPct > 0)).toBe(true);
      expect((await (await get(`/api/v1/vms/${encodeURIComponent(VMS.running.name)}/metrics`)).json()).range).toBe(
        "1h",
      );
      expect((await get(`/api/v1/vms/${VMS.running.uuid}/metrics?range=2h`)).status).toBe(400);
      expect((await get(`/api/v1/vms/11111111-0000-4000-8000-00000000ffff/metrics`)).status).toBe(404);
      expect((await get(`/api/v1/vms/${VMS.running.uuid}/metrics`, null)).status).toBe(401);
    } finally {
      await api.close();
    }
  });
});

describe("configuration", () => {
  const base = ["--server", "http://127.0.0.1:8787"];
  it("samples every 10 s by default; --metrics-interval 0 turns sampling off; below a second is refused; --events auto|off", () => {
    const config = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
      loadConfig([...base, ...argv], env) as Exclude<ReturnType<typeof loadConfig>, "help">;
    expect(config([])).toMatchObject({ metricsIntervalMs: 10_000, metricsBatchMs: 3_600_000, events: "auto" });
    expect(config([], { QX_METRICS_BATCH_MS: "60000" }).metricsBatchMs).toBe(60_000);
    expect(config(["--metrics-interval", "0"]).metricsIntervalMs).toBe(0);
    expect(config([], { QX_METRICS_INTERVAL_MS: "2500", QX_EVENTS: "off" })).toMatchObject({
      metricsIntervalMs: 2_500,
      events: "off",
    });
    expect(() => config(["--metrics-interval", "500"])).toThrow(ConfigError);
    expect(() => config(["--metrics-interval", "500"])).toThrow(
      /--metrics-interval: must be 0 \(off\) or at least 1000 ms/,
    );
    expect(() => config(["--events", "sometimes"])).toThrow(/--events: expected auto or off/);
  });
});
