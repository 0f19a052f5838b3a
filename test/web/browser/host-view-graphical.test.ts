// The host view's graphical console in Chromium on a real guest: the agent run with --listen on
// libvirtd + QEMU proxies the page's socket to the guest's VNC display (on the host's loopback),
// authorized by the host token, with the control plane stopped. noVNC, the dashboard's own component,
// draws SeaBIOS's screen (a canvas that is not blank) with no CSP violation.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { freePort, type ControlPlane } from "../../support/control-plane.ts";
import { QEMU_LOG_DIR, firmwareGuest, removeFirmwareGuest } from "../../support/firmware-guest.ts";
import { LibvirtAdmin } from "../../support/libvirt-admin.ts";
import { rfbGreeting } from "../../support/rfb-greeting.ts";
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
const guest = firmwareGuest("demo-hostvnc", { vnc: true });
const bare = firmwareGuest("demo-hostnovnc");

let cp: ControlPlane | undefined;
let admin: LibvirtAdmin;
let agent: AgentProcess | undefined;
let browser: Browser;
let dir: string;
let hostUrl: string;
let hostToken: string;

/** A console ticket from the host view's API, and the socket it opens, as a page would. */
async function openLocal(vmId: string, body: unknown, token = hostToken) {
  const res = await fetch(`${hostUrl}/api/v1/vms/${vmId}/console`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** The control messages a socket gets for `ticket` until it closes. */
async function controlMessages(url: string, ticket: string): Promise<any[]> {
  const ws = new WebSocket(`${hostUrl.replace("http", "ws")}${url}`);
  const messages: any[] = [];
  ws.on("message", (data, binary) => !binary && messages.push(JSON.parse(String(data))));
  ws.once("open", () => ws.send(JSON.stringify({ type: "hello", ticket })));
  await new Promise((r) => ws.once("close", r));
  return messages;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "qx-host-vnc-"));
  admin = new LibvirtAdmin({ uri: URI });
  await admin.connectOpen();
  await admin.domainDefineXML(guest.xml);
  await admin.domainDefineXML(bare.xml);
  ({ cp, browser } = await startControlPlaneAndChromium());
  const created = await (await cp.api("/api/nodes", { method: "POST", json: { name: "edge-host-vnc" } })).json();
  const port = await freePort();
  hostUrl = `http://127.0.0.1:${port}`;
  agent = startAgent({
    server: cp.url,
    token: created.joinToken,
    stateDir: join(dir, "state"),
    libvirtUri: URI,
    logDir: QEMU_LOG_DIR,
    listen: `127.0.0.1:${port}`,
  });
  await until("the guest listed", async () => (await cp!.api(`/api/vms/${guest.uuid}`)).ok, 60_000);
  hostToken = readFileSync(join(dir, "state", "host-token"), "utf8").trim();
  for (const g of [guest, bare]) await admin.domainCreate(await admin.domainLookupByUUIDString(g.uuid));
  // The host view works without the control plane: it is stopped before any console opens.
  await cp.dispose();
  cp = undefined;
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await agent?.stop();
  if (admin) for (const g of [guest, bare]) await removeFirmwareGuest(admin, g);
  await admin?.connectClose();
  await cp?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe("the host view's graphical console", { timeout: 150_000 }, () => {
  it("noVNC draws the guest's screen through the agent's local API, with no CSP violation", async () => {
    const context = await newContext(browser, hostUrl);
    const page = await context.newPage();
    const watch = watchPage(page);
    const violations: string[] = [];
    page.on("console", (m) => /Content Security Policy|Refused to/i.test(m.text()) && violations.push(m.text()));
    await page.goto(hostUrl + "/");
    await page.getByTestId("sign-in-token").fill(hostToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("button", { name: guest.name }).click();
    await page.getByTestId("host-console-link").click();
    await page.getByRole("button", { name: "Graphical" }).click();
    await page.waitForURL(/\/console\?view=graphical#/);
    const status = page.getByTestId("graphical-status");
    await status.getByText("keyboard and mouse go to the VM").waitFor({ timeout: 30_000 });
    await untilScreenDrawn(page);
    await page.getByRole("button", { name: "Ctrl-Alt-Del" }).click();
    expect(await page.getByTestId("graphical-ended").count()).toBe(0);
    const license = await page.getByRole("link", { name: /noVNC/ }).getAttribute("href");
    const text = await (await fetch(new URL(license!, hostUrl))).text();
    expect(text).toMatch(/noVNC core library files are licensed under the MPL 2.0/);
    // A reload keeps the graphical view (the page's address says so).
    await page.reload();
    await status.getByText("keyboard and mouse go to the VM").waitFor({ timeout: 30_000 });

    expect(violations).toEqual([]);
    expect(watch.problems).toEqual([]);
    await context.close();
  });

  it("needs the host token; a guest without a display ends with no_display; a ticket is single use", async () => {
    expect((await openLocal(guest.uuid, { type: "vnc", mode: "rw" }, "not-the-host-token")).status).toBe(401);
    expect((await openLocal(guest.uuid, { type: "spice", mode: "rw" })).status).toBe(400);

    const none = await openLocal(bare.uuid, { type: "vnc", mode: "rw" });
    expect(none.status).toBe(201);
    expect(await controlMessages(none.body.url, none.body.ticket)).toEqual([
      expect.objectContaining({ type: "closed", reason: "no_display" }),
    ]);

    const once = await openLocal(guest.uuid, { type: "vnc", mode: "ro" });
    const got = await rfbGreeting(`${hostUrl.replace("http", "ws")}${once.body.url}`, once.body.ticket);
    expect(got.ready).toEqual({ type: "ready", display: "vnc", mode: "ro", writer: false, offset: 0 });
    expect(got.version).toMatch(/^RFB 003\.00\d\n$/);
    expect(await controlMessages(once.body.url, once.body.ticket)).toEqual([
      expect.objectContaining({ type: "closed", reason: "bad_hello" }),
    ]);
  });
});
