// The Monitoring tab in Chromium against the real control plane and a real agent on libvirt's test
// driver (whose CPU time is synthetic: libvirt reports the wall clock), sampling every second: charts
// drawn from the agent's samples, values under the cursor, the range switch, node totals.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import { startDashboard, type DashboardFixture } from "./fixture.ts";
import { VMS } from "./fixture-logs.ts";
import { screenshot, until } from "./harness.ts";

let f: DashboardFixture;

beforeAll(async () => {
  // The agent inherits this: a sample a second instead of every 10 s, so charts fill within the test.
  process.env.QX_METRICS_INTERVAL_MS = "1000";
  process.env.QX_METRICS_BATCH_MS = "6000"; // and a batch every 6 s, not an hour, for charts read unwatched
  f = await startDashboard({ tmpPrefix: "qx-web-metrics-", nodeName: "edge-metrics-01" });
}, 180_000);

afterAll(() => f?.dispose());

/** Pixels of the chart's canvas in the CPU line's colour (#0891b2), which nothing but the series is drawn in: a few mean the line (or, for one sample, its point) is drawn. */
const linePixels = (page: Page, testId: string) =>
  page
    .getByTestId(testId)
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

describe("Monitoring tab in Chromium", () => {
  it("sits between Events and Logs, draws the VM's charts with values under the cursor, and switches range", async () => {
    const s = await f.signedIn();
    const { page } = s;
    await page.goto(`${f.cp.url}/vms/${VMS.web.id}/monitoring`);
    await page.getByTestId("metrics-panel").waitFor();
    expect(await page.getByRole("tab").allTextContents()).toEqual(["Events", "Monitoring", "Logs", "Console"]);
    expect(await page.getByRole("tab", { name: "Monitoring" }).getAttribute("aria-selected")).toBe("true");
    expect(await page.getByTestId("metrics-range-1h").getAttribute("aria-pressed")).toBe("true");

    // The tab refetches every 10 s; samples come every second once the agent has two ticks.
    await until("a CPU line drawn", async () => (await linePixels(page, "metric-chart-cpu")) > 3, 60_000);
    for (const id of ["metric-chart-memory", "metric-chart-disk", "metric-chart-disk-ops", "metric-chart-network"])
      await page.getByTestId(id).locator("canvas").waitFor();

    // Hover: the legend shows the value under the cursor.
    const over = page.getByTestId("metric-chart-cpu").locator(".u-over");
    const box = (await over.boundingBox())!;
    await page.mouse.move(box.x + box.width - 3, box.y + box.height / 2);
    const value = page.getByTestId("metric-chart-cpu").locator(".u-legend .u-series").nth(1).locator(".u-value");
    await until("a hover value", async () => /\d+(\.\d)? %/.test((await value.textContent()) ?? ""), 5_000);
    await screenshot(page, "monitoring-vm-1h");

    // The range switch asks for the new range and shows it.
    const asked = page.waitForResponse(
      (r) => r.url().includes(`/api/vms/${VMS.web.id}/metrics?range=24h`) && r.status() === 200,
    );
    await page.getByTestId("metrics-range-24h").click();
    await asked;
    await until(
      "the 24h range shown",
      async () => (await page.getByTestId("metrics-panel").getAttribute("data-range")) === "24h",
    );
    expect(await page.getByTestId("metrics-range-24h").getAttribute("aria-pressed")).toBe("true");
    expect(await page.getByTestId("metrics-range-1h").getAttribute("aria-pressed")).toBe("false");
    // The 24h range averages into 1-minute points, a few pixels apart on a day's axis: the chart
    // draws them as points while they are that close, so the samples so far show at once (the
    // range's chart is read again only each minute).
    await until("the 24h CPU drawn", async () => (await linePixels(page, "metric-chart-cpu")) > 3, 30_000);
    f.expectClean(s);
  }, 150_000);

  it("shows the node's totals under the nodes list", async () => {
    const s = await f.signedIn();
    const { page } = s;
    await page.goto(`${f.cp.url}/nodes`);
    const totals = page.getByTestId("node-totals");
    await totals.getByText("CPU (% of the host's CPUs)").waitFor();
    await until("the node's CPU line drawn", async () => (await linePixels(page, "metric-chart-cpu")) > 3, 60_000);
    await screenshot(page, "monitoring-node-totals");
    f.expectClean(s);
  }, 120_000);
});
