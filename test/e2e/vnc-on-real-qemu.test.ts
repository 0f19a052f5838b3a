// A VM's graphical console (VNC) end to end on the real libvirtd + QEMU: wrangler dev (Worker,
// Durable Object, local D1), the real agent dialing the guest's VNC server from its live XML, and a
// guest with no OS (SeaBIOS, then iPXE) whose screen is on a VGA display on the host's loopback and
// mirrored on its serial port (useserial), so what the keyboard does is read back from the serial log.
// The viewer is a small RFB client over a real loopback WebSocket (ws).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { LibvirtAdmin } from "../support/libvirt-admin.ts";
import { QEMU_LOG_DIR, firmwareGuest, removeFirmwareGuest } from "../support/firmware-guest.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { CONSOLE_WINDOW_BYTES, VNC_FRAME_BYTES } from "../../protocol/console.ts";
import { AgentProcess } from "../support/agent.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { FAST_AGENT_ARGS, createNode, eventually, json, startControlPlane, waitConnected } from "./journey.ts";

const URI = "qemu:///system";
const guest = firmwareGuest("vnc-ipxe", { vnc: true, serialLog: true });
const bareGuest = firmwareGuest("vnc-nodisplay");
const { name, uuid } = guest;
const bareUuid = bareGuest.uuid;

let cp: ControlPlane;
let admin: LibvirtAdmin;
let agent: AgentProcess | undefined;
let operator: string;
const viewers: RfbViewer[] = [];

/** A graphical console as a test holds it: the control messages, and the RFB bytes as a queue to read. */
class RfbViewer {
  readonly ws: WebSocket;
  readonly control: any[] = [];
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  received = 0;
  private ackedAt = 0;
  /** false: the viewer never acks (to see the agent stop at its window) */
  acking = true;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data, binary) => {
      if (!binary) return void this.control.push(JSON.parse(String(data)));
      const chunk = data as Buffer;
      this.buffered.push(chunk);
      this.bufferedBytes += chunk.byteLength;
      this.received += chunk.byteLength;
      if (this.acking) this.ack();
    });
    viewers.push(this);
  }

  ack(): void {
    // Every frame is acked (at least every CONSOLE_ACK_EVERY_BYTES is what a browser must do).
    if (this.received - this.ackedAt < 1) return;
    this.ackedAt = this.received;
    this.ws.send(JSON.stringify({ type: "ack", offset: this.received }));
  }

  static async ticket(vmId: string, mode: "rw" | "ro"): Promise<{ ticket: string; url: string }> {
    const res = await cp.api(`/api/vms/${vmId}/console`, {
      method: "POST",
      token: operator,
      json: { type: "vnc", mode },
    });
    const body = await json(res);
    expect(res.status, JSON.stringify(body)).toBe(201);
    return body;
  }

  static async open(vmId: string, mode: "rw" | "ro"): Promise<RfbViewer> {
    const { ticket, url } = await RfbViewer.ticket(vmId, mode);
    const ws = new WebSocket(new URL(url, cp.url).href.replace(/^http/, "ws"));
    const viewer = new RfbViewer(ws);
    await new Promise<void>((ok, fail) => {
      ws.once("open", () => ok());
      ws.once("error", fail);
    });
    ws.send(JSON.stringify({ type: "hello", ticket }));
    return viewer;
  }

  get ready(): any {
    return this.control.find((m) => m.type === "ready");
  }

  get closed(): any {
    return this.control.find((m) => m.type === "closed");
  }

  /** The next `n` RFB bytes, waiting for them. */
  async read(n: number, timeoutMs = 30_000): Promise<Buffer> {
    await eventually(`${n} RFB bytes`, async () => this.bufferedBytes >= n || this.closed, timeoutMs, 5);
    if (this.bufferedBytes < n) throw new Error(`console closed: ${JSON.stringify(this.closed)}`);
    const all = Buffer.concat(this.buffered);
    this.buffered = [all.subarray(n)];
    this.bufferedBytes -= n;
    return all.subarray(0, n);
  }

  send(bytes: number[] | Buffer): void {
    this.ws.send(Buffer.from(bytes));
  }

  /** Version, security None, ClientInit; the ServerInit read. */
  async handshake(): Promise<{ version: string; types: number[]; width: number; height: number; name: string }> {
    const version = (await this.read(12)).toString("latin1");
    this.send(Buffer.from("RFB 003.008\n"));
    const count = (await this.read(1))[0];
    const types = [...(await this.read(count))];
    this.send([1]);
    expect((await this.read(4)).readUInt32BE(0)).toBe(0); // SecurityResult OK
    this.send([1]); // ClientInit: shared
    const init = await this.read(24);
    const nameText = (await this.read(init.readUInt32BE(20))).toString("utf8");
    return { version, types, width: init.readUInt16BE(0), height: init.readUInt16BE(2), name: nameText };
  }

  /** Press and release a key (X keysym) with standard KeyEvents. */
  key(keysym: number): void {
    const ev = (down: number) => [
      4,
      down,
      0,
      0,
      (keysym >>> 24) & 255,
      (keysym >>> 16) & 255,
      (keysym >>> 8) & 255,
      keysym & 255,
    ];
    this.send([...ev(1), ...ev(0)]);
  }

  ctrl(keysym: number): void {
    const ev = (k: number, down: number) => [4, down, 0, 0, 0, 0, (k >>> 8) & 255, k & 255];
    this.send([...ev(0xffe3, 1), ...ev(keysym, 1), ...ev(keysym, 0), ...ev(0xffe3, 0)]);
  }

  async type(text: string): Promise<void> {
    for (const ch of text) {
      this.key(ch === "\r" ? 0xff0d : ch.charCodeAt(0));
      await new Promise((r) => setTimeout(r, 30)); // the guest's keyboard buffer is small
    }
  }

  pointer(x: number, y: number, buttons: number): void {
    this.send([5, buttons, x >> 8, x & 255, y >> 8, y & 255]);
  }

  close(): void {
    this.ws.close();
  }
}

