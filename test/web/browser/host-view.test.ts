// The host view in Chromium: an agent run with --listen serves host.html and the dashboard's VM
// list, Monitoring and Logs tabs against its local API (/api/v1, the agent's host token, kept for the browser
// session only; the node credential is refused), and keeps reading logs with the control plane stopped;
// axe-core finds nothing serious on it in either theme.
import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { freePort, type ControlPlane } from "../../support/control-plane.ts";
import { expectAccessible } from "./axe.ts";
import { FIXTURE_XML, PAYLOADS, VMS, WEB_LOG_LAST_LINE, writeFixtureLogs } from "./fixture-logs.ts";
import {
  enrollAgent,
  startControlPlaneAndChromium,
  newContext,
  screenshot,
  watchPage,
  type AgentProcess,
} from "./harness.ts";

let cp: ControlPlane;
let agent: AgentProcess;
let browser: Browser;
const ROOT = resolve(import.meta.dirname, "../../..");
let dir: string;
let stateDir: string;
let logDir: string;
let hostUrl: string;
let credential: string;
let hostToken: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "qx-host-"));
  logDir = join(dir, "logs");
  writeFixtureLogs(logDir);
  ({ cp, browser } = await startControlPlaneAndChromium());
  const port = await freePort();
  hostUrl = `http://127.0.0.1:${port}`;
  stateDir = join(dir, "state");
  ({ agent } = await enrollAgent(cp, "edge-host-01", {
    stateDir,
    libvirtUri: `test://${FIXTURE_XML}`,
    logDir,
    vmCount: 6,
    listen: `127.0.0.1:${port}`,
  }));
  credential = (JSON.parse(readFileSync(join(stateDir, "node.json"), "utf8")) as { credential: string }).credential;
  hostToken = readFileSync(join(stateDir, "host-token"), "utf8").trim();
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await agent?.stop();
  await cp?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("host view served by the agent", () => {
  it("signs in with the host token (the node credential is refused), lists the host's VMs and reads a log as text, also with the control plane down", async () => {
    const context = await newContext(browser, hostUrl);
    const page = await context.newPage();
    const watch = watchPage(page);
    page.on("request", (req) => {
      if (req.url().includes(credential) || req.url().includes(hostToken))
        watch.problems.push(`a secret in a URL: ${req.url()}`);
    });
    const res = await page.goto(hostUrl + "/");
    expect(res!.headers()["content-security-policy"]).toContain("script-src 'self'");
    expect(await page.title()).toContain("host view");
    expect(await page.getByTestId("sign-in").textContent()).toContain("host-token");

    for (const refused of ["not-the-token", credential]) {
      await page.getByTestId("sign-in-token").fill(refused);
      await page.getByRole("button", { name: "Sign in" }).click();
      await expect.poll(() => page.getByTestId("sign-in-error").textContent()).toContain("refused");
      expect(await page.getByTestId("sign-in").count()).toBe(1);
    }
    await page.getByTestId("sign-in-token").fill(hostToken);
    await page.getByRole("button", { name: "Sign in" }).click();

    const rows = page.locator("tr[data-vm-name]");
    await expect.poll(() => rows.count()).toBe(6);
    const names = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-vm-name")));
    expect(names.sort()).toEqual(
      Object.values(VMS)
        .map((v) => v.name)
        .sort(),
    );
    expect(await page.locator(`tr[data-vm-name="${VMS.crashy.name}"]`).getByTestId("vm-state").textContent()).toBe(
      "ERROR",
    );
    expect(await page.locator(`tr[data-vm-name="${VMS.oddName.name}"] button`).textContent()).toBe(VMS.oddName.name);

    await page.getByTestId("vm-state-filter").selectOption("ERROR");
    await expect.poll(() => rows.count()).toBe(1);
    await page.getByTestId("vm-state-filter").selectOption("");
    await page.getByTestId("vm-search").fill("web");
    await expect.poll(() => rows.count()).toBe(1);
    await page.locator(`tr[data-vm-name="${VMS.web.name}"]`).getByRole("button").click();
    const view = page.getByTestId("log-view");
    await view.getByText(WEB_LOG_LAST_LINE).waitFor();
    expect(await page.getByTestId("host-selected-vm").textContent()).toBe(VMS.web.name);
    expect(await page.getByTestId("log-path").textContent()).toMatch(/web-01\.log$/);
    expect(await view.locator("[data-line]", { hasText: "No space left on device" }).getAttribute("data-level")).toBe(
      "error",
    );
    for (const payload of PAYLOADS) expect(await view.locator("[data-line]", { hasText: payload }).count()).toBe(1);
    expect(await view.locator("script, img, svg, iframe").count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: string }).__pwned)).toBeUndefined();
    await screenshot(page, "host-view");

    // The control plane out of reach: the host still reads its logs.
    await cp.stop();
    appendFileSync(
      join(logDir, `${VMS.web.name}.log`),
      "2026-11-25 10:08:00.000+0000: written while the control plane is down\n",
    );
    // virtlogd's rotated files: the last lines continue into .1; a compressed .2 is named, not read.
    writeFileSync(
      join(logDir, `${VMS.web.name}.log.1`),
      "2026-11-24 09:00:00.000+0000: a line from the rotated file\n",
    );
    writeFileSync(join(logDir, `${VMS.web.name}.log.2.gz`), "\x1f\x8b compressed by logrotate");
    await page.getByTestId("log-refresh").click();
    await view.getByText("written while the control plane is down").waitFor();
    await view.getByText("a line from the rotated file").waitFor();
    expect(await page.getByTestId("log-files").textContent()).toBe("web-01.log, web-01.log.1");
    expect(await page.getByTestId("log-skipped").textContent()).toBe("web-01.log.2.gz (compressed)");
    // No live follow or last-known log here: those come from the control plane.
    expect(await page.getByTestId("log-follow").count()).toBe(0);

    // The Monitoring tab from the agent's own samples (two ticks of its 10 s interval), control plane still down.
    await page.getByTestId("host-tab-monitoring").click();
    const cpu = page.getByTestId("metric-chart-cpu");
    await cpu.locator("canvas").waitFor();
    await expect
      .poll(
        () =>
          page.evaluate(
            () => document.querySelector("[data-testid=metrics-panel] [data-testid=metrics-empty]") === null,
          ),
        { timeout: 45_000, interval: 1_000 },
      )
      .toBe(true);
    expect(await page.getByTestId("metrics-panel").getAttribute("data-range")).toBe("1h");
    await screenshot(page, "host-view-monitoring");

    expect(watch.problems).toEqual([]);
    expect(watch.dialogs).toEqual([]);
    await context.close();
  }, 150_000);

  it("keeps the host token for the browser session only: a reload stays signed in, a new tab or a rotated token asks again", async () => {
    const context = await newContext(browser, hostUrl);
    const page = await context.newPage();
    const watch = watchPage(page);
    await page.goto(hostUrl + "/");
    // What an earlier version left behind: the node credential in localStorage. It goes at load.
    await page.evaluate((c) => localStorage.setItem("qx.host.credential", c), credential);
    await page.reload();
    await page.getByTestId("sign-in-token").fill(hostToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    const rows = page.locator("tr[data-vm-name]");
    await expect.poll(() => rows.count()).toBe(6);

    const stored = () =>
      page.evaluate(() => ({
        local: Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)]),
        session: Object.keys(sessionStorage).map((k) => [k, sessionStorage.getItem(k)]),
      }));
    const kept = await stored();
    expect(kept.session).toContainEqual(["qx.host.token", hostToken]);
    expect(JSON.stringify(kept.local)).not.toContain(hostToken);
    expect(JSON.stringify(kept.local)).not.toContain(credential);

    await page.reload();
    await expect.poll(() => rows.count()).toBe(6);
    expect(await page.getByTestId("sign-in").count()).toBe(0);

    // sessionStorage belongs to one tab: a second tab of the same browser signs in on its own.
    const other = await context.newPage();
    await other.goto(hostUrl + "/");
    await other.getByTestId("sign-in-token").waitFor();

    // Rotated on the host while signed in: the next request is refused and the view asks again.
    await new Promise<void>((resolve, reject) => {
      const cmd = spawn(
        process.execPath,
        [join(ROOT, "agent/main.ts"), "--rotate-host-token", "--state-dir", stateDir],
        { stdio: "ignore" },
      );
      cmd.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`--rotate-host-token exited ${code}`))));
    });
    hostToken = readFileSync(join(stateDir, "host-token"), "utf8").trim();
    await page.getByTestId("vm-search").fill("web"); // any new request
    await page.getByTestId("sign-in-token").waitFor();
    expect((await stored()).session).not.toContainEqual(expect.arrayContaining(["qx.host.token"]));

    expect(watch.problems).toEqual([]);
    await context.close();
  }, 90_000);

  it("has no serious or critical axe-core violation on its sign-in, VM list and tabs, in both themes", async () => {
    for (const theme of ["light", "dark"] as const) {
      const context = await newContext(browser, hostUrl, theme);
      const page = await context.newPage();
      const watch = watchPage(page);
      await page.goto(hostUrl + "/");
      await page.getByTestId("sign-in-token").waitFor();
      await expectAccessible(page, `host view sign-in · ${theme}`);
      await page.getByTestId("sign-in-token").fill(hostToken);
      await page.getByRole("button", { name: "Sign in" }).click();
      await expect.poll(() => page.locator("tr[data-vm-name]").count()).toBe(6);
      await expectAccessible(page, `host view VMs · ${theme}`);
      await page.locator(`tr[data-vm-name="${VMS.web.name}"]`).getByRole("button").click();
      await page.getByTestId("log-view").getByText(WEB_LOG_LAST_LINE).waitFor();
      await expectAccessible(page, `host view QEMU log tab · ${theme}`);
      // The tabs by keyboard: the arrow key moves to Monitoring and selects it.
      await page.getByRole("tab", { name: "QEMU log" }).focus();
      await page.keyboard.press("ArrowLeft");
      await page.getByTestId("metrics-panel").waitFor();
      expect(await page.getByRole("tab", { selected: true }).textContent()).toBe("Monitoring");
      await expectAccessible(page, `host view Monitoring tab · ${theme}`);
      expect(watch.problems).toEqual([]);
      await context.close();
    }
  }, 90_000);
});
