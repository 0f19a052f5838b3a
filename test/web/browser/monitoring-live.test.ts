// The Monitoring tab kept live while open, in Chromium as a viewer, against the real control plane
// and a real agent on libvirt's test driver sampling at its shipped 10 s, whose link runs through a
// recording relay: a VM started a few seconds before the tab opens shows its first samples within
// about 10 s; the agent is asked for live samples and sends a tick per frame while the tab is open;
// the history stays right across an agent restart and an offline stretch (the stretch a gap, no tick
// stored twice, none sent twice unless its link dropped before acknowledging it); once the tab is
// gone the agent sends batches of ticks again. The restarted agent samples every 2 s, so that its
// batch of six ticks comes in 12 s rather than a minute (the 1 h chart's steps are 10 s whatever the
// interval, so the gap's length is the same).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import type { MetricsAnswer, MetricsTick } from "../../../protocol/metrics.ts";
import type { ControlPlane } from "../../support/control-plane.ts";
import { FrameTap, type TappedFrame } from "../../support/frame-tap.ts";
import { FIXTURE_XML, VMS, writeFixtureLogs } from "./fixture-logs.ts";
import {
  newContext,
  startAgent,
  startControlPlaneAndChromium,
  until,
  watchPage,
  type AgentProcess,
  type PageWatch,
} from "./harness.ts";

/** Shut off in the fixture: started by the test. */
const FRESH = VMS.oddName;
/** Running in the fixture, so still running after the agent restarts (the test driver's state is
 *  the agent process's own, read from the fixture again at each start). */
const STEADY = VMS.web;
/** The restarted agent's sampling interval: short, so its batches come soon after the tab closes. */
const RESTARTED_INTERVAL_MS = 2_000;

let cp: ControlPlane;
let tap: FrameTap;
let agent: AgentProcess;
let browser: Browser;
let dir: string;
let nodeId: string;
let joinToken: string;

const agentArgs = () => ({
  server: tap.url,
  stateDir: join(dir, "state"),
  libvirtUri: `test://${FIXTURE_XML}`,
  logDir: join(dir, "logs"),
});

