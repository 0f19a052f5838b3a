// `npm start`'s QEMU demo guest (scripts/demo-guest.ts, what start.ts runs) on the real libvirtd +
// QEMU: defined and started (a left-over one replaced), diskless with a user-mode e1000 and a VNC
// display on 127.0.0.1 only; through the product (wrangler dev, an agent on qemu:///system) its
// serial console shows SeaBIOS, which it prints again every reboot, and its display answers RFB;
// stopping it leaves nothing defined.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { LibvirtClient } from "../../agent/libvirt/index.ts";
import { ConsoleClient, type ConsoleState } from "../../protocol/console-client.ts";
import { demoGuest, startDemoGuest } from "../../scripts/demo-guest.ts";
import { AgentProcess } from "../support/agent.ts";
import { freePort, type ControlPlane } from "../support/control-plane.ts";
import { QEMU_LOG_DIR, removeFirmwareGuest } from "../support/firmware-guest.ts";
import { LibvirtAdmin } from "../support/libvirt-admin.ts";
import { rfbGreeting } from "../support/rfb-greeting.ts";
import { FAST_AGENT_ARGS, createNode, eventually, json, startControlPlane, waitConnected } from "./journey.ts";

const URI = "qemu:///system";
let guest: ReturnType<typeof demoGuest>;
let running: { stop: () => Promise<void> } | undefined;
let cp: ControlPlane;
let agent: AgentProcess | undefined;
let operator: string;
let admin: LibvirtAdmin;
const clients: ConsoleClient[] = [];

async function ticket(type: "serial" | "vnc") {
  const res = await cp.api(`/api/vms/${guest.uuid}/console`, {
    method: "POST",
    token: operator,
    json: { mode: "rw", ...(type === "vnc" ? { type } : {}) },
  });
  const body = await json(res);
  expect(res.status, JSON.stringify(body)).toBe(201);
  return { ticket: body.ticket as string, url: new URL(body.url, cp.url).href.replace(/^http/, "ws") };
}

beforeAll(async () => {
  // The port a second `npm start --port N` would use: its guest is demo-qemu-ipxe-N.
  guest = demoGuest(await freePort());
  admin = new LibvirtAdmin({ uri: URI });
  await admin.connectOpen();
  cp = await startControlPlane();
  operator = (
    await json(await cp.api("/api/tokens", { method: "POST", json: { name: "demo operator", role: "operator" } }))
  ).token;
  const { node, joinToken } = await createNode(cp, `demo-qemu-${Date.now()}`);
  agent = AgentProcess.start({
    server: cp.url,
    token: joinToken,
    libvirtUri: URI,
    logDir: QEMU_LOG_DIR,
    args: FAST_AGENT_ARGS,
  });
  await waitConnected(cp, node.id);
}, 180_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await agent?.dispose();
  await running?.stop().catch(() => {});
  if (admin && guest) await removeFirmwareGuest(admin, { name: guest.name, uuid: guest.uuid, xml: "" });
  await admin?.connectClose();
  await cp?.dispose();
});

describe("npm start's QEMU demo guest", { timeout: 150_000 }, () => {
  it("starts (replacing a left-over one) with its display on loopback only and no disk", async () => {
    await startDemoGuest(URI, guest); // as a run that was killed would leave it
    running = await startDemoGuest(URI, guest);
    const client = await LibvirtClient.connect(URI);
    try {
      const same = (await client.listDomains()).filter((d) => d.name === guest.name);
      expect(same.map((d) => d.uuid)).toEqual([guest.uuid]);
      const xml = await client.domainXml(guest.uuid);
      expect(xml).toMatch(/<graphics type='vnc' port='\d+' autoport='yes' listen='127\.0\.0\.1'/);
      expect(xml).not.toMatch(/<disk\b/);
      expect(xml).toMatch(/<interface type='user'>[\s\S]*?<model type='e1000'\/>/);
      expect(xml).toMatch(/<bios useserial='yes' rebootTimeout='10000'\/>/);
    } finally {
      await client.close();
    }
    await eventually(
      "the demo guest listed as running",
      async () => (await json(await cp.api(`/api/vms/${guest.uuid}`))).vm?.state === "RUNNING",
      30_000,
    );
  });

  it("its serial console shows SeaBIOS through the control plane (it boots again every 10 s)", async () => {
    const { ticket: t, url } = await ticket("serial");
    let shown = "";
    const states: ConsoleState[] = [];
    const serial = new ConsoleClient({
      ticket: t,
      connect: () => new WebSocket(url),
      onOutput: (bytes) => (shown += Buffer.from(bytes).toString("latin1")),
      onState: (s) => states.push(s),
    });
    clients.push(serial);
    await eventually("SeaBIOS on the demo guest's console", async () => shown.includes("SeaBIOS"), 60_000, 100);
    expect(states.at(-1)).toEqual({ kind: "open", mode: "rw", writer: true });
  });

  it("its graphical console answers RFB through the control plane", async () => {
    const { ticket: t, url } = await ticket("vnc");
    const got = await rfbGreeting(url, t);
    expect(got.ready).toMatchObject({ type: "ready", display: "vnc", writer: true });
    expect(got.version).toMatch(/^RFB 003\.008\n/);
  });

  it("stopping it leaves nothing defined", async () => {
    await running!.stop();
    running = undefined;
    const client = await LibvirtClient.connect(URI);
    try {
      expect((await client.listDomains()).map((d) => d.name)).not.toContain(guest.name);
    } finally {
      await client.close();
    }
  });
});
