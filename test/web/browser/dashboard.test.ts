// The dashboard in Chromium against the real control plane (wrangler dev: workerd + local D1 +
// Durable Objects) and a real agent process on libvirt's test driver: sign-in, nodes, VMs, the
// stuck VM and its reset, payloads shown as text, paging, roles, tokens (the Logs tab is in logs-tab.test.ts). Screenshots of
// the main pages go to test-artifacts/screenshots/.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import type { ControlPlane } from "../../support/control-plane.ts";
import { startDashboard, type DashboardFixture, type Session } from "./fixture.ts";
import { FIXTURE_XML, VMS, writeFleetXml } from "./fixture-logs.ts";
import { expectAccessible } from "./axe.ts";
import { enrollAgent, screenshot, startAgent, until, watchPage, type AgentProcess } from "./harness.ts";

const NODE_NAME = "edge-test-01";
const ACK_TIMEOUT_MS = 1_500;
/** VMs on the second test host, to page through. */
const FLEET = 10_000;

let f: DashboardFixture;
let cp: ControlPlane;
let agent: AgentProcess;
let nodeId: string;
let dir: string;
let logDir: string;

// The stuck VM below must stay stuck while the page is looked at: this host's agent sends its
// inventory digest rarely (anti-entropy would otherwise have the reconciler repair it within a digest
// interval), and the periodic reconciler pass is rare too.
process.env.QX_DIGEST_INTERVAL_MS = "600000";

beforeAll(async () => {
  f = await startDashboard({
    tmpPrefix: "qx-web-",
    nodeName: NODE_NAME,
    start: {
      // The dashboard marks VMs stuck by the control plane's threshold (GET /api/me): 60 s here.
      // One node holds the whole 10,000-VM fleet of the paging test: above the default cap of 5,000.
      vars: {
        ACK_TIMEOUT_MS: String(ACK_TIMEOUT_MS),
        QUERY_TIMEOUT_MS: "5000",
        STUCK_AFTER_MS: "60000",
        RECONCILE_INTERVAL_MS: "600000",
        MAX_VMS_PER_NODE: String(FLEET),
      },
    },
  });
  ({ cp, agent, nodeId, dir, logDir } = f);
}, 180_000);

// A test may start the node's agent again: that one is stopped here too, not left running.
afterAll(async () => {
  if (agent !== f?.agent) await agent?.stop();
  await f?.dispose();
});

const signedIn = (
  token: string,
  opts: { colorScheme?: "light" | "dark"; shiftClockMs?: number } = {},
): Promise<Session> => f.signedIn(token, opts);
const expectClean = (s: Session) => f.expectClean(s);

const vmRow = (page: Page, name: string) => page.locator(`tr[data-vm-name="${name}"]`);

async function createToken(
  role: "viewer" | "operator" | "admin",
  name: string,
): Promise<{ token: string; id: string }> {
  const res = await cp.api("/api/tokens", { method: "POST", json: { name, role } });
  expect(res.status).toBe(201);
  return (await res.json()) as { token: string; id: string };
}

