// The sampler's acknowledged batches on libvirt's test driver: to a control plane that announced
// `metricsAck`, a batch's frames name it and mark its last frame, and its ticks are kept (in memory
// and in the spool file) until `metrics.stored` answers it; a batch its link dropped, or one never
// answered, goes again. Hour-long batches end on the hour of the control plane's clock. To a control
// plane that did not announce it, frames carry no batch and ticks leave once sent.
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { MetricsSampler, type MetricsSamplerOptions } from "../../agent/host/metrics.ts";
import type { MetricsTick } from "../../protocol/metrics.ts";
import type { AgentMessage } from "../../protocol/wire.ts";
import { TEST_URI, recorder, silentLog, tempDir } from "./helpers.ts";

const opened: { libvirt: Libvirt; sampler: MetricsSampler }[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const { libvirt, sampler } of opened.splice(0)) {
    sampler.stop();
    await libvirt.close();
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type Metrics = Extract<AgentMessage, { type: "metrics" }>;
const metricsOf = (sent: AgentMessage[]) => sent.filter((m): m is Metrics => m.type === "metrics");
const timesOf = (frames: Metrics[]) => frames.flatMap((m) => m.payload.ticks.map((t) => t.t));
const uuidOf = (i: number) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}`;
/** A tick of `vms` synthetic VMs, as a previous run of the agent left it in its spool file. */
const spooledTick = (t: number, vms: number): MetricsTick => ({
  t,
  vms: Array.from({ length: vms }, (_, i) => ({
    vmId: uuidOf(i),
    cpuPct: i % 100,
    memUsedMiB: 64,
    memAssignedMiB: 64,
    diskReadBps: null,
    diskWriteBps: null,
    diskReadOps: null,
    diskWriteOps: null,
    netRxBps: null,
    netTxBps: null,
  })),
});

function samplerWith(opts: Partial<MetricsSamplerOptions>, features = ["metrics", "metricsAck"]) {
  const dir = tempDir("qx-metrics-ack-");
  dirs.push(dir);
  const spoolFile = join(dir, "metrics-unsent.jsonl");
  const libvirt = new Libvirt(TEST_URI, silentLog);
  const rec = recorder();
  const make = (more: Partial<MetricsSamplerOptions> = {}) => {
    const sampler = new MetricsSampler({
      libvirt,
      intervalMs: 10_000,
      log: silentLog,
      send: rec.send,
      peerFeatures: () => new Set(features),
      hostCpus: 4,
      batchTicks: 3,
      paceBytesPerSecond: 1e9,
      spoolFile,
      ...opts,
      ...more,
    });
    opened.push({ libvirt, sampler });
    return sampler;
  };
  const spooled = () => readFileSync(spoolFile, "utf8").split("\n").filter(Boolean).length;
  return { make, sent: rec.sent, spoolFile, spooled };
}

/** A tick, a few ms after the last one (figures are differences between two ticks). */
async function tick(sampler: MetricsSampler) {
  await sleep(20);
  await sampler.sampleNow();
}

describe("metrics sampler, acknowledged batches", () => {
  it("names a batch in its frames, marks the last, and keeps its ticks (and their spool lines) until stored", async () => {
    const { make, sent, spoolFile, spooled } = samplerWith({});
    // A previous run left four ticks of a 1,000-VM host: with this run's first, a batch of three frames.
    const now = Date.now();
    writeFileSync(
      spoolFile,
      [3, 2, 1, 0].map((k) => `${JSON.stringify(spooledTick(now - k * 10_000 - 5_000, 1000))}\n`).join(""),
    );
    const sampler = make();
    await sampler.sampleNow(); // counters only
    await tick(sampler);
    await sampler.idle();
    const frames = metricsOf(sent);
    expect(frames.map((m) => m.payload.ticks.length)).toEqual([3, 2]);
    const id = frames[0].payload.batch?.id;
    expect(id).toBeTruthy();
    expect(frames.map((m) => m.payload.batch)).toEqual([
      { id, last: false },
      { id, last: true },
    ]);
    expect(sampler.counts()).toMatchObject({ metricsPending: 0, metricsInFlight: 5 });
    expect(spooled()).toBe(5); // a restart now would send them again

    sampler.stored("another batch");
    expect(sampler.counts()).toMatchObject({ metricsInFlight: 5 });
    sampler.stored(id!);
    expect(sampler.counts()).toMatchObject({ metricsInFlight: 0 });
    expect(spooled()).toBe(0);
  });

  it("sends a batch again, before newer ticks, when its link dropped or no answer came", async () => {
    const { make, sent } = samplerWith({ ackWaitMs: 400 });
    const sampler = make();
    await sampler.sampleNow(); // counters only
    for (let i = 0; i < 3; i++) await tick(sampler);
    await sampler.idle();
    const first = metricsOf(sent);
    expect(first).toHaveLength(1);
    expect(first[0].payload.batch?.last).toBe(true);

    // The link drops before the answer: the batch's ticks are pending again, and go first.
    sampler.linkLost();
    expect(sampler.counts()).toMatchObject({ metricsInFlight: 0, metricsPending: 3 });
    await tick(sampler);
    await sampler.idle();
    const again = metricsOf(sent).slice(1);
    expect(again).toHaveLength(1);
    expect(again[0].payload.batch?.id).not.toBe(first[0].payload.batch?.id);
    const resent = timesOf(again);
    expect(resent.slice(0, 3)).toEqual(timesOf(first));
    expect(resent).toHaveLength(4);
    expect(resent).toEqual([...resent].sort((a, b) => a - b));

    // Nobody answers that one either: past the wait, the next tick sends it again.
    await sleep(500);
    await tick(sampler);
    await sampler.idle();
    const third = metricsOf(sent).slice(2);
    expect(timesOf(third).slice(0, 4)).toEqual(resent);
    sampler.stored(third.at(-1)!.payload.batch!.id);
    expect(sampler.counts()).toMatchObject({ metricsInFlight: 0 });
  });

  it("ends an hour-long batch on the hour of the control plane's clock", async () => {
    const hour = Math.floor(Date.now() / 3_600_000) * 3_600_000;
    let clock = hour - 40_000;
    const { make, sent } = samplerWith({ batchTicks: 360, serverNow: () => clock });
    const sampler = make();
    await sampler.sampleNow(); // counters only
    for (const at of [hour - 30_000, hour - 20_000, hour - 10_000]) {
      clock = at;
      await tick(sampler);
    }
    expect(metricsOf(sent)).toEqual([]);
    clock = hour + 200;
    await tick(sampler);
    await sampler.idle();
    expect(timesOf(metricsOf(sent))).toEqual([hour - 30_000, hour - 20_000, hour - 10_000]);
    expect(sampler.counts()).toMatchObject({ metricsPending: 1, metricsInFlight: 3 });
  });

  it("to a control plane that does not acknowledge, sends no batch and forgets ticks once sent", async () => {
    const { make, sent, spooled } = samplerWith({}, ["metrics"]);
    const sampler = make();
    await sampler.sampleNow(); // counters only
    for (let i = 0; i < 3; i++) await tick(sampler);
    await sampler.idle();
    const frames = metricsOf(sent);
    expect(frames).toHaveLength(1);
    expect(frames[0].payload).not.toHaveProperty("batch");
    expect(sampler.counts()).toMatchObject({ metricsPending: 0, metricsInFlight: 0 });
    expect(spooled()).toBe(0);
  });
});
