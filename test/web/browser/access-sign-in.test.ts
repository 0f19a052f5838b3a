// The dashboard behind Cloudflare Access, in Chromium: the browser carries Access's cookie (as it
// does behind a real Access application), the dashboard opens signed in as the person with no token
// screen, an operator force-resets a VM, and the VM's events name the person. Without the cookie, or
// with an expired one, the token screen is offered (saying why Access refused).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import type { ControlPlane } from "../../support/control-plane.ts";
import { AccessTeam, teamKey, type TeamKey } from "../../support/access-team.ts";
import { DEMO_LOG_DIR, demoLibvirtUri } from "../../support/agent.ts";
import { WebhookReceiver } from "../../../scripts/webhook-receiver.ts";
import {
  enrollAgent,
  startControlPlaneAndChromium,
  newContext,
  screenshot,
  watchPage,
  type AgentProcess,
  type PageWatch,
} from "./harness.ts";

const ALICE = "alice@acme.test";
const BOB = "bob@acme.test";
const SCRATCH = { id: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f08", name: "scratch" };

let team: AccessTeam;
let key: TeamKey;
let cp: ControlPlane;
let agent: AgentProcess;
let browser: Browser;
let dir: string;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "qx-access-web-"));
  key = await teamKey("web-key");
  team = await AccessTeam.start({ keys: [key] });
  ({ cp, browser } = await startControlPlaneAndChromium({
    vars: team.vars({ ACCESS_ADMINS: ALICE, ACCESS_OPERATORS: "sre" }),
  }));
  ({ agent } = await enrollAgent(cp, "access-web-node", {
    stateDir: join(dir, "state"),
    libvirtUri: demoLibvirtUri(),
    logDir: DEMO_LOG_DIR,
    vmCount: 8,
  }));
}, 180_000);

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  await agent?.stop();
  await cp?.dispose();
  await team?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A browser context holding Access's cookie for the control plane (none when `assertion` is null). */
async function browse(assertion: string | null): Promise<{ page: Page; watch: PageWatch }> {
  const context = await newContext(browser, cp.url);
  contexts.push(context);
  if (assertion)
    await context.addCookies([
      { name: "CF_Authorization", value: assertion, url: cp.url, httpOnly: true, sameSite: "Lax" },
    ]);
  const page = await context.newPage();
  const watch = watchPage(page);
  await page.goto(cp.url + "/");
  return { page, watch };
}

describe("dashboard behind Cloudflare Access", () => {
  it("opens signed in as the person; an operator's Force Reset State is recorded under their email", async () => {
    const { page, watch } = await browse(await team.mint(key, { email: BOB, groups: ["sre"] }));
    await page.getByTestId("signed-in-as").waitFor();
    expect(await page.getByTestId("signed-in-as").textContent()).toBe(`${BOB} · operator · Cloudflare Access`);
    expect(await page.getByTestId("sign-in").count()).toBe(0);
    await page.locator(`tr[data-vm-name="${SCRATCH.name}"]`).waitFor();
    await screenshot(page, "access-signed-in");

    await page.goto(`${cp.url}/vms/${SCRATCH.id}`);
    await page.getByTestId("vm-name").waitFor();
    await page.getByRole("button", { name: "More actions" }).click();
    await page.getByRole("menuitem", { name: /^Force Reset State/ }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Force Reset State" }).click();
    await page.getByTestId("toast-success").first().waitFor();
    await expect.poll(() => page.getByTestId("events-trail").textContent()).toContain(`user:${BOB}`);
    await screenshot(page, "access-event-names-person");

    const { events } = (await (await cp.api(`/api/vms/${SCRATCH.id}/events`)).json()) as {
      events: { action: string; actor: string }[];
    };
    expect(events.find((e) => e.action === "reset_state")?.actor).toBe(`user:${BOB}`);
    expect(watch.problems).toEqual([]);
    expect(watch.dialogs).toEqual([]);
  }, 60_000);

  it("an admin adds a webhook target on the Notifications page, sends a test and sees the delivery", async () => {
    const receiver = new WebhookReceiver("page-secret");
    await receiver.up();
    try {
      const { page, watch } = await browse(await team.mint(key, { email: ALICE }));
      await page.getByTestId("signed-in-as").waitFor();
      await page.getByRole("link", { name: "Notifications" }).click();
      const form = page.getByTestId("new-target");
      await form.getByLabel("Target name").fill("on-call hook");
      await form.getByLabel("Target URL").fill(receiver.url);
      await form.getByLabel("Signing secret").fill(receiver.secret);
      await form.getByRole("button", { name: "Add target" }).click();
      await page.getByTestId("toast-success").filter({ hasText: "added" }).waitFor();
      const row = page.locator('tr[data-target-name="on-call hook"]');
      await row.waitFor();
      expect(await page.content()).not.toContain(receiver.secret); // the form is cleared, the list never has it
      await row.getByTestId("target-test").click();
      await page.getByTestId("toast-success").filter({ hasText: "answered 200" }).waitFor();
      await page.locator('[data-testid="deliveries-table"] tr[data-delivery-event="test"]').waitFor();
      expect(await page.locator('tr[data-delivery-event="test"]').first().textContent()).toContain("delivered");
      expect(receiver.received.map((d) => [d.event, d.signatureOk])).toEqual([["test", true]]);
      expect((receiver.received[0].body as { message: string }).message).toContain(ALICE);
      await screenshot(page, "notifications-page");
      expect(watch.problems).toEqual([]);
    } finally {
      await receiver.down();
    }
  }, 60_000);

  it("without Access's cookie the token screen is offered; with an expired one it says so", async () => {
    const none = await browse(null);
    await none.page.getByTestId("sign-in").waitFor();
    expect(await none.page.getByTestId("access-refused").count()).toBe(0);

    const expired = await browse(await team.mint(key, { email: BOB }, { expiresIn: -300 }));
    await expired.page.getByTestId("sign-in").waitFor();
    expect(await expired.page.getByTestId("access-refused").textContent()).toMatch(/expired/);
    // Tokens still work there.
    await expired.page.getByTestId("sign-in-token").fill(cp.adminToken);
    await expired.page.getByRole("button", { name: "Sign in" }).click();
    await expired.page.getByTestId("signed-in-as").waitFor();
    expect(await expired.page.getByTestId("signed-in-as").textContent()).toBe("admin · admin");
    for (const s of [none, expired]) expect(s.watch.problems).toEqual([]);
  }, 60_000);
});
