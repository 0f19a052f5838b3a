// The dashboard's accessibility in Chromium against the real control plane and a real agent on
// libvirt's test driver: axe-core on every page and VM tab in the light and dark themes (any serious
// or critical violation fails), the operator's reset flow with the keyboard alone, tabs switched
// with arrow keys, focus returned after menus and dialogs, a visible focus ring on everything Tab
// reaches, and toasts and live states in ARIA live regions.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Locator, Page } from "playwright-core";
import type { ControlPlane } from "../../support/control-plane.ts";
import { expectAccessible, record, textContrasts } from "./axe.ts";
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
  // A page load of its own (its CSP allows xterm.js's styles); a test-driver VM has no serial
  // console, and the tab says why.
  { name: "Console", path: "/console", ready: (page) => page.getByTestId("console-ended") },
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
    await page.getByRole("tab", { name: "Logs" }).click();
    await page.getByTestId("log-view").getByText(WEB_LOG_LAST_LINE).first().waitFor();
    await page.getByTestId("log-help").locator("summary").click();
    await page.getByTestId("log-follow").click();
    await expect.poll(() => page.getByTestId("follow-status").getAttribute("data-phase")).toBe("following");
    expect(await page.getByRole("status", { name: "Live follow" }).textContent()).toBe("Following live");
    await expectNoViolations(page, `VM Logs tab, help open, following · ${theme}`);
    // A line's level shows in more than its colour: a mark beside its number, and words for screen readers.
    const view = page.getByTestId("log-view");
    for (const [level, mark] of [
      ["error", "E"],
      ["warning", "W"],
    ] as const) {
      const first = view.locator(`[data-level="${level}"]`).first();
      expect(await first.locator('[aria-hidden="true"]').textContent()).toBe(mark);
      expect(await first.locator(".sr-only").textContent()).toBe(`${level}: `);
    }
    expect(await view.locator('[data-level="normal"] .sr-only').count()).toBe(0);
    // Every text colour of the tab, the highlighted line jumped to included, at 4.5:1 or more.
    await page.getByTestId("log-jump-error").click();
    await page.locator("[data-highlighted]").waitFor();
    const line = '[data-testid="log-view"] [data-line]';
    const contrasts = {
      "error lines": await textContrasts(page, `${line}[data-level="error"]:not([data-highlighted])`),
      "warning lines": await textContrasts(page, `${line}[data-level="warning"]`),
      "plain lines": await textContrasts(page, `${line}[data-level="normal"]`),
      "line jumped to": await textContrasts(page, `${line}[data-highlighted]`),
      "the whole tab": await textContrasts(page, '[data-testid="logs-panel"]'),
    };
    record(`logs-tab-contrast-${theme}`, contrasts);
    for (const [what, found] of Object.entries(contrasts)) {
      expect(found.length, `${what}: text measured`).toBeGreaterThan(0);
      expect(
        found.filter((c) => c.ratio < 4.5),
        what,
      ).toEqual([]);
    }
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

// ---- the keyboard alone ------------------------------------------------------------------------

type Focused = {
  tag: string;
  role: string | null;
  name: string;
  testId: string | null;
  inDialog: boolean;
  /** a visible focus indicator: :focus-visible matches and draws an outline of 2 px or more */
  ring: boolean;
  /** seen before in this walk (Tab came round) */
  again: boolean;
};

/** What has focus now; `walk` names a set of elements already met, to notice Tab coming round. */
function focused(page: Page, walk = ""): Promise<Focused> {
  return page.evaluate((walk) => {
    const el = document.activeElement instanceof HTMLElement ? document.activeElement : document.body;
    const seen = ((window as unknown as { __qxWalks?: Record<string, WeakSet<Element>> }).__qxWalks ??= {});
    const set = (seen[walk] ??= new WeakSet());
    const again = set.has(el);
    set.add(el);
    const style = getComputedStyle(el);
    return {
      tag: el.tagName.toLowerCase(),
      role: el.getAttribute("role"),
      name: (el.getAttribute("aria-label") ?? el.textContent ?? "").trim().replace(/\s+/g, " ").slice(0, 60),
      testId: el.getAttribute("data-testid"),
      inDialog: el.closest("dialog[open]") !== null,
      ring:
        el.matches(":focus-visible") &&
        style.outlineStyle !== "none" &&
        Number.parseFloat(style.outlineWidth) >= 2 &&
        style.outlineColor !== "rgba(0, 0, 0, 0)",
      again,
    };
  }, walk);
}

const describeFocus = (f: Focused) => `${f.tag}${f.role ? `[${f.role}]` : ""} "${f.name}"`;

