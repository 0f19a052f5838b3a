// The one setup of the dashboard's browser tests: a real control plane (wrangler dev), a real agent
// on libvirt's test driver with the fixture logs, Chromium, and sessions signed in through the
// sign-in form whose every request and WebSocket URL is checked for the token.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import type { ControlPlane } from "../../support/control-plane.ts";
import { FIXTURE_XML, writeFixtureLogs } from "./fixture-logs.ts";
import {
  enrollAgent,
  newContext,
  startControlPlaneAndChromium,
  watchPage,
  type AgentProcess,
  type PageWatch,
} from "./harness.ts";

export type Session = { page: Page; watch: PageWatch; token: string };

export type DashboardFixture = {
  cp: ControlPlane;
  agent: AgentProcess;
  nodeId: string;
  browser: Browser;
  dir: string;
  logDir: string;
  /** A fresh browser context on the dashboard's origin, closed with the fixture. */
  newContext(colorScheme?: "light" | "dark"): Promise<BrowserContext>;
  /** A fresh browser context signed in with `token` (the admin token by default). */
  signedIn(token?: string, opts?: { colorScheme?: "light" | "dark"; shiftClockMs?: number }): Promise<Session>;
  /** No token in a URL, no console errors or failed requests, no dialogs. */
  expectClean(s: { watch: PageWatch }): void;
  dispose(): Promise<void>;
};

export async function startDashboard(opts: {
  tmpPrefix: string;
  nodeName: string;
  start?: Parameters<typeof ControlPlane.start>[0];
  /** more logs for the agent to serve, written before it starts */
  prepareLogs?: (logDir: string) => void;
}): Promise<DashboardFixture> {
  const dir = mkdtempSync(join(tmpdir(), opts.tmpPrefix));
  const logDir = join(dir, "logs");
  writeFixtureLogs(logDir);
  opts.prepareLogs?.(logDir);
  let cp: ControlPlane;
  let browser: Browser;
  let enrolled: { nodeId: string; agent: AgentProcess };
  try {
    ({ cp, browser } = await startControlPlaneAndChromium(opts.start));
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  try {
    enrolled = await enrollAgent(cp, opts.nodeName, {
      stateDir: join(dir, "state"),
      libvirtUri: `test://${FIXTURE_XML}`,
      logDir,
      vmCount: 6,
    });
  } catch (err) {
    await browser.close();
    await cp.dispose();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const { nodeId, agent } = enrolled;
  const contexts: BrowserContext[] = [];

  const freshContext = async (colorScheme?: "light" | "dark") => {
    const context = await newContext(browser, cp.url, colorScheme);
    contexts.push(context);
    return context;
  };

  const signedIn: DashboardFixture["signedIn"] = async (token = cp.adminToken, o = {}) => {
    const context = await freshContext(o.colorScheme);
    const page = await context.newPage();
    const watch = watchPage(page);
    page.on("request", (req) => req.url().includes(token) && watch.problems.push(`token in a URL: ${req.url()}`));
    page.on(
      "websocket",
      (ws) => ws.url().includes(token) && watch.problems.push(`token in a WebSocket URL: ${ws.url()}`),
    );
    if (o.shiftClockMs) await page.clock.install({ time: Date.now() + o.shiftClockMs });
    await page.goto(cp.url + "/");
    await page.getByTestId("sign-in-token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByTestId("signed-in-as").waitFor();
    return { page, watch, token };
  };

  const expectClean = (s: { watch: PageWatch }) => {
    expect(s.watch.problems).toEqual([]);
    expect(s.watch.dialogs).toEqual([]);
  };

  const dispose = async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser.close();
    await agent.stop();
    await cp.dispose();
    rmSync(dir, { recursive: true, force: true });
  };

  return { cp, agent, nodeId, browser, dir, logDir, newContext: freshContext, signedIn, expectClean, dispose };
}
