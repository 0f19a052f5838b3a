// The Console tab's graphical view in Chromium on a real guest: the control plane (wrangler dev), the
// real agent on libvirtd + QEMU, and a diskless guest with a VGA display on the host's loopback.
// noVNC, loaded only on this view, draws SeaBIOS's screen (a canvas that is not blank) with no CSP
// violation, and the noVNC license is reachable from the page.
import { execFileSync } from "node:child_process";
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
  untilScreenDrawn,
  watchPage,
  type AgentProcess,
} from "./harness.ts";

const URI = "qemu:///system";
const guest = firmwareGuest("vnc-web", { vnc: true });
const { uuid } = guest;

let cp: ControlPlane;
let admin: LibvirtAdmin;
let agent: AgentProcess | undefined;
let browser: Browser;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "qx-web-vnc-"));
  admin = new LibvirtAdmin({ uri: URI });
  await admin.connectOpen();
  await admin.domainDefineXML(guest.xml);
  ({ cp, browser } = await startControlPlaneAndChromium());
  const created = await (await cp.api("/api/nodes", { method: "POST", json: { name: "edge-vnc-01" } })).json();
  agent = startAgent({
    server: cp.url,
    token: created.joinToken,
    stateDir: join(dir, "state"),
    libvirtUri: URI,
    logDir: QEMU_LOG_DIR,
  });
  await until("the guest listed", async () => (await cp.api(`/api/vms/${uuid}`)).ok, 60_000);
  execFileSync("virsh", ["-c", URI, "start", uuid], { stdio: "ignore" });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await agent?.stop();
  if (admin) await removeFirmwareGuest(admin, guest);
  await admin?.connectClose();
  await cp?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe("the graphical console in Chromium", { timeout: 150_000 }, () => {
  it("noVNC draws the guest's screen (a canvas that is not blank), with no CSP violation", async () => {
    const context = await newContext(browser, cp.url);
    const page = await context.newPage();
    const watch = watchPage(page);
    const violations: string[] = [];
    page.on("console", (m) => /Content Security Policy|Refused to/i.test(m.text()) && violations.push(m.text()));
    const scripts: string[] = [];
    page.on("request", (r) => r.resourceType() === "script" && scripts.push(r.url()));
    await page.goto(cp.url + "/");
    await page.getByTestId("sign-in-token").fill(cp.adminToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByTestId("signed-in-as").waitFor();
    await page.goto(`${cp.url}/vms/${uuid}/console`);
    await page.getByRole("button", { name: "Graphical" }).waitFor();
    const beforeGraphical = scripts.length;
    await page.getByRole("button", { name: "Graphical" }).click();
    const status = page.getByTestId("graphical-status");
    await status.getByText("keyboard and mouse go to the VM").waitFor({ timeout: 30_000 });
    expect(scripts.length).toBeGreaterThan(beforeGraphical); // noVNC's chunk came only now
    await untilScreenDrawn(page);
    // Ctrl-Alt-Del and typed text go out without ending the display.
    await page.getByRole("button", { name: "Ctrl-Alt-Del" }).click();
    await page.getByLabel("Type this text").fill("hello");
    await page.getByRole("button", { name: "Type", exact: true }).click();
    await page.getByRole("button", { name: "Type", exact: true }).waitFor();
    await page.getByRole("button", { name: "1:1" }).click();
    await page.getByRole("button", { name: "Fit to window" }).waitFor();
    expect(await page.getByTestId("graphical-ended").count()).toBe(0);
    const license = await page.getByRole("link", { name: /noVNC/ }).getAttribute("href");
    const text = await (await fetch(new URL(license!, cp.url))).text();
    expect(text).toMatch(/noVNC core library files are licensed under the MPL 2.0/);

    expect(violations).toEqual([]);
    expect(watch.problems).toEqual([]);
    await context.close();
  });
});