describe("dashboard in Chromium", () => {
  it("signs in with a token (a refused one stays out), stays signed in across a reload, and serves HTML under a strict CSP", async () => {
    const res = await fetch(cp.url + "/");
    expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
    expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script
    expect(html).not.toMatch(/<style|style=/);

    const context = await f.newContext();
    const page = await context.newPage();
    const watch = watchPage(page);
    await page.goto(cp.url + "/vms");
    await page.getByTestId("sign-in-token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.getByTestId("sign-in-error").textContent()).toContain("refused");
    await screenshot(page, "sign-in");
    await page.getByTestId("sign-in-token").fill(cp.adminToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.getByTestId("signed-in-as").textContent()).toContain("admin");
    await page.reload();
    await vmRow(page, VMS.web.name).waitFor();
    expect(await page.evaluate(() => localStorage.getItem("qx.token"))).toBe(cp.adminToken);
    expect(page.url()).not.toContain(cp.adminToken);
    await page.getByTestId("sign-out").click();
    await page.getByTestId("sign-in").waitFor();
    expect(await page.evaluate(() => localStorage.getItem("qx.token"))).toBeNull();
    expect(watch.problems).toEqual([]);
  });

  it("shows the node connected with its facts, enrolls a node with its install command once, rotates and deletes it", async () => {
    const s = await signedIn(cp.adminToken);
    const { page } = s;
    await page.getByRole("link", { name: "Nodes" }).click();
    const row = page.locator(`tr[data-node-name="${NODE_NAME}"]`);
    await expect.poll(() => row.getByTestId("node-status").textContent()).toBe("connected");
    expect(await row.getByTestId("node-vm-count").textContent()).toBe("6");
    const cells = await row.locator("td").allTextContents();
    expect(cells[2]).toMatch(/just now|s ago/); // last seen
    expect(cells[3]).not.toBe("—"); // hostname
    expect(cells[4]).not.toBe("—"); // agent version

    await page.getByTestId("node-name").fill("edge-new");
    await page.getByRole("button", { name: "Create node" }).click();
    const token = (await page.getByTestId("join-token").textContent())!;
    expect(token.length).toBeGreaterThan(10);
    const command = await page.getByTestId("agent-command").textContent();
    expect(command).toBe(`npm run agent -- --server ${cp.url} --token ${token} --state-dir ./.state/edge-new`);
    const install = `curl -fsSL ${cp.url}/install.sh | sh -s -- --token ${token}`;
    expect(await page.getByTestId("install-command").textContent()).toBe(install);
    await page.getByTestId("install-command").locator("..").getByRole("button", { name: "Copy" }).click();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(install);
    await screenshot(page, "nodes-enrolled");
    await page.getByRole("button", { name: "Done" }).click();
    await expect.poll(() => page.getByTestId("join-token").count()).toBe(0);

    const newRow = page.locator('tr[data-node-name="edge-new"]');
    await newRow.getByRole("button", { name: "Rotate token" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Rotate token" }).click();
    await expect
      .poll(async () => (await page.getByTestId("join-token").count()) && page.getByTestId("join-token").textContent())
      .not.toBe(0);
    expect(await page.getByTestId("join-token").textContent()).not.toBe(token);
    await page.getByRole("button", { name: "Done" }).click();

    await newRow.getByRole("button", { name: "Delete" }).click();
    expect(await page.getByRole("dialog").textContent()).toContain("Removes the node");
    await page.getByRole("dialog").getByRole("button", { name: "Delete node" }).click();
    await expect.poll(() => newRow.count()).toBe(0);
    await page.getByTestId("toast-success").first().waitFor();
    await screenshot(page, "nodes");
    expectClean(s);
  });

  it("lists VMs with state badges, filters by state and node, searches by name, and shows names literally", async () => {
    const s = await signedIn(cp.adminToken);
    const { page } = s;
    await vmRow(page, VMS.web.name).waitFor();
    expect(await page.locator("tr[data-vm-name]").count()).toBe(6);
    expect(await vmRow(page, VMS.web.name).getByTestId("vm-state").textContent()).toBe("RUNNING");
    expect(await vmRow(page, VMS.crashy.name).getByTestId("vm-state").textContent()).toBe("ERROR");
    expect(await vmRow(page, VMS.oddName.name).locator("a").textContent()).toBe(VMS.oddName.name);
    // the node column names the node once the nodes list has loaded (it shows the id's prefix until then)
    await expect.poll(() => vmRow(page, VMS.web.name).locator("td").nth(2).textContent()).toBe(NODE_NAME);
    await screenshot(page, "vms");

    await page.getByTestId("vm-state-filter").selectOption("STOPPED");
    await expect
      .poll(() =>
        page
          .locator("tr[data-vm-name]")
          .allTextContents()
          .then((r) => r.length),
      )
      .toBe(1);
    expect(await page.locator("tr[data-vm-name]").getAttribute("data-vm-name")).toBe(VMS.oddName.name);
    await page.getByTestId("vm-state-filter").selectOption("");
    await page.getByTestId("vm-node-filter").selectOption({ label: NODE_NAME });
    await expect.poll(() => page.locator("tr[data-vm-name]").count()).toBe(6);
    await page.getByTestId("vm-search").fill("stuck");
    await expect.poll(() => page.locator("tr[data-vm-name]").count()).toBe(1);
    expect(await page.locator("tr[data-vm-name]").getAttribute("data-vm-name")).toBe(VMS.stuck.name);
    await page.getByTestId("vm-search").fill("no-such-vm");
    await page.getByText("No VMs match.").waitFor();
    expectClean(s);
  });

  it("marks VMs stuck after a stop the frozen agent never acknowledged, then Reset State asks the hypervisor and Force Reset State sets STOPPED, checked at once (RUNNING, flagged)", async () => {
    agent.child.kill("SIGSTOP");
    let requestIds: string[];
    try {
      requestIds = await Promise.all(
        [VMS.stuck, VMS.forceMe].map(async (vm) => {
          const res = await cp.api(`/api/vms/${vm.id}/stop`, { method: "POST" });
          expect(res.status).toBe(202);
          return ((await res.json()) as { request: { id: string } }).request.id;
        }),
      );
      for (const id of requestIds)
        await until(
          `request ${id} failed`,
          async () =>
            ((await (await cp.api(`/api/requests/${id}`)).json()) as { request: { status: string } }).request.status ===
            "failed",
        );
      // The reconciler asks the hypervisor about them at once; frozen, the agent lets those questions
      // expire too (QUERY_TIMEOUT_MS 5 s), so the VMs stay STOPPING for the page to show.
      await new Promise((r) => setTimeout(r, 6_000));
    } finally {
      agent.child.kill("SIGCONT");
    }
    const vm = (await (await cp.api(`/api/vms/${VMS.stuck.id}`)).json()) as { vm: { state: string } };
    expect(vm.vm.state).toBe("STOPPING");

    // The page's clock runs 90 s ahead, so the STOPPING state is past the 60 s stuck threshold.
    const s = await signedIn(cp.adminToken, { shiftClockMs: 90_000 });
    const { page } = s;
    await vmRow(page, VMS.stuck.name).getByTestId("stuck-marker").waitFor();
    expect(await vmRow(page, VMS.stuck.name).getByTestId("stuck-marker").textContent()).toMatch(/stuck since/);
    expect(await vmRow(page, VMS.web.name).getByTestId("stuck-marker").count()).toBe(0);
    await expectAccessible(page, "VMs with a stuck VM · light");
    await screenshot(page, "vms-stuck");

    await vmRow(page, VMS.stuck.name).getByRole("link").click();
    await page.getByTestId("vm-name").waitFor();
    expect(await page.getByTestId("vm-name").textContent()).toBe(VMS.stuck.name);
    await page.getByTestId("stuck-marker").waitFor();
    await expect.poll(() => page.locator("[data-fact=State]").textContent()).toBe("STOPPING");
    // The state and the stuck marker are in a live region, in words that do not tick with the clock.
    expect(
      await page
        .getByRole("status")
        .filter({ hasText: `${VMS.stuck.name} is STOPPING` })
        .textContent(),
    ).toMatch(new RegExp(`^${VMS.stuck.name} is STOPPING, stuck since [\\d-]+ [\\d:]+\\.$`));
    await expectAccessible(page, "stuck VM · light");
    expect(await page.getByRole("button", { name: "Start", exact: true }).isDisabled()).toBe(true);
    expect(await page.getByRole("button", { name: "Stop", exact: true }).isDisabled()).toBe(true);

    await page.getByRole("button", { name: "More actions" }).click();
    await page.getByRole("menuitem", { name: /^Reset State/ }).click();
    const dialog = page.getByRole("dialog");
    expect(await dialog.textContent()).toContain("Asks the hypervisor");
    await page.getByTestId("reset-reason").fill("stop never acknowledged");
    await screenshot(page, "reset-state-dialog");
    await dialog.getByRole("button", { name: "Reset State" }).click();
    const toast = page.getByTestId("toast-success").first();
    await toast.waitFor();
    expect(await toast.textContent()).toContain("STOPPING → RUNNING");
    expect(await toast.textContent()).toContain("hypervisor");
    await expect.poll(() => page.locator("[data-fact=State]").textContent()).toBe("RUNNING");
    await expect.poll(() => page.getByTestId("stuck-marker").count()).toBe(0);
    expect(await page.getByTestId("vm-live-state").textContent()).toBe(`${VMS.stuck.name} is RUNNING.`);
    await expect.poll(() => page.getByTestId("events-trail").textContent()).toContain("STOPPING → RUNNING");
    await screenshot(page, "vm-detail-after-reset");

    await page.goto(`${cp.url}/vms/${VMS.forceMe.id}`);
    await expect.poll(() => page.locator("[data-fact=State]").textContent()).toBe("STOPPING");
    await page.getByRole("button", { name: "More actions" }).click();
    await screenshot(page, "vm-actions-menu");
    await page.getByRole("menuitem", { name: /^Force Reset State/ }).click();
    expect(await page.getByRole("dialog").textContent()).toContain("Risk: if the VM is in fact still running");
    await screenshot(page, "force-reset-dialog");
    await page.getByRole("dialog").getByRole("button", { name: "Force Reset State" }).click();
    const forced = page.getByTestId("toast-success").first();
    await forced.waitFor();
    expect(await forced.textContent()).toContain("STOPPING → STOPPED");
    await expect.poll(() => page.getByTestId("events-trail").textContent()).toContain("forced");
    // The forced STOPPED is checked with the hypervisor at once: the domain runs (its stop was never
    // carried out), so the VM is shown RUNNING with the flag, and nothing stops it.
    await expect.poll(() => page.locator("[data-fact=State]").textContent(), { timeout: 15_000 }).toBe("RUNNING");
    await page.getByTestId("flag-banner").waitFor();
    expect(await page.getByTestId("flag-message").textContent()).toContain("force-reset to STOPPED");
    await expectAccessible(page, "flagged VM with toasts · light");
    await page.getByTestId("theme-toggle").click();
    await expect.poll(() => page.evaluate(() => document.documentElement.classList.contains("dark"))).toBe(true);
    await expectAccessible(page, "flagged VM with toasts · dark");
    // RUNNING allows Stop and not Start.
    expect(await page.getByRole("button", { name: "Start", exact: true }).isDisabled()).toBe(true);
    expect(await page.getByRole("button", { name: "Stop", exact: true }).isDisabled()).toBe(false);
    expectClean(s);
  }, 90_000);

  it("an action the server refuses shows the server's message in an error toast", async () => {
    const s = await signedIn(cp.adminToken);
    const { page } = s;
    await page.goto(`${cp.url}/vms/${VMS.oddName.id}`);
    expect(await page.getByTestId("vm-name").textContent()).toBe(VMS.oddName.name);
    await expect.poll(() => page.locator("[data-fact=State]").textContent()).toBe("STOPPED");
    // Someone else starts it meanwhile; this page still shows STOPPED and offers Start.
    expect((await cp.api(`/api/vms/${VMS.oddName.id}/start`, { method: "POST" })).status).toBe(202);
    await page.getByRole("button", { name: "Start", exact: true }).click();
    // Errors go to the assertive live region (read out at once), apart from the polite one.
    const toast = page.getByRole("alert", { name: "Errors" }).getByTestId("toast-error").first();
    await toast.waitFor();
    expect(await toast.textContent()).toMatch(/^Start failed: .*(STARTING|RUNNING)/);
    await expect.poll(() => page.locator("[data-fact=State]").textContent()).not.toBe("STOPPED");
    await screenshot(page, "error-toast");
    expect(s.watch.problems.filter((p) => !p.includes("409"))).toEqual([]);
  });

  it(`pages through ${FLEET.toLocaleString("en")} VMs with "Load more" and finds one by name`, async () => {
    const xml = join(dir, "fleet.xml");
    writeFleetXml(xml, FLEET);
    const fleet = await enrollAgent(cp, "edge-fleet", {
      stateDir: join(dir, "fleet-state"),
      libvirtUri: `test://${xml}`,
      logDir,
      vmCount: FLEET,
      timeoutMs: 120_000,
    });
    try {
      const s = await signedIn(cp.adminToken);
      const { page } = s;
      const rows = page.locator("tr[data-vm-name]");
      await rows.first().waitFor();
      await page.getByTestId("vm-node-filter").selectOption({ label: "edge-fleet" });
      await expect.poll(() => rows.first().getAttribute("data-vm-name")).toBe("fleet-00001");
      expect(await rows.count()).toBe(100);
      const pageTimes: number[] = [];
      for (const shown of [200, 300]) {
        const started = Date.now();
        await page.getByTestId("vm-load-more").click();
        await expect.poll(() => rows.count()).toBe(shown);
        pageTimes.push(Date.now() - started);
      }
      expect(await rows.nth(299).getAttribute("data-vm-name")).toBe("fleet-00300");
      expect(Math.max(...pageTimes)).toBeLessThan(3_000);
      await page.getByTestId("vm-search").fill("fleet-09999");
      await expect.poll(() => rows.count()).toBe(1);
      expect(await rows.first().getAttribute("data-vm-name")).toBe("fleet-09999");
      expect(await page.getByTestId("vm-load-more").count()).toBe(0);
      expectClean(s);
    } finally {
      await fleet.agent.stop();
    }
  }, 180_000);

  it("a viewer sees VMs and nodes but no action of any kind", async () => {
    const { token } = await createToken("viewer", "read-only");
    const s = await signedIn(token);
    const { page } = s;
    await expect.poll(() => page.getByTestId("signed-in-as").textContent()).toContain("viewer");
    await page.getByTestId("vm-search").fill(VMS.web.name); // the fleet's VMs sort before it
    await vmRow(page, VMS.web.name).waitFor();
    expect(await page.getByRole("link", { name: "Tokens" }).count()).toBe(0);
    await vmRow(page, VMS.web.name).getByRole("link").click();
    await page.getByTestId("vm-name").waitFor();
    await page.getByTestId("events-trail").or(page.getByText("No events yet.")).first().waitFor();
    expect(await page.getByTestId("vm-actions").count()).toBe(0);
    expect(await page.getByRole("button", { name: /Start|Stop|More actions/ }).count()).toBe(0);
    await screenshot(page, "viewer-vm-detail");
    await page.getByRole("tab", { name: "Logs" }).click();
    await expect.poll(() => page.getByTestId("logs-error").textContent()).toContain("operator role");
    await page.getByRole("link", { name: "Nodes" }).click();
    await page.getByTestId("nodes-table").waitFor();
    expect(await page.getByRole("button", { name: /Create node|Rotate token|Delete/ }).count()).toBe(0);
    expectClean(s);
  });

  it("an admin creates and revokes tokens; a revoked token's session falls back to sign-in at its next request", async () => {
    const admin = await signedIn(cp.adminToken);
    await admin.page.getByRole("link", { name: "Tokens" }).click();
    await admin.page.getByTestId("token-name").fill("ops-laptop");
    await admin.page.getByTestId("token-role").selectOption("operator");
    await admin.page.getByRole("button", { name: "Create token" }).click();
    const token = (await admin.page.getByTestId("created-token").textContent())!;
    expect(token.length).toBeGreaterThan(10);
    await admin.page.locator('tr[data-token-name="ops-laptop"]').waitFor();
    await screenshot(admin.page, "tokens");

    const ops = await signedIn(token);
    await expect.poll(() => ops.page.getByTestId("signed-in-as").textContent()).toContain("operator");

    await admin.page.locator('tr[data-token-name="ops-laptop"]').getByRole("button", { name: "Revoke" }).click();
    await admin.page.getByRole("dialog").getByRole("button", { name: "Revoke" }).click();
    await expect.poll(() => admin.page.locator('tr[data-token-name="ops-laptop"]').textContent()).toContain("revoked");

    await ops.page.getByRole("link", { name: "Nodes" }).click();
    await ops.page.getByTestId("sign-in").waitFor();
    expect(await ops.page.evaluate(() => localStorage.getItem("qx.token"))).toBeNull();
    expectClean(admin);
    expectClean(ops);
  });

  it("on a test-driver VM the Console tab says why there is no console, serial or graphical", async () => {
    const s = await signedIn(cp.adminToken);
    await s.page.goto(`${cp.url}/vms/${VMS.web.id}/console`);
    const ended = s.page.getByTestId("console-ended");
    await ended.waitFor({ timeout: 30_000 });
    expect(await ended.getAttribute("data-reason")).toBe("no_console");
    expect(await ended.textContent()).toContain("libvirt's test driver has no serial consoles");
    expectClean(s);
    await s.page.getByRole("button", { name: "Graphical" }).click();
    const noDisplay = s.page.getByTestId("graphical-ended");
    await noDisplay.waitFor({ timeout: 30_000 });
    expect(await noDisplay.getAttribute("data-reason")).toBe("no_display");
    expect(await noDisplay.textContent()).toContain("no VNC display");
    // The control plane says ready before the agent has reached a display, so noVNC, already
    // attached, logs its own failure to connect; nothing else may go wrong on the page.
    const noVncOwn = /^console\.error: Failed when connecting: Connection closed \(code: 1000, reason: no_display\)$/;
    expect(s.watch.problems.filter((p) => !noVncOwn.test(p))).toEqual([]);
  });

  it("says the node is offline when its agent is gone", async () => {
    await agent.stop();
    await until(
      "node offline",
      async () =>
        !((await (await cp.api(`/api/nodes/${nodeId}`)).json()) as { node: { connected: boolean } }).node.connected,
      20_000,
    );
    const s = await signedIn(cp.adminToken);
    const { page } = s;
    await page.goto(`${cp.url}/vms/${VMS.web.id}/logs`);
    await expect.poll(() => page.getByTestId("logs-error").textContent()).toContain("offline");
    // Start / stop wait for the node's agent; the resets in the "…" menu stay.
    await expect.poll(() => page.getByTestId("vm-actions").getAttribute("data-node-offline")).toBe("true");
    expect(await page.getByRole("button", { name: "Stop", exact: true }).isDisabled()).toBe(true);
    expect(await page.getByRole("button", { name: "Force stop", exact: true }).isDisabled()).toBe(true);
    expect(await page.getByRole("button", { name: "Stop", exact: true }).getAttribute("title")).toContain(
      "Force Reset State",
    );
    await page.getByRole("button", { name: "More actions" }).click();
    expect(await page.getByRole("menuitem", { name: /^Force Reset State/ }).isEnabled()).toBe(true);
    await page.keyboard.press("Escape");
    await screenshot(page, "logs-node-offline");
    await page.getByRole("link", { name: "Nodes" }).click();
    await expect
      .poll(() => page.locator(`tr[data-node-name="${NODE_NAME}"]`).getByTestId("node-status").textContent())
      .toBe("offline");

    // Back with one domain gone from the host: that VM is kept and marked missing.
    const xml = join(dir, "node-without-crashy.xml");
    writeFileSync(
      xml,
      readFileSync(FIXTURE_XML, "utf8").replace(/<domain type="test">\s*<name>crashy<\/name>[\s\S]*?<\/domain>/, ""),
    );
    agent = startAgent({ server: cp.url, stateDir: join(dir, "state"), libvirtUri: `test://${xml}`, logDir });
    await expect
      .poll(() => page.locator(`tr[data-node-name="${NODE_NAME}"]`).getByTestId("node-status").textContent(), {
        timeout: 20_000,
      })
      .toBe("connected");
    await page.getByRole("link", { name: "VMs" }).click();
    await page.getByTestId("vm-node-filter").selectOption({ label: NODE_NAME });
    await expect
      .poll(() => vmRow(page, VMS.crashy.name).getByTestId("missing-marker").count(), { timeout: 20_000 })
      .toBe(1);
    expect(await vmRow(page, VMS.web.name).getByTestId("missing-marker").count()).toBe(0);
    await screenshot(page, "vms-missing");
    expectClean(s);
  }, 90_000);
});
