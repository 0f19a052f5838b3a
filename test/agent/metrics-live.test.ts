// The sampler's live mode on libvirt's test driver: while a `metrics.live` lease runs, each tick goes
// out as it is taken (what was pending first, at once); when the lease ends or the link asks it to,
// ticks go back into minute batches; a VM first seen while live has its figures a moment later, not
// a whole interval later. Ticks the link did not take are kept, and across a restart in a spool file.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { MetricsSampler } from "../../agent/host/metrics.ts";
import type { AgentMessage } from "../../protocol/wire.ts";
import { TEST_URI, VMS, recorder, silentLog } from "./helpers.ts";

const opened: { libvirt: Libvirt; sampler: MetricsSampler }[] = [];
afterEach(async () => {
  for (const { libvirt, sampler } of opened.splice(0)) {
    sampler.stop();
    await libvirt.close();
  }
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Ticks per `metrics` frame sent so far, in order. */
const ticksPerFrame = (sent: AgentMessage[]) =>
  sent.map((m) => (m.type === "metrics" ? m.payload.ticks.length : Number.NaN));

function samplerOn(intervalMs: number) {
  const libvirt = new Libvirt(TEST_URI, silentLog);
  const rec = recorder();
  const sampler = new MetricsSampler({
    libvirt,
    intervalMs,
    log: silentLog,
    send: rec.send,
    peerFeatures: () => new Set(["metrics"]),
    hostCpus: 4,
  });
  opened.push({ libvirt, sampler });
  return { sampler, sent: rec.sent };
}

/** A tick, a few ms after the last one (figures are differences between two ticks). */
async function tick(sampler: MetricsSampler) {
  await sleep(20);
  await sampler.sampleNow();
}

describe("metrics sampler, live while watched", () => {
  it("sends what was pending at once, then each tick as it is taken; batches again once the lease ends", async () => {
    const { sampler, sent } = samplerOn(10_000);
    await sampler.sampleNow(); // counters only
    await tick(sampler);
    await tick(sampler);
    expect(sent).toEqual([]); // two ticks of a batch of six

    sampler.live(60_000);
    expect(ticksPerFrame(sent)).toEqual([2]);
    await tick(sampler);
    await tick(sampler);
    expect(ticksPerFrame(sent)).toEqual([2, 1, 1]);
    const times = sent.flatMap((m) => (m.type === "metrics" ? m.payload.ticks.map((t) => t.t) : []));
    expect(new Set(times).size).toBe(times.length); // no tick sent twice

    // The link that asked went away: batches again, whatever the lease said.
    sampler.endLive();
    for (let i = 0; i < 5; i++) await tick(sampler);
    expect(ticksPerFrame(sent)).toEqual([2, 1, 1]);
    await tick(sampler);
    expect(ticksPerFrame(sent)).toEqual([2, 1, 1, 6]);

    // A short lease runs out on its own: the agent needs no word to go back to batches. Long enough
    // for one tick on a slow machine; then waited out by the clock, whatever the tick took.
    const leaseEnds = Date.now() + 3_000;
    sampler.live(3_000);
    await tick(sampler);
    expect(ticksPerFrame(sent)).toEqual([2, 1, 1, 6, 1]);
    await sleep(Math.max(0, leaseEnds - Date.now()) + 50);
    for (let i = 0; i < 5; i++) await tick(sampler);
    expect(ticksPerFrame(sent)).toEqual([2, 1, 1, 6, 1]);
    await tick(sampler);
    expect(ticksPerFrame(sent)).toEqual([2, 1, 1, 6, 1, 6]);
  });

  it("while live, VMs first seen get their figures a moment later, not a whole interval later", async () => {
    // A minute between ticks: without live mode nothing would be sent for six minutes.
    const { sampler, sent } = samplerOn(60_000);
    sampler.live(60_000);
    sampler.start(); // the first tick only reads counters: every running VM is new to it
    await expect.poll(() => sent.length, { timeout: 30_000 }).toBeGreaterThan(0);
    const [frame] = sent;
    if (frame?.type !== "metrics") throw new Error(`expected a metrics frame, got ${frame?.type}`);
    expect(frame.payload.ticks).toHaveLength(1);
    expect(frame.payload.ticks[0].vms.map((v) => v.vmId).sort()).toEqual([VMS.running.uuid, VMS.blocked.uuid].sort());
    expect(frame.payload.ticks[0].vms.every((v) => v.cpuPct !== null)).toBe(true);
  });

  it("a lease given while batching takes a tick at once, so a chart opened mid-interval fills now", async () => {
    const { sampler, sent } = samplerOn(60_000);
    sampler.start();
    await expect.poll(() => sampler.counts().metricsPrevious).toBeGreaterThan(0); // the first tick: counters only
    expect(sent).toEqual([]);
    sampler.live(60_000);
    await expect.poll(() => sent.length, { timeout: 30_000 }).toBe(1);
    expect(ticksPerFrame(sent)).toEqual([1]);
  });

  it("keeps the ticks a dropped link did not take, and across a restart in its spool file; a batch sent empties the file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "qx-metrics-spool-"));
    try {
      const spoolFile = join(dir, "metrics-unsent.jsonl");
      const libvirt = new Libvirt(TEST_URI, silentLog);
      let linkUp = false;
      const sent: AgentMessage[] = [];
      const samplerOfThisRun = () => {
        const sampler = new MetricsSampler({
          libvirt,
          intervalMs: 10_000,
          log: silentLog,
          send: (m) => linkUp && sent.push(m) > 0,
          peerFeatures: () => new Set(["metrics"]),
          hostCpus: 4,
          batchTicks: 3,
          spoolFile,
        });
        opened.push({ libvirt: libvirt, sampler });
        return sampler;
      };
      const before = samplerOfThisRun();
      await before.sampleNow(); // counters only
      for (let i = 0; i < 4; i++) await tick(before); // a batch is due, but the link is down
      expect(sent).toEqual([]);
      expect(readFileSync(spoolFile, "utf8").trim().split("\n")).toHaveLength(4);

      // The agent restarts, and its link comes up: the new run sends what the last one kept first.
      opened.pop();
      const after = samplerOfThisRun();
      linkUp = true;
      await after.sampleNow(); // counters only
      expect(sent).toEqual([]);
      await tick(after);
      const times = sent.flatMap((m) => (m.type === "metrics" ? m.payload.ticks.map((t) => t.t) : []));
      expect(times).toHaveLength(5);
      expect(new Set(times).size).toBe(5);
      expect(times).toEqual([...times].sort((a, b) => a - b));
      expect(readFileSync(spoolFile, "utf8")).toBe("");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
