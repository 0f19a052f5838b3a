// Last-known logs, rotated files and VM flags in Chromium against the real control plane and a real agent on libvirt's test driver:
// issues found in a log and the jump to the first error, live follow through appends, rotation and
// truncation (token as a WebSocket subprotocol, never in a URL), the last-known log while the node
// is offline, verified resets in the events trail, and a VM flagged after a forced reset.
import { appendFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import type { ControlPlane } from "../../support/control-plane.ts";
import { startDashboard, type DashboardFixture, type Session } from "./fixture.ts";
import { FIXTURE_XML, VMS, WEB_LOG_LAST_LINE } from "./fixture-logs.ts";
import { screenshot, startAgent, until, type AgentProcess } from "./harness.ts";

let f: DashboardFixture;
let cp: ControlPlane;
let agent: AgentProcess;
let nodeId: string;
let dir: string;
let logDir: string;

/** big-log for the jump: 3,000 lines, quiet until a timeout warning at 2,000 and errors from 2,100. */
const JUMP_LOG_LINES = 3_000;
function jumpLog(): string {
  const out: string[] = [];
  for (let i = 1; i <= JUMP_LOG_LINES; i++) {
    if (i === 2_000) out.push("2026-11-25T10:00:00.000000Z qemu-system-x86_64: warning: guest agent command timed out");
    else if (i === 2_100)
      out.push(
        `2026-11-25T10:00:01.000000Z qemu-system-x86_64: -blockdev {"driver":"file","filename":"/var/lib/libvirt/images/big.qcow2"}: Could not open '/var/lib/libvirt/images/big.qcow2': No such file or directory`,
      );
    else if (i === 2_101)
      out.push(
        "2026-11-25T10:00:01.000000Z qemu-system-x86_64: -drive file=/srv/iso/x.iso: Could not open '/srv/iso/x.iso': Permission denied",
      );
    else if (i === 2_500) out.push("2026-11-25T10:00:02.000000Z KVM internal error. Suberror: 1");
    else out.push(`2026-11-25T09:00:00.000000Z line ${i} virtio-balloon: stats update`);
  }
  return out.join("\n") + "\n";
}

beforeAll(async () => {
  f = await startDashboard({
    tmpPrefix: "qx-web-live-",
    nodeName: "edge-live",
    start: { rateLimits: false },
    prepareLogs: (dir) => writeFileSync(join(dir, `${VMS.bigLog.name}.log`), jumpLog()),
  });
  ({ cp, agent, nodeId, dir, logDir } = f);
}, 180_000);

// A test may start the node's agent again: that one is stopped here too, not left running.
afterAll(async () => {
  if (agent !== f?.agent) await agent?.stop();
  await f?.dispose();
});

const signedIn = (token?: string): Promise<Session> => f.signedIn(token);
const expectClean = (s: Session) => f.expectClean(s);

const inView = (page: Page, selector: string) =>
  page.getByTestId("log-view").evaluate((view, sel) => {
    const el = view.querySelector(sel);
    if (!el) return false;
    const a = view.getBoundingClientRect();
    const b = el.getBoundingClientRect();
    return b.top >= a.top && b.bottom <= a.bottom;
  }, selector);

const atBottom = (page: Page) =>
  page.getByTestId("log-view").evaluate((el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 30);

describe("Logs tab and VM flags in Chromium", () => {
  it("lists each issue found once with its explanation and jumps to the first error in the virtualized view", async () => {
    const s = await signedIn();
    const { page } = s;
    await page.goto(`${cp.url}/vms/${VMS.bigLog.id}/logs?lines=${JUMP_LOG_LINES}`);
    const view = page.getByTestId("log-view");
    await view.locator(`[data-line="${JUMP_LOG_LINES}"]`).waitFor();
    expect(await view.locator('[data-line="2100"]').count()).toBe(0); // virtualized: far above the bottom

    const found = page.getByTestId("log-issues").locator("[data-found-issue]");
    expect(await found.evaluateAll((els) => els.map((el) => el.getAttribute("data-found-issue")))).toEqual([
      "timeout",
      "missing_image",
      "permission_denied",
      "guest_crash",
    ]);
    expect(await found.nth(1).textContent()).toContain("line 2100");
    expect(await found.nth(1).textContent()).toContain("does not exist on this host");

    await page.getByTestId("log-jump-error").click();
    const highlighted = view.locator("[data-highlighted]");
    await expect.poll(() => highlighted.getAttribute("data-line")).toBe("2100");
    expect(await highlighted.getAttribute("data-level")).toBe("error");
    expect(await highlighted.getAttribute("data-line-issue")).toBe("missing_image");
    await expect.poll(() => inView(page, '[data-line="2100"]')).toBe(true);
    await screenshot(page, "logs-jump-to-error");

    // An issue's own line link jumps there too.
    await found.nth(3).getByRole("button").click();
    await expect.poll(() => highlighted.getAttribute("data-line")).toBe("2500");
    await expect.poll(() => inView(page, '[data-line="2500"]')).toBe(true);

    // A log with no error: the button is off and says so.
    await page.goto(`${cp.url}/vms/${VMS.oddName.id}/logs`);
    await page.getByTestId("log-view").getByText("name check").waitFor();
    expect(await page.getByTestId("log-jump-error").isDisabled()).toBe(true);
    expect(await page.getByTestId("log-issues").textContent()).toContain("No errors in these lines.");
    expectClean(s);
  });

  it("follows the log live through appends, rotation and truncation, following the bottom only while the reader is there", async () => {
    const s = await signedIn();
    const { page } = s;
    const file = join(logDir, `${VMS.web.name}.log`);
    await page.goto(`${cp.url}/vms/${VMS.web.id}/logs`);
    const view = page.getByTestId("log-view");
    await view.getByText(WEB_LOG_LAST_LINE).waitFor();
    // The answer says when it was read and which files it read.
    await expect.poll(() => page.getByTestId("log-files").textContent()).toContain("web-01.log");
    expect(await page.getByTestId("log-captured-at").textContent()).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);

    const sockets: string[] = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    // click, not check(): the toggle may switch itself off again at once when follow is refused
    await page.getByTestId("log-follow").click();
    const status = page.getByTestId("follow-status");
    await expect.poll(() => status.getAttribute("data-phase"), { timeout: 15_000 }).toBe("following");
    expect(sockets).toEqual([`${cp.url.replace("http:", "ws:")}/api/vms/${VMS.web.id}/logs/follow`]);
    expect(await page.getByTestId("log-autorefresh").isDisabled()).toBe(true);

    // Enough new lines to overflow the view, in one write (the agent coalesces appends).
    appendFileSync(
      file,
      Array.from({ length: 60 }, (_, i) => `2026-11-25T11:00:00.000000Z live line ${i + 1}\n`).join(""),
    );
    await view.getByText("live line 60").waitFor({ timeout: 10_000 });
    expect(await view.evaluate((el) => el.scrollHeight > el.clientHeight)).toBe(true);
    // The snapshot re-read at (re)connect and the live text meet without a repeated line.
    await page.getByTestId("log-copy").click();
    const shown = await page.evaluate(() => navigator.clipboard.readText());
    expect(shown.match(/live line 1\n/g)).toHaveLength(1);
    expect(shown.match(/live line 60\n/g)).toHaveLength(1);
    expect(shown.startsWith(readFileSync(file, "utf8").slice(0, 200))).toBe(true);
    appendFileSync(file, "2026-11-25T11:00:00.000000Z live line one\n");
    await view.getByText("live line one").waitFor({ timeout: 10_000 });
    await expect.poll(() => atBottom(page)).toBe(true);

    // Scrolled up: new text arrives (the view grows) but the reader keeps their place.
    await view.evaluate((el) => (el.scrollTop = 0));
    await view.dispatchEvent("scroll");
    const height = await view.evaluate((el) => el.scrollHeight);
    appendFileSync(
      file,
      "2026-11-25T11:00:01.000000Z qemu-system-x86_64: terminating on signal 15 from pid 99 (live)\n",
    );
    await expect.poll(() => view.evaluate((el) => el.scrollHeight), { timeout: 10_000 }).toBeGreaterThan(height);
    expect(await view.evaluate((el) => el.scrollTop)).toBeLessThan(50);
    await view.evaluate((el) => (el.scrollTop = el.scrollHeight));
    await expect
      .poll(() => view.locator("[data-line]", { hasText: "(live)" }).getAttribute("data-level"))
      .toBe("error");

    // Rotation (virtlogd renames the file to .1 and starts a new one): said, and the new file followed.
    renameSync(file, `${file}.1`);
    writeFileSync(file, "2026-11-25T11:01:00.000000Z first line of the rotated-in file\n");
    await expect
      .poll(() => page.getByTestId("follow-event").getAttribute("data-event"), { timeout: 10_000 })
      .toBe("rotated");
    await view.getByText("first line of the rotated-in file").waitFor({ timeout: 10_000 });
    await expect.poll(() => atBottom(page)).toBe(true);

    // Truncation in place: said, and read again from the start.
    writeFileSync(file, "after truncation\n");
    await expect
      .poll(() => page.getByTestId("follow-event").getAttribute("data-event"), { timeout: 10_000 })
      .toBe("truncated");
    await view.getByText("after truncation").waitFor({ timeout: 10_000 });
    await screenshot(page, "logs-follow-live");

    // The node goes away: the follow says so and waits; back, it reconnects on its own.
    await agent.stop();
    await expect.poll(() => status.getAttribute("data-phase"), { timeout: 20_000 }).toBe("offline");
    agent = startAgent({ server: cp.url, stateDir: join(dir, "state"), libvirtUri: `test://${FIXTURE_XML}`, logDir });
    await expect.poll(() => status.getAttribute("data-phase"), { timeout: 45_000 }).toBe("following");
    appendFileSync(file, "written after the node came back\n");
    await view.getByText("written after the node came back").waitFor({ timeout: 15_000 });

    // Follow off: the socket closes. "Last N lines" now continues into the rotated file.
    await page.getByTestId("log-follow").uncheck();
    await expect.poll(() => status.count()).toBe(0);
    await page.getByTestId("log-refresh").click();
    await expect.poll(() => page.getByTestId("log-files").textContent()).toBe("web-01.log, web-01.log.1");
    const copy = async () => (
      await page.getByTestId("log-copy").click(), await page.evaluate(() => navigator.clipboard.readText())
    );
    await expect.poll(copy).toContain("written after the node came back");
    const copied = await copy();
    expect(copied.indexOf(WEB_LOG_LAST_LINE)).toBeGreaterThan(-1); // from web-01.log.1
    expect(copied.indexOf("written after the node came back")).toBeGreaterThan(copied.indexOf(WEB_LOG_LAST_LINE));
    expectClean(s);
  }, 120_000);

  it("falls back to auto-refresh every 5 s when the server says it cannot follow", async () => {
    const s = await signedIn();
    const { page } = s;
    // A FAKE follow socket standing in for a control plane that cannot follow (an older one): it
    // answers the way the contract's error frame does and closes. Nothing reaches the real Worker.
    await page.routeWebSocket(/\/logs\/follow$/, (ws) => {
      ws.send(
        JSON.stringify({ type: "error", code: "follow_unavailable", message: "this control plane cannot follow logs" }),
      );
      void ws.close({ code: 1000 });
    });
    await page.goto(`${cp.url}/vms/${VMS.oddName.id}/logs`);
    await page.getByTestId("log-view").getByText("name check").waitFor();
    // click, not check(): the toggle switches itself off as soon as the server says it can't follow,
    // which check() would take for a click that did nothing.
    await page.getByTestId("log-follow").click();
    await expect
      .poll(() => page.getByTestId("follow-unavailable").textContent())
      .toContain("Auto-refreshing every 5 s instead");
    expect(await page.getByTestId("follow-unavailable").textContent()).toContain(
      "this control plane cannot follow logs",
    );
    expect(await page.getByTestId("log-follow").isChecked()).toBe(false);
    expect(await page.getByTestId("log-autorefresh").isChecked()).toBe(true);
    // and auto-refresh really polls: a line written now shows up with no click.
    appendFileSync(join(logDir, `${VMS.oddName.name}.log`), "seen by the fallback auto-refresh\n");
    await page.getByTestId("log-view").getByText("seen by the fallback auto-refresh").waitFor({ timeout: 12_000 });
    expectClean(s);
  }, 60_000);

  it("the events trail shows expected and observed state, the reason and the log excerpt of a reset", async () => {
    const s = await signedIn();
    const { page } = s;
    await page.goto(`${cp.url}/vms/${VMS.stuck.id}`);
    await page.getByRole("button", { name: "More actions" }).click();
    await page.getByRole("menuitem", { name: /^Reset State/ }).click();
    await page.getByTestId("reset-reason").fill("checking after the storage alarm");
    await page.getByRole("dialog").getByRole("button", { name: "Reset State" }).click();
    await page.getByTestId("toast-success").first().waitFor();

    const row = page.locator('tr[data-event-action="reset_state"]').first();
    await row.waitFor();
    expect(await row.getByTestId("event-verification").textContent()).toBe("expected RUNNING · hypervisor RUNNING");
    expect(await row.getByTestId("event-reason").textContent()).toBe("Reason: checking after the storage alarm");
    // The excerpt is read after the answer: it shows up at a later refresh of the trail.
    await expect
      .poll(
        async () => {
          await page.reload();
          await row.waitFor();
          return row.getByTestId("event-log-excerpt").count();
        },
        { timeout: 20_000 },
      )
      .toBe(1);
    await row.getByTestId("event-log-excerpt").locator("summary").click();
    expect(await row.getByTestId("event-log-excerpt").locator("pre").textContent()).toContain(
      "starting up libvirt version",
    );
    await screenshot(page, "events-verified-reset");
    expectClean(s);
  }, 60_000);

  it("while the node is offline: the last-known log with its capture time, and a force reset; back online: the VM found running is flagged until cleared", async () => {
    const s = await signedIn();
    const { page } = s;
    // A log read while the node is there is kept as the VM's last-known log.
    appendFileSync(join(logDir, `${VMS.web.name}.log`), "last line read before the node went away\n");
    expect((await cp.api(`/api/vms/${VMS.web.id}/logs?lines=50`)).status).toBe(200);

    await agent.stop();
    await until(
      "node offline",
      async () =>
        !((await (await cp.api(`/api/nodes/${nodeId}`)).json()) as { node: { connected: boolean } }).node.connected,
      20_000,
    );

    // The node is unreachable: Force Reset State of a VM that is in fact running sets STOPPED without asking.
    await page.goto(`${cp.url}/vms/${VMS.forceMe.id}`);
    await page.getByRole("button", { name: "More actions" }).click();
    await page.getByRole("menuitem", { name: /^Force Reset State/ }).click();
    await page.getByTestId("reset-reason").fill("host unreachable drill");
    await page.getByRole("dialog").getByRole("button", { name: "Force Reset State" }).click();
    await expect.poll(() => page.locator("[data-fact=State]").textContent()).toBe("STOPPED");
    const forced = page.locator('tr[data-event-action="reset_state"]').first();
    await expect
      .poll(() => forced.getByTestId("event-verification").textContent())
      .toBe("expected RUNNING · hypervisor not asked");
    expect(await forced.getByTestId("event-reason").textContent()).toBe("Reason: host unreachable drill");

    // Its last-known copy is shown instead, labelled with its capture time.
    await page.goto(`${cp.url}/vms/${VMS.web.id}/logs`);
    await expect.poll(() => page.getByTestId("logs-error").textContent()).toContain("offline");
    const label = page.getByTestId("last-known-label");
    await expect.poll(() => label.textContent()).toMatch(/^Last known log, captured at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
    await page
      .getByTestId("last-known")
      .getByTestId("log-view")
      .getByText("last line read before the node went away")
      .waitFor();
    expect(await page.getByTestId("last-known").getByTestId("log-files").textContent()).toContain("web-01.log");
    await screenshot(page, "logs-last-known");
    await page.getByTestId("log-copy").click();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toContain(
      "last line read before the node went away",
    );

    // crashy's log was never read: nothing kept, said plainly.
    const other = await signedIn();
    await other.page.goto(`${cp.url}/vms/${VMS.crashy.id}/logs`);
    await expect.poll(() => other.page.getByTestId("last-known-none").textContent()).toContain("No last known log");

    // Back online: the forced-reset VM is found running and flagged, never stopped.
    agent = startAgent({ server: cp.url, stateDir: join(dir, "state"), libvirtUri: `test://${FIXTURE_XML}`, logDir });

    await other.page.getByRole("link", { name: "VMs", exact: true }).click();
    const row = other.page.locator(`tr[data-vm-name="${VMS.forceMe.name}"]`);
    await expect.poll(() => row.getByTestId("flag-marker").count(), { timeout: 30_000 }).toBe(1);
    expect(await other.page.locator(`tr[data-vm-name="${VMS.web.name}"]`).getByTestId("flag-marker").count()).toBe(0);
    await screenshot(other.page, "vms-flagged");
    await row.getByRole("link").click();
    const banner = other.page.getByTestId("flag-banner");
    await banner.waitFor();
    expect(await banner.getAttribute("data-flag-code")).toBe("running_after_forced_reset");
    await expect.poll(() => other.page.locator("[data-fact=State]").textContent()).toBe("RUNNING"); // follows the hypervisor, never stopped
    await screenshot(other.page, "vm-flag-banner");
    // A viewer sees the flag but cannot clear it.
    const created = await cp.api("/api/tokens", { method: "POST", json: { name: "flag-viewer", role: "viewer" } });
    const viewer = await signedIn(((await created.json()) as { token: string }).token);
    await viewer.page.goto(`${cp.url}/vms/${VMS.forceMe.id}`);
    await viewer.page.getByTestId("flag-banner").waitFor();
    expect(await viewer.page.getByTestId("flag-clear").count()).toBe(0);
    await other.page.getByTestId("flag-clear").click();
    await other.page.getByTestId("toast-success").first().waitFor();
    await expect.poll(() => banner.count()).toBe(0);
    const vm = (await (await cp.api(`/api/vms/${VMS.forceMe.id}`)).json()) as { vm: { flag: unknown } };
    expect(vm.vm.flag).toBeNull();
    expectClean(s);
    expectClean(other);
    expectClean(viewer);
  }, 120_000);
});