/** Presses Tab until `want` has focus (at most `max` times), failing with the path taken. */
async function tabTo(page: Page, want: (f: Focused) => boolean, what: string, max = 80): Promise<Focused> {
  const path: string[] = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    const f = await focused(page);
    if (want(f)) return f;
    path.push(describeFocus(f));
  }
  throw new Error(`Tab never reached ${what}; it went ${path.join(" → ")}`);
}

/** Tabs through every control of the page once round (past the end of the document Tab comes back
 *  to its start) and returns those without a visible focus ring. */
async function controlsWithoutRing(page: Page, walk: string, max = 150): Promise<string[]> {
  const missing: string[] = [];
  let reached = 0;
  let leftDocument = 0;
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    const f = await focused(page, walk);
    if (f.tag === "body" && ++leftDocument < 2) continue;
    if (f.again || f.tag === "body") break;
    reached++;
    if (!f.ring) missing.push(describeFocus(f));
  }
  expect(reached, `Tab reached nothing on ${walk}`).toBeGreaterThan(0);
  return missing;
}

describe("the keyboard alone", () => {
  it("signs in, opens a VM, runs Reset State from the … menu, confirms it and hears the toast; focus comes back to the menu button", async () => {
    const context = await f.newContext();
    const page = await context.newPage();
    const watch = watchPage(page);
    await page.goto(cp.url + "/");
    await page.getByTestId("sign-in").waitFor();
    expect((await focused(page)).testId).toBe("sign-in-token"); // the form starts in the token field
    await page.keyboard.type(cp.adminToken);
    await page.keyboard.press("Enter");
    await page.locator(`tr[data-vm-name="${VMS.web.name}"]`).waitFor();

    await tabTo(page, (f) => f.tag === "a" && f.name === VMS.web.name, `the link to ${VMS.web.name}`);
    await page.keyboard.press("Enter");
    await expect.poll(() => page.getByTestId("vm-name").textContent()).toBe(VMS.web.name);
    // The live regions toasts go into are there before any toast is.
    expect(await page.getByRole("status", { name: "Notices" }).count()).toBe(1);
    expect(await page.getByRole("alert", { name: "Errors" }).count()).toBe(1);
    expect(await page.getByTestId("vm-live-state").textContent()).toBe(`${VMS.web.name} is RUNNING.`);

    const menuButton = (f: Focused) => f.tag === "button" && f.name === "More actions";
    await tabTo(page, menuButton, "the … menu");
    await page.keyboard.press("Enter");
    let now = await focused(page);
    expect([now.role, now.name, now.ring]).toEqual(["menuitem", expect.stringMatching(/^Reset State/), true]);
    await page.keyboard.press("ArrowDown");
    expect((await focused(page)).name).toMatch(/^Force Reset State/);
    await page.keyboard.press("ArrowDown"); // wraps round
    expect((await focused(page)).name).toMatch(/^Reset State/);
    await page.keyboard.press("Escape");
    expect(await page.getByRole("menu").count()).toBe(0);
    expect(menuButton(await focused(page))).toBe(true);

    // Escape also leaves the confirmation without doing anything, focus back on the menu button.
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("End");
    expect((await focused(page)).name).toMatch(/^Force Reset State/);
    await page.keyboard.press("Enter");
    expect((await focused(page)).inDialog).toBe(true);
    await page.keyboard.press("Escape");
    await expect.poll(() => page.getByRole("dialog").count()).toBe(0);
    expect(menuButton(await focused(page))).toBe(true);
    expect(await page.locator("[data-fact=State]").textContent()).toBe("RUNNING");

    await page.keyboard.press("Enter");
    await page.keyboard.press("Enter"); // Reset State, the first item
    now = await focused(page);
    expect([now.inDialog, now.testId]).toEqual([true, "reset-reason"]);
    await page.keyboard.type("checked from the keyboard");
    await tabTo(page, (f) => f.inDialog && f.tag === "button" && f.name === "Reset State", "the confirm button", 5);
    await page.keyboard.press("Enter");

    const toast = page.getByRole("status", { name: "Notices" }).getByTestId("toast-success");
    await toast.waitFor();
    expect(await toast.textContent()).toContain(`${VMS.web.name}: RUNNING → RUNNING.`);
    await expect.poll(() => page.getByRole("dialog").count()).toBe(0);
    expect(menuButton(await focused(page))).toBe(true);
    await expectNoViolations(page, "VM page with a toast · light");
    await expect.poll(() => page.getByTestId("events-trail").textContent()).toContain("checked from the keyboard");
    expect(watch.problems).toEqual([]);
  });

  it("switches the VM tabs with the arrow keys, Home and End; only the selected tab is in the Tab order", async () => {
    const { page, watch } = await f.signedIn();
    await page.goto(`${cp.url}/vms/${VMS.web.id}`);
    await page.getByTestId("events-trail").waitFor();
    await tabTo(page, (f) => f.role === "tab", "the tabs");
    const selected = () => page.getByRole("tab", { selected: true }).textContent();
    const expectOn = async (name: string, path: string) => {
      await expect.poll(selected).toBe(name);
      expect(new URL(page.url()).pathname).toBe(`/vms/${VMS.web.id}${path}`);
      const now = await focused(page);
      expect([now.role, now.name, now.ring]).toEqual(["tab", name, true]);
    };
    await expectOn("Events", "");
    const order = VM_TABS.map((t) => t.name);
    for (let i = 1; i <= order.length; i++) {
      await page.keyboard.press("ArrowRight"); // the last one wraps round to the first
      const tab = VM_TABS[i % order.length];
      await expectOn(tab.name, tab.path);
      await tab.ready(page).first().waitFor();
    }
    await page.keyboard.press("End");
    await expectOn(order.at(-1)!, VM_TABS.at(-1)!.path);
    await page.keyboard.press("ArrowLeft");
    await expectOn(order.at(-2)!, VM_TABS.at(-2)!.path);
    await page.keyboard.press("Home");
    await expectOn(order[0], VM_TABS[0].path);
    // Tab leaves the strip for the panel rather than walking through the other tabs.
    await page.keyboard.press("Tab");
    expect((await focused(page)).role).not.toBe("tab");
    expect(watch.problems).toEqual([]);
  });

  it("a dialog whose opener is gone hands focus to the page's main region", async () => {
    expect((await cp.api("/api/tokens", { method: "POST", json: { name: "kbd-revoke", role: "viewer" } })).status).toBe(
      201,
    );
    const { page, watch } = await f.signedIn();
    await page.goto(`${cp.url}/tokens`);
    const row = page.locator('tr[data-token-name="kbd-revoke"]');
    await row.waitFor();
    await row.getByRole("button", { name: "Revoke" }).focus();
    await page.keyboard.press("Enter");
    expect((await focused(page)).inDialog).toBe(true);
    await tabTo(page, (f) => f.inDialog && f.tag === "button" && f.name === "Revoke", "the confirm button", 5);
    await page.keyboard.press("Enter");
    await expect.poll(() => row.textContent()).toContain("revoked");
    // The row's Revoke button is gone with the token: focus is on main, and Tab goes on from there.
    await expect.poll(() => focused(page).then((f) => f.tag)).toBe("main");
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.querySelector("main")!.contains(document.activeElement))).toBe(true);
    expect(watch.problems).toEqual([]);
  });

  it("shows a focus ring on every control Tab reaches, on every page and in the dialogs, in both themes", async () => {
    for (const theme of ["light", "dark"] as const) {
      const context = await f.newContext(theme);
      const page = await context.newPage();
      const watch = watchPage(page);
      await page.goto(cp.url + "/");
      await page.getByTestId("sign-in").waitFor();
      const missing: string[] = (await controlsWithoutRing(page, `sign-in ${theme}`)).map((m) => `sign-in: ${m}`);
      await page.getByTestId("sign-in-token").fill(cp.adminToken);
      await page.keyboard.press("Enter");
      await page.locator(`tr[data-vm-name="${VMS.web.name}"]`).waitFor();

      const pages: Array<[string, string, (p: Page) => Locator]> = [
        ["VMs", "/vms", (p) => p.locator(`tr[data-vm-name="${VMS.web.name}"]`)],
        ["Nodes", "/nodes", (p) => p.getByTestId("node-totals").getByTestId("metrics-panel")],
        ["Tokens", "/tokens", (p) => p.getByTestId("tokens-table")],
        ["Notifications", "/notifications", (p) => p.locator('tr[data-target-name="ops channel"]')],
        ...VM_TABS.map((t): [string, string, (p: Page) => Locator] => [
          `VM ${t.name} tab`,
          `/vms/${VMS.web.id}${t.path}`,
          (p) => t.ready(p).first(),
        ]),
      ];
      for (const [name, path, ready] of pages) {
        await page.goto(cp.url + path);
        await ready(page).waitFor();
        missing.push(...(await controlsWithoutRing(page, `${name} ${theme}`)).map((m) => `${name}: ${m}`));
      }
      // The Reset State dialog (on the VM page still open from the last tab).
      await page.getByRole("button", { name: "More actions" }).focus();
      await page.keyboard.press("Enter");
      await page.keyboard.press("Enter");
      await page.getByRole("dialog").waitFor();
      for (let i = 0; i < 3; i++) {
        const now = await focused(page);
        if (!now.ring) missing.push(`Reset State dialog: ${describeFocus(now)}`);
        await page.keyboard.press("Tab");
      }
      await page.keyboard.press("Escape");
      expect(missing, theme).toEqual([]);
      expect(watch.problems.filter((p) => !p.includes("401"))).toEqual([]);
      await context.close();
    }
  }, 120_000);
});
