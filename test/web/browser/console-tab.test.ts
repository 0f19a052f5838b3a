// The Console tab in Chromium on a real guest: the control plane (wrangler dev), the real agent on
// libvirtd + QEMU, and a guest whose firmware talks on its serial port (SeaBIOS with useserial, then
// iPXE, whose Ctrl-B shell echoes). xterm.js shows the boot and typing works, with no CSP violation
// under the console page's one allowance, while the site's other pages keep the strict policy.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtAdmin } from "../../support/libvirt-admin.ts";
import { QEMU_LOG_DIR, firmwareGuest, removeFirmwareGuest } from "../../support/firmware-guest.ts";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../../support/control-plane.ts";
import {
  startControlPlaneAndChromium,
  newContext,
  startAgent,
  until,
  watchPage,
  type AgentProcess,
} from "./harness.ts";

const URI = "qemu:///system";
const guest = firmwareGuest("console-web");
const { uuid } = guest;

let cp: ControlPlane;
let admin: LibvirtAdmin;
let agent: AgentProcess | undefined;
let browser: Browser;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "qx-web-console-"));
  admin = new LibvirtAdmin({ uri: URI });
  await admin.connectOpen();
  await admin.domainDefineXML(guest.xml);
  ({ cp, browser } = await startControlPlaneAndChromium());
  const created = await (await cp.api("/api/nodes", { method: "POST", json: { name: "edge-console-01" } })).json();
  agent = startAgent({
    server: cp.url,
    token: created.joinToken,
    stateDir: join(dir, "state"),
    libvirtUri: URI,
    logDir: QEMU_LOG_DIR,
  });
  await until("the guest listed", async () => (await cp.api(`/api/vms/${uuid}`)).ok, 60_000);
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await agent?.stop();
  if (admin) await removeFirmwareGuest(admin, guest);
  await admin?.connectClose();
  await cp?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe("Console tab in Chromium", { timeout: 150_000 }, () => {
  it("shows the guest's boot (SeaBIOS), typing reaches the guest and comes back, with no CSP violation", async () => {
    const context = await newContext(browser, cp.url);
    const page = await context.newPage();
    const watch = watchPage(page);
    const violations: string[] = [];
    page.on("console", (m) => /Content Security Policy|Refused to/i.test(m.text()) && violations.push(m.text()));
    await page.goto(cp.url + "/");
    await page.getByTestId("sign-in-token").fill(cp.adminToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByTestId("signed-in-as").waitFor();
    await page.goto(`${cp.url}/vms/${uuid}`);
    await page.getByRole("tab", { name: "Console" }).waitFor();
    // Started paused, so nothing it prints goes out before the console is open.
    execFileSync("virsh", ["-c", URI, "start", "--paused", uuid], { stdio: "ignore" });
    await page.getByRole("tab", { name: "Console" }).click();
    await page.waitForURL(`**/vms/${uuid}/console`);
    const status = page.getByTestId("console-status");
    await status.getByText("you are typing into this console").waitFor({ timeout: 30_000 });
    await admin.domainResume(await admin.domainLookupByUUIDString(uuid));
    const screen = page.locator(".xterm-rows");
    await screen.getByText("SeaBIOS", { exact: false }).first().waitFor({ timeout: 30_000 });

    await page.locator(".xterm-helper-textarea").focus();
    const shell = until("the iPXE prompt", async () => ((await screen.textContent()) ?? "").includes("iPXE>"), 60_000);
    const ctrlB = setInterval(() => void page.keyboard.press("Control+b").catch(() => {}), 300);
    try {
      await shell;
    } finally {
      clearInterval(ctrlB);
    }
    const marker = `web${randomBytes(4).toString("hex")}`;
    await page.keyboard.type(`echo ${marker}`);
    await page.keyboard.press("Enter");
    await until(
      "the echo's output",
      async () => ((await screen.textContent()) ?? "").split(marker).length >= 3,
      20_000,
    );

    expect(violations).toEqual([]);
    expect(watch.problems).toEqual([]);
    await context.close();
  });

  it("the console page alone allows inline <style> elements; every other page keeps the strict policy", async () => {
    const csp = async (path: string) => (await fetch(cp.url + path)).headers.get("content-security-policy") ?? "";
    const consolePolicy = await csp(`/vms/${uuid}/console`);
    expect(consolePolicy).toContain("style-src-elem 'self' 'unsafe-inline'");
    expect(consolePolicy).toContain("script-src 'self'");
    expect(consolePolicy.match(/unsafe/g)).toHaveLength(1);
    for (const path of ["/", `/vms/${uuid}`, `/vms/${uuid}/logs`, "/vms", "/nodes"]) {
      const policy = await csp(path);
      expect(policy, path).toContain("style-src 'self'");
      expect(policy, path).not.toContain("unsafe");
    }
  });
});