const serialText = () => {
  try {
    return readFileSync(guest.serialLog!, "latin1");
  } catch {
    return "";
  }
};
const domain = (id: string) => admin.domainLookupByUUIDString(id);

beforeAll(async () => {
  admin = new LibvirtAdmin({ uri: URI });
  await admin.connectOpen();
  await admin.domainDefineXML(guest.xml);
  await admin.domainDefineXML(bareGuest.xml);
  cp = await startControlPlane();
  operator = (
    await json(await cp.api("/api/tokens", { method: "POST", json: { name: "vnc operator", role: "operator" } }))
  ).token;
  const { node, joinToken } = await createNode(cp, `vnc-${Date.now()}`);
  agent = AgentProcess.start({
    server: cp.url,
    token: joinToken,
    libvirtUri: URI,
    logDir: QEMU_LOG_DIR,
    args: [...FAST_AGENT_ARGS.slice(0, -1), "info"],
  }); // info: the relays' counts
  await waitConnected(cp, node.id);
  for (const id of [uuid, bareUuid])
    await eventually("the guests listed", async () => (await cp.api(`/api/vms/${id}`)).ok, 30_000);
  // Started paused: the keyboard test needs iPXE's short Ctrl-B window, which follows the resume.
  execFileSync("virsh", ["-c", URI, "start", "--paused", uuid], { stdio: "ignore" });
}, 180_000);

afterAll(async () => {
  for (const v of viewers) v.ws.terminate();
  await agent?.dispose();
  if (admin) for (const g of [guest, bareGuest]) await removeFirmwareGuest(admin, g);
  await admin?.connectClose();
  await cp?.dispose();
});

