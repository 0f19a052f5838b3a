// The dashboard's Logs tab in Chromium against the real control plane and a real agent on libvirt's
// test driver: highlighted lines and help, payloads shown as text, refresh and auto-refresh, the
// line selector, copy and download, and a 10,000-line log rendered virtualized.
import { appendFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../../support/control-plane.ts";
import { startDashboard, type DashboardFixture, type Session } from "./fixture.ts";
import { PAYLOADS, VMS, WEB_LOG_LAST_LINE } from "./fixture-logs.ts";
import { screenshot } from "./harness.ts";

let f: DashboardFixture;
let cp: ControlPlane;
let logDir: string;

beforeAll(async () => {
  f = await startDashboard({ tmpPrefix: "qx-web-logs-", nodeName: "edge-logs-01" });
  ({ cp, logDir } = f);
}, 180_000);

afterAll(() => f?.dispose());

const signedIn = (token: string, opts: { colorScheme?: "light" | "dark" } = {}): Promise<Session> =>
  f.signedIn(token, opts);
const expectClean = (s: Session) => f.expectClean(s);

describe("Logs tab in Chromium", () => {
  it("Logs tab: highlighted lines, facts, help, payloads as text, refresh, auto-refresh, copy and download", async () => {
    const s = await signedIn(cp.adminToken);
    const { page } = s;
    await page.goto(`${cp.url}/vms/${VMS.web.id}/logs`);
    const view = page.getByTestId("log-view");
    await view.getByText(WEB_LOG_LAST_LINE).waitFor();
    expect(await page.getByTestId("log-path").textContent()).toMatch(/web-01\.log$/);
    expect(await page.getByTestId("log-lines").inputValue()).toBe("100");
    expect(await page.getByTestId("log-lines").locator("option").allTextContents()).toEqual([
      "50",
      "100",
      "200",
      "500",
      "1000",
    ]);
    expect(await page.getByTestId("log-lines-returned").textContent()).toContain("whole file");

    // Colours come from the classification: error red, warning yellow, the rest plain.
    expect(await view.locator("[data-line]", { hasText: "No space left on device" }).getAttribute("data-level")).toBe(
      "error",
    );
    expect(await view.locator("[data-line]", { hasText: "terminating on signal 15" }).getAttribute("data-level")).toBe(
      "error",
    );
    expect(
      await view.locator("[data-line]", { hasText: "warning: host doesn't support" }).getAttribute("data-level"),
    ).toBe("warning");
    expect(await view.locator("[data-line]", { hasText: "char device redirected" }).getAttribute("data-level")).toBe(
      "normal",
    );
    expect(await view.locator("[data-line]", { hasText: "-blockdev" }).getAttribute("data-level")).toBe("normal");
    const errorColor = await view
      .locator('[data-level="error"]')
      .first()
      .evaluate((el) => getComputedStyle(el).color);
    const warningColor = await view
      .locator('[data-level="warning"]')
      .first()
      .evaluate((el) => getComputedStyle(el).color);
    const normalColor = await view
      .locator('[data-level="normal"]')
      .first()
      .evaluate((el) => getComputedStyle(el).color);
    expect(new Set([errorColor, warningColor, normalColor]).size).toBe(3);
    for (const id of ["disk_full", "killed_by_signal", "timeout"])
      expect(await page.locator(`[data-issue="${id}"]`).getAttribute("data-detected")).toBe("true");
    expect(await page.locator('[data-issue="permission_denied"]').getAttribute("data-detected")).toBe("false");
    // Each issue found is listed once, in order, with its one-line explanation.
    const found = page.getByTestId("log-issues").locator("[data-found-issue]");
    expect(await found.evaluateAll((els) => els.map((el) => el.getAttribute("data-found-issue")))).toEqual([
      "disk_full",
      "timeout",
      "killed_by_signal",
    ]);
    expect(await found.first().textContent()).toContain("free space in the image's storage pool");

    // HTML and script in the log: literal text, no element made from it, nothing run.
    for (const payload of PAYLOADS) expect(await view.locator("[data-line]", { hasText: payload }).count()).toBe(1);
    expect(await view.locator("script, img, svg, iframe").count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: string }).__pwned)).toBeUndefined();
    await screenshot(page, "logs");

    // Copy and download carry exactly the text the agent read.
    const file = join(logDir, `${VMS.web.name}.log`);
    await page.getByTestId("log-copy").click();
    await expect.poll(() => page.getByTestId("log-copy").textContent()).toBe("Copied");
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(readFileSync(file, "utf8"));
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("log-download").click()]);
    expect(download.suggestedFilename()).toBe("web-01-qemu.log");
    expect(readFileSync(await download.path(), "utf8")).toBe(readFileSync(file, "utf8"));

    // Refresh reads the file again.
    appendFileSync(file, "2026-11-25 10:06:00.000+0000: appended before refresh\n");
    await page.getByTestId("log-refresh").click();
    await view.getByText("appended before refresh").waitFor();

    // Auto-refresh every 5 s picks up new lines with no click.
    await page.getByTestId("log-autorefresh").check();
    appendFileSync(file, "2026-11-25 10:07:00.000+0000: appended for auto-refresh\n");
    await view.getByText("appended for auto-refresh").waitFor({ timeout: 12_000 });
    await page.getByTestId("log-autorefresh").uncheck();

    // No log for this VM on its host: said plainly.
    await page.goto(`${cp.url}/vms/${VMS.crashy.id}/logs`);
    await expect.poll(() => page.getByTestId("logs-error").textContent()).toContain("No QEMU log");
    expectClean(s);
  }, 90_000);

  it("Logs tab: the line selector changes what is read; auto-refresh follows the bottom only while the reader is there", async () => {
    const s = await signedIn(cp.adminToken, { colorScheme: "dark" });
    const { page } = s;
    const file = join(logDir, `${VMS.bigLog.name}.log`);
    await page.goto(`${cp.url}/vms/${VMS.bigLog.id}/logs`);
    const view = page.getByTestId("log-view");
    await expect.poll(() => page.getByTestId("log-lines-returned").textContent()).toContain("100 (truncated");
    await page.getByTestId("log-lines").selectOption("1000");
    await expect.poll(() => page.getByTestId("log-lines-returned").textContent()).toContain("1000 (truncated");
    await view.locator('[data-line="1000"]').waitFor();
    expect(await view.locator('[data-line="1000"]').textContent()).toContain("line 12000 ");
    const atBottom = () => view.evaluate((el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 30);
    await expect.poll(atBottom).toBe(true);
    await screenshot(page, "logs-dark");

    await page.getByTestId("log-autorefresh").check();
    // At the bottom: new lines scroll into view.
    appendFileSync(file, "2026-11-25T11:00:00.000000Z line 12001 followed\n");
    await view.getByText("line 12001 followed").waitFor({ timeout: 12_000 });
    await expect.poll(atBottom).toBe(true);
    // Scrolled up: the reader keeps their place while new lines arrive.
    await view.evaluate((el) => (el.scrollTop = 0));
    await view.dispatchEvent("scroll");
    const fetched = await page.getByTestId("log-fetched-at").textContent();
    appendFileSync(file, "2026-11-25T11:00:01.000000Z line 12002 not followed\n");
    await expect.poll(() => page.getByTestId("log-fetched-at").textContent(), { timeout: 12_000 }).not.toBe(fetched);
    await expect.poll(() => view.locator('[data-line="1000"]').count()).toBe(0); // not rendered: still at the top
    expect(await view.evaluate((el) => el.scrollTop)).toBeLessThan(50);
    await page.getByTestId("log-autorefresh").uncheck();
    expectClean(s);
  }, 90_000);

  it("renders 10,000 log lines virtualized and scrolls through them quickly", async () => {
    const s = await signedIn(cp.adminToken);
    const { page } = s;
    await page.goto(`${cp.url}/vms/${VMS.bigLog.id}/logs?lines=10000`);
    const view = page.getByTestId("log-view");
    await expect
      .poll(() => page.getByTestId("log-lines-returned").textContent(), { timeout: 20_000 })
      .toContain("10000 (truncated");
    await view.locator('[data-line="10000"]').waitFor();
    expect(await view.locator("[data-line]").count()).toBeLessThan(200); // only what is on screen (+ overscan)
    const elapsed = await view.evaluate(async (el) => {
      const started = performance.now();
      for (const fraction of [0, 0.25, 0.5, 0.75, 0.1, 0.9]) {
        el.scrollTop = fraction * el.scrollHeight;
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      }
      return performance.now() - started;
    });
    expect(elapsed).toBeLessThan(3_000);
    const line = Math.round(0.9 * 10_000);
    await expect.poll(() => view.locator(`[data-line="${line}"]`).count()).toBe(1);
    await screenshot(page, "logs-10k");
    expectClean(s);
  }, 90_000);
});