beforeAll(async () => {
  // The shipped sampling interval; quick reconnects after the relay's cut; WebSocket only, so every
  // frame crosses the relay.
  delete process.env.QX_METRICS_INTERVAL_MS;
  delete process.env.QX_METRICS_BATCH_MS;
  process.env.QX_BACKOFF_BASE = "200";
  process.env.QX_BACKOFF_CAP = "2000";
  process.env.QX_TRANSPORT = "websocket";
  dir = mkdtempSync(join(tmpdir(), "qx-web-live-"));
  writeFixtureLogs(join(dir, "logs"));
  ({ cp, browser } = await startControlPlaneAndChromium());
  tap = await FrameTap.start(cp.url);
  const res = await cp.api("/api/nodes", { method: "POST", json: { name: "edge-live-01" } });
  ({
    node: { id: nodeId },
    joinToken,
  } = (await res.json()) as { node: { id: string }; joinToken: string });
  agent = startAgent({ ...agentArgs(), token: joinToken });
  await until(
    "the agent online with its 6 VMs",
    async () => {
      const n = (await (await cp.api(`/api/nodes/${nodeId}`)).json()) as {
        node?: { connected: boolean; vmCount: number };
      };
      return n.node?.connected && n.node.vmCount >= 6;
    },
    60_000,
  );
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await agent?.stop();
  await tap?.close();
  await cp?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Pixels in the CPU line's colour (#0891b2) on the chart's canvas: a few mean a line or a point. */
const linePixels = (page: Page) =>
  page
    .getByTestId("metric-chart-cpu")
    .locator("canvas")
    .evaluate((canvas: HTMLCanvasElement) => {
      const { data } = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height);
      let n = 0;
      for (let i = 0; i < data.length; i += 4)
        if (
          Math.abs(data[i] - 8) < 40 &&
          Math.abs(data[i + 1] - 145) < 40 &&
          Math.abs(data[i + 2] - 178) < 40 &&
          data[i + 3] > 100
        )
          n++;
      return n;
    });

const metricsFrames = (since = 0) =>
  tap.frames.filter(
    (f): f is TappedFrame & { payload: { ticks: MetricsTick[] } } =>
      f.dir === "up" && f.type === "metrics" && f.at >= since,
  );
/** Times of the ticks that carried the VM, in every metrics frame the agent sent. */
const vmTickTimes = (vmId: string) =>
  metricsFrames().flatMap((f) => f.payload.ticks.filter((t) => t.vms.some((v) => v.vmId === vmId)).map((t) => t.t));
const askedLive = (conn: number) =>
  tap.frames.some((f) => f.dir === "down" && f.type === "metrics.live" && f.conn === conn);
/** The last connection has been asked for live samples and has sent one tick of the VM in a frame of its own. */
const liveOnLastConnection = (vmId: string) => {
  const conn = tap.connectionCount;
  return (
    askedLive(conn) &&
    metricsFrames().some(
      (f) => f.conn === conn && f.payload.ticks.length === 1 && f.payload.ticks[0].vms.some((v) => v.vmId === vmId),
    )
  );
};

async function signedInViewer(): Promise<{ page: Page; watch: PageWatch }> {
  const res = await cp.api("/api/tokens", { method: "POST", json: { name: "live viewer", role: "viewer" } });
  const { token } = (await res.json()) as { token: string };
  const page = await (await newContext(browser, cp.url)).newPage();
  const watch = watchPage(page);
  await page.goto(cp.url + "/");
  await page.getByTestId("sign-in-token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("signed-in-as").waitFor();
  return { page, watch };
}

describe("Monitoring tab kept live while open", () => {
  it("shows a just-started VM's first samples within about 10 s, keeps its history right across a restart and an offline gap, and lets the agent batch again once closed", async () => {
    const { page, watch } = await signedInViewer();
    const started = await cp.api(`/api/vms/${FRESH.id}/start?wait=true`, { method: "POST" });
    expect(started.status, await started.text()).toBeLessThan(300);
    await until("the VM running", async () => {
      const v = (await (await cp.api(`/api/vms/${FRESH.id}`)).json()) as { vm?: { state: string } };
      return v.vm?.state === "RUNNING";
    });
    await new Promise((r) => setTimeout(r, 3_000)); // "started a few seconds ago"

    const opened = Date.now();
    await page.goto(`${cp.url}/vms/${FRESH.id}/monitoring`);
    await until("the VM's CPU drawn", async () => (await linePixels(page)) > 0, 30_000);
    const firstSampleMs = Date.now() - opened;
    console.log(
      `first samples shown ${(firstSampleMs / 1000).toFixed(1)} s after the tab opened (sampling every 10 s)`,
    );
    // Batches alone would take up to a minute; live samples come within a tick and a poll.
    expect(firstSampleMs).toBeLessThan(20_000);
    expect(liveOnLastConnection(FRESH.id)).toBe(true);
    expect(await page.getByTestId("metrics-empty").count()).toBe(0);

    // A VM that keeps running through what follows, in the same open tab.
    await page.goto(`${cp.url}/vms/${STEADY.id}/monitoring`);
    await until("its CPU drawn", async () => (await linePixels(page)) > 0, 30_000);

    // When the test stopped or froze the agent on each link: an acknowledgement relayed after that
    // may never have been read by it.
    const stoppedAt = new Map<number, number>();
    // The agent restarts: its new link starts in batches, and the open tab's next poll makes it live again.
    stoppedAt.set(tap.connectionCount, Date.now());
    await agent.stop();
    process.env.QX_METRICS_INTERVAL_MS = String(RESTARTED_INTERVAL_MS);
    process.env.QX_METRICS_BATCH_MS = String(6 * RESTARTED_INTERVAL_MS); // unwatched, a batch of six ticks, not an hour's
    agent = startAgent(agentArgs());
    await until(
      "live samples on the restarted agent's link",
      async () => tap.connectionCount >= 2 && liveOnLastConnection(STEADY.id),
      60_000,
    );

    // The host goes dark for longer than two sample steps (its agent frozen, its link cut): no
    // samples exist for that stretch, so it must read as a gap; then live again. (A link cut alone
    // leaves the agent sampling, and the ticks it still holds reach the record once it is back.)
    const seen = vmTickTimes(STEADY.id).length;
    await until("the next tick", async () => vmTickTimes(STEADY.id).length > seen, 30_000);
    stoppedAt.set(tap.connectionCount, Date.now());
    agent.child.kill("SIGSTOP");
    tap.cut();
    await until("the node shown offline", async () => {
      const n = (await (await cp.api(`/api/nodes/${nodeId}`)).json()) as { node?: { connected: boolean } };
      return n.node?.connected === false;
    });
    await new Promise((r) => setTimeout(r, 30_000));
    const cutConnections = tap.connectionCount;
    tap.restore();
    agent.child.kill("SIGCONT");
    await until(
      "live samples after the gap",
      async () => tap.connectionCount > cutConnections && liveOnLastConnection(STEADY.id),
      60_000,
    );
    // A tick taken just before the freeze may reach the record only after it: the gap is the
    // longest step between the ticks, wherever that last one landed.
    const sorted = [...vmTickTimes(STEADY.id)].sort((a, b) => a - b);
    const widest = sorted
      .slice(1)
      .reduce((w, t, i) => (t - sorted[i] > w.after - w.before ? { before: sorted[i], after: t } : w), {
        before: 0,
        after: 0,
      });
    const { before, after } = widest;
    expect(after - before).toBeGreaterThan(30_000);

    // Every tick sent once, but for one whose link dropped before acknowledging it: the agent keeps a
    // batch until it is stored, so that one goes again on a later link (and is stored once).
    const ticks = vmTickTimes(STEADY.id);
    const sends = metricsFrames().flatMap((f) =>
      f.payload.ticks.filter((t) => t.vms.some((v) => v.vmId === STEADY.id)).map((t) => ({ t: t.t, f })),
    );
    const unacknowledged = (f: TappedFrame) =>
      !tap.frames.some(
        (d) =>
          d.dir === "down" &&
          d.type === "metrics.stored" &&
          d.conn === f.conn &&
          d.at >= f.at &&
          d.at < (stoppedAt.get(f.conn) ?? Infinity),
      );
    for (const [i, send] of sends.entries()) {
      const earlier = sends.slice(0, i).filter((e) => e.t === send.t);
      for (const e of earlier) {
        expect(e.f.conn, `tick ${send.t} sent twice on one link`).toBeLessThan(send.f.conn);
        expect(unacknowledged(e.f), `tick ${send.t} sent again after it was acknowledged`).toBe(true);
      }
    }
    // The history as the tab reads it: each tick in its own bucket, the gap a gap.
    const read = (await (await cp.api(`/api/vms/${STEADY.id}/metrics?range=1h`)).json()) as MetricsAnswer;
    const times = read.points.map((p) => p.t);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(new Set(times).size).toBe(times.length);
    const bucket = (t: number) => Math.floor(t / read.stepMs) * read.stepMs;
    const samples = read.points.filter((p) => p.cpuPct !== null).map((p) => p.t);
    expect(samples).toEqual([...new Set(ticks.filter((t) => t >= read.from).map(bucket))]);
    const gaps = read.points.filter((p) => p.cpuPct === null && p.memUsedMiB === null);
    expect(gaps.some((g) => g.t > before && g.t < after)).toBe(true);
    expect(watch.problems).toEqual([]);

    // The tab goes away without a word: the lease runs out and the agent batches again.
    const left = Date.now();
    await page.context().close();
    await until(
      "a metrics frame of several ticks",
      async () => metricsFrames(left).some((f) => f.payload.ticks.length > 1),
      90_000,
    );
    const frames = metricsFrames(left);
    console.log(
      `after the tab closed: ${frames.filter((f) => f.payload.ticks.length === 1).length} single-tick frames, then a batch of ${frames.at(-1)!.payload.ticks.length} ticks`,
    );
  }, 400_000);
});