describe("a graphical console on a real guest", { timeout: 180_000 }, () => {
  it("the RFB handshake completes through the control plane: version, security None, ServerInit with the framebuffer size", async () => {
    const v = await RfbViewer.open(uuid, "rw");
    await eventually("ready", async () => v.ready, 20_000);
    expect(v.ready).toEqual({ type: "ready", display: "vnc", mode: "rw", writer: true, offset: 0 });
    const init = await v.handshake();
    expect(init.version).toBe("RFB 003.008\n");
    expect(init.types).toContain(1);
    expect(init.width).toBeGreaterThan(0);
    expect(init.height).toBeGreaterThan(0);
    expect(init.name).toContain(name); // QEMU names its desktop "QEMU (<domain>)"
    const events = (await json(await cp.api(`/api/vms/${uuid}/events`, { token: operator }))).events;
    expect(events.find((e: any) => e.action === "console.opened")).toMatchObject({ type: "vnc" });
    v.close();
  });

  it("a writer's keys reach the guest; a watcher's keys and pointer never do (dropped at the agent's relay)", async () => {
    const writer = await RfbViewer.open(uuid, "rw");
    await writer.handshake();
    const watcher = await RfbViewer.open(uuid, "ro");
    await watcher.handshake();
    await admin.domainResume(await domain(uuid));
    await eventually("SeaBIOS on the serial port", async () => serialText().includes("SeaBIOS"), 30_000);
    // iPXE offers its shell for a moment after its banner: Ctrl-B (typed on the VNC keyboard) until it shows.
    const ctrlB = setInterval(() => writer.ctrl(0x62), 250);
    try {
      await eventually("the iPXE shell", async () => serialText().includes("iPXE>"), 90_000, 100);
    } finally {
      clearInterval(ctrlB);
    }
    const watched = `w${randomBytes(4).toString("hex")}`;
    await watcher.type(`echo ${watched}\r`);
    watcher.pointer(100, 100, 1);
    watcher.pointer(100, 100, 0);
    watcher.send([6, 0, 0, 0, 0, 0, 0, 4, ...Buffer.from("evil")]); // ClientCutText
    watcher.send([255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]); // QEMU extended key event
    watcher.send([3, 1, 0, 0, 0, 0, 0, 16, 0, 16]); // an update request passes
    const typed = `k${randomBytes(4).toString("hex")}`;
    await writer.type(`echo ${typed}\r`);
    await eventually("the writer's echo", async () => serialText().split(typed).length >= 3, 30_000, 100);
    expect(serialText()).not.toContain(watched);
    // The agent's relay says what it passed and dropped, by kind (never what): the watcher's input
    // was dropped there, the writer's passed.
    const endedLines = () => agent!.output.split("\n").filter((l) => l.includes("graphical console ended"));
    const endedBefore = endedLines().length;
    watcher.close();
    writer.close();
    await eventually("both relays ended", async () => endedLines().length >= endedBefore + 2, 20_000);
    const ended = endedLines()
      .slice(endedBefore)
      .map((l) => JSON.parse(l) as Record<string, number>);
    const dropped = ended.find((e) => e.keysDropped > 0)!;
    expect(dropped).toMatchObject({ keysPassed: 0, pointerPassed: 0 });
    expect(dropped.keysDropped).toBeGreaterThanOrEqual(watched.length + 6);
    expect(dropped.pointerDropped).toBe(2);
    expect(dropped.cutTextDropped).toBe(1);
    expect(ended.find((e) => e.keysPassed > 0)).toMatchObject({ keysDropped: 0 });
    expect(agent!.output).not.toContain(typed);
    expect(agent!.output).not.toContain(watched);
  });

  it("megabytes of raw framebuffer pass at full speed, and a viewer that stops acking stops the agent at its window", async () => {
    const v = await RfbViewer.open(uuid, "ro");
    const { width, height } = await v.handshake();
    v.send([0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]); // 32 bpp true colour
    v.send([2, 0, 0, 1, 0, 0, 0, 0]); // Raw only
    const frame = width * height * 4;
    const full = [3, 0, 0, 0, 0, 0, width >> 8, width & 255, height >> 8, height & 255];
    // Updates are read whole: header, rectangles (Raw: header + pixels).
    const readUpdate = async (): Promise<number> => {
      const head = await v.read(4);
      expect(head[0]).toBe(0);
      let pixels = 0;
      for (let i = 0, n = head.readUInt16BE(2); i < n; i++) {
        const r = await v.read(12);
        const bytes = r.readUInt16BE(4) * r.readUInt16BE(6) * 4;
        await v.read(bytes, 60_000);
        pixels += bytes;
      }
      return pixels;
    };
    const started = performance.now();
    let total = 0;
    while (total < 2 * 1024 * 1024) {
      v.send(full);
      total += await readUpdate();
    }
    const seconds = (performance.now() - started) / 1000;
    expect(total).toBeGreaterThanOrEqual(2 * 1024 * 1024);
    console.log(
      `raw framebuffer through the relay: ${(total / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s (${frame} bytes a screen)`,
    );

    // Without acks the agent stops reading at its window: what arrives is bounded, whatever QEMU has.
    v.acking = false;
    const before = v.received;
    v.send(full);
    v.send(full);
    await eventually(
      "the window fills",
      async () => v.received - before >= CONSOLE_WINDOW_BYTES - VNC_FRAME_BYTES,
      30_000,
    );
    await new Promise((r) => setTimeout(r, 1500)); // time for anything past the window to show (none may)
    expect(v.received - before).toBeLessThanOrEqual(CONSOLE_WINDOW_BYTES + VNC_FRAME_BYTES);
    v.acking = true;
    v.ack();
    const rest = await readUpdate();
    expect(rest).toBe(frame);
    v.close();
  });

  it("a guest without a VNC display ends with no_display", async () => {
    const v = await RfbViewer.open(bareUuid, "rw");
    await eventually("closed", async () => v.closed, 20_000);
    expect(v.closed).toMatchObject({ reason: "no_display" });
    expect(v.closed.message).toMatch(/no VNC display/);
  });

  it("a viewer token gets 403, and the refusal is recorded", async () => {
    const viewerToken = (
      await json(await cp.api("/api/tokens", { method: "POST", json: { name: "vnc viewer", role: "viewer" } }))
    ).token;
    const res = await cp.api(`/api/vms/${uuid}/console`, {
      method: "POST",
      token: viewerToken,
      json: { type: "vnc", mode: "ro" },
    });
    expect(res.status).toBe(403);
    expect(await json(res)).toMatchObject({ success: false, error: { code: "forbidden" } });
  });
});
