// A VM's serial console end to end on the real libvirtd + QEMU: wrangler dev (Worker, Durable Object,
// local D1), the real agent opening libvirt's console stream through its own libvirt client, and a
// guest with no OS whose firmware talks on the serial port (SeaBIOS with useserial, then iPXE; Ctrl-B
// gives an `iPXE>` shell that echoes). Clients are ConsoleClient over real loopback sockets (ws).
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { LibvirtAdmin } from "../support/libvirt-admin.ts";
import { QEMU_LOG_DIR, firmwareGuest, removeFirmwareGuest } from "../support/firmware-guest.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { ConsoleClient, type ConsoleState } from "../../protocol/console-client.ts";
import { decodeOutput } from "../../protocol/console.ts";
import { AgentProcess } from "../support/agent.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import {
  FAST_AGENT_ARGS,
  createNode,
  eventually,
  freeLoopback,
  json,
  keptHostToken,
  startControlPlane,
  waitConnected,
} from "./journey.ts";

const URI = "qemu:///system";
const guest = firmwareGuest("console-ipxe", { serialLog: true });
const { uuid } = guest;
const MARKER = `qx${randomBytes(5).toString("hex")}`;

let cp: ControlPlane;
let admin: LibvirtAdmin;
let agent: AgentProcess | undefined;
let operator: string;
let hostView = "";
const open: Viewer[] = [];
const held: ChildProcess[] = [];

/** One console as a user holds it: what it showed, at which offsets, and every raw frame per socket. */
class Viewer {
  readonly client: ConsoleClient;
  readonly shown: { offset: number; bytes: Uint8Array }[] = [];
  readonly states: ConsoleState[] = [];
  /** the raw output frames of each socket it opened, to check a resume sends exactly what was missing */
  readonly sockets: { ws: WebSocket; frames: { offset: number; length: number }[]; ready?: any }[] = [];

  constructor(ticket: string, url: string) {
    this.client = new ConsoleClient({
      ticket,
      connect: () => {
        const ws = new WebSocket(new URL(url, cp.url).href.replace(/^http/, "ws"));
        const record = { ws, frames: [] as { offset: number; length: number }[], ready: undefined as any };
        ws.on("message", (data, binary) => {
          if (!binary) {
            const msg = JSON.parse(String(data));
            if (msg.type === "ready") record.ready = msg;
            return;
          }
          const out = decodeOutput(new Uint8Array(data as Buffer));
          if (out) record.frames.push({ offset: out.offset, length: out.bytes.byteLength });
        });
        this.sockets.push(record);
        return ws;
      },
      onOutput: (bytes, offset) => this.shown.push({ offset, bytes: bytes.slice() }),
      onState: (s) => this.states.push(s),
    });
    open.push(this);
  }

  static async open(mode: "rw" | "ro", force = false): Promise<Viewer> {
    const res = await cp.api(`/api/vms/${uuid}/console`, {
      method: "POST",
      token: operator,
      json: { mode, ...(force ? { force } : {}) },
    });
    const body = await json(res);
    expect(res.status, JSON.stringify(body)).toBe(201);
    return new Viewer(body.ticket, body.url);
  }

  get text(): string {
    return Buffer.concat(this.shown.map((s) => s.bytes)).toString("latin1");
  }

  get state(): ConsoleState | undefined {
    return this.states.at(-1);
  }

  async until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
    await eventually(what, async () => check(), timeoutMs, 50);
  }

  async sees(text: string, timeoutMs = 30_000): Promise<void> {
    await this.until(`console shows ${JSON.stringify(text)}`, () => this.text.includes(text), timeoutMs);
  }

  async ended(timeoutMs = 20_000): Promise<string> {
    await this.until("console ended", () => this.state?.kind === "ended", timeoutMs);
    return (this.state as Extract<ConsoleState, { kind: "ended" }>).reason;
  }

  type(s: string): void {
    this.client.send(new TextEncoder().encode(s));
  }

  /** The bytes it showed, by offset, over [from, to). */
  range(from: number, to: number): string {
    return this.text.slice(from - (this.shown[0]?.offset ?? 0), to - (this.shown[0]?.offset ?? 0));
  }
}

const domain = () => admin.domainLookupByUUIDString(uuid);

beforeAll(async () => {
  admin = new LibvirtAdmin({ uri: URI });
  await admin.connectOpen();
  await admin.domainDefineXML(guest.xml);
  // The agent's stream closes soon after the last console leaves, so a held console can be tried in a test.
  cp = await startControlPlane({ CONSOLE_LINGER_MS: "1000" });
  const token = await json(
    await cp.api("/api/tokens", { method: "POST", json: { name: "console operator", role: "operator" } }),
  );
  operator = token.token;
  const { node, joinToken } = await createNode(cp, `console-${Date.now()}`);
  const listen = await freeLoopback();
  hostView = `http://${listen}`;
  agent = AgentProcess.start({
    server: cp.url,
    token: joinToken,
    libvirtUri: URI,
    logDir: QEMU_LOG_DIR,
    listen,
    args: FAST_AGENT_ARGS,
  });
  await waitConnected(cp, node.id);
  await eventually("the guest listed", async () => (await cp.api(`/api/vms/${uuid}`)).ok, 30_000);
}, 180_000);

afterAll(async () => {
  for (const v of open) v.client.close();
  for (const p of held) p.kill("SIGKILL");
  await agent?.dispose();
  if (admin) await removeFirmwareGuest(admin, guest);
  await admin?.connectClose();
  await cp?.dispose();
});

const openWriters = () => open.filter((v) => v.state?.kind === "open");
async function closeAll(): Promise<void> {
  for (const v of open.splice(0)) v.client.close();
}

describe("a serial console on a real guest", { timeout: 120_000 }, () => {
  it("boot output reaches the console; Ctrl-B gives the iPXE shell, and a typed echo comes back", async () => {
    // Started paused, so that nothing it prints goes out before the console is open.
    execFileSync("virsh", ["-c", URI, "start", "--paused", uuid], { stdio: "ignore" });
    const a = await Viewer.open("rw");
    await a.until("console open", () => a.state?.kind === "open");
    expect(a.state).toEqual({ kind: "open", mode: "rw", writer: true });
    await admin.domainResume(await domain());
    await a.sees("SeaBIOS", 30_000);
    // iPXE offers its shell for a moment after its banner: Ctrl-B until the prompt shows.
    const ctrlB = setInterval(() => a.type("\x02"), 250);
    try {
      await a.sees("iPXE>", 60_000);
    } finally {
      clearInterval(ctrlB);
    }
    a.type(`echo ${MARKER}\r`);
    await a.until("the echo's output", () => a.text.split(MARKER).length >= 3, 20_000); // typed echo + printed line
    // Offsets count every byte once, in order.
    for (let i = 1; i < a.shown.length; i++)
      expect(a.shown[i].offset).toBe(a.shown[i - 1].offset + a.shown[i - 1].bytes.byteLength);
  });

  it("a second opener sees the recent output first, with identical offsets, and watches: its input never reaches the guest; take moves the writer", async () => {
    const a = openWriters()[0];
    const b = await Viewer.open("rw");
    await b.until("b open", () => b.state?.kind === "open");
    expect(b.state).toEqual({ kind: "open", mode: "rw", writer: false });
    await b.sees(MARKER);
    const from = b.shown[0].offset;
    const to = Math.min(a.client.offset, b.client.offset);
    expect(b.range(from, to)).toBe(a.range(from, to));

    const watcherMarker = `w${randomBytes(4).toString("hex")}`;
    b.type(`echo ${watcherMarker}\r`);
    const check = `c${randomBytes(4).toString("hex")}`;
    a.type(`echo ${check}\r`);
    await a.until("a's later echo", () => a.text.split(check).length >= 3, 20_000);
    await b.sees(check);
    expect(a.text).not.toContain(watcherMarker);

    b.client.take();
    await b.until("b writes", () => b.state?.kind === "open" && b.state.writer);
    await a.until("a watches", () => a.state?.kind === "open" && !a.state.writer);
    const byB = `b${randomBytes(4).toString("hex")}`;
    b.type(`echo ${byB}\r`);
    await a.until("b's echo seen by a", () => a.text.split(byB).length >= 3, 20_000);
    const events = (await json(await cp.api(`/api/vms/${uuid}/events`))).events;
    expect(events.some((e: any) => e.action === "console.writer_changed" && e.actor === "token:console operator")).toBe(
      true,
    );
  });

  it("a dropped socket resumes from the last byte it had: nothing lost, nothing repeated", async () => {
    const b = openWriters().find((v) => v.state?.kind === "open" && v.state.writer)!;
    const before = b.sockets.length;
    b.sockets.at(-1)!.ws.terminate();
    const dropped = `d${randomBytes(4).toString("hex")}`;
    // typed into the new socket once it is up (the client queues it meanwhile)
    b.type(`echo ${dropped}\r`);
    await b
      .until("resumed", () => b.sockets.length > before && b.sockets.at(-1)!.ready !== undefined)
      .catch((err) => {
        console.log(
          "DBG",
          before,
          b.sockets.length,
          JSON.stringify(b.states),
          JSON.stringify(b.sockets.map((x) => x.ready)),
        );
        throw err;
      });
    await b.until("the echo after the resume", () => b.text.split(dropped).length >= 3, 20_000);
    const resumed = b.sockets.at(-1)!;
    const last = b.sockets[before - 1];
    const had = last.frames.length ? last.frames.at(-1)!.offset + last.frames.at(-1)!.length : resumed.ready.offset;
    expect(resumed.ready.offset).toBe(had);
    if (resumed.frames.length) expect(resumed.frames[0].offset).toBe(had);
    for (let i = 1; i < resumed.frames.length; i++)
      expect(resumed.frames[i].offset).toBe(resumed.frames[i - 1].offset + resumed.frames[i - 1].length);
    for (let i = 1; i < b.shown.length; i++)
      expect(b.shown[i].offset).toBe(b.shown[i - 1].offset + b.shown[i - 1].bytes.byteLength);
  });

  it("qx vms console shows the console in a terminal (raw mode); Ctrl-] leaves and the terminal is as it was", async () => {
    const qx = `${process.execPath} cli/qx.ts vms console ${uuid} --ro`;
    const cli = spawn("script", ["-qfec", `stty -g; ${qx}; echo "EXIT=$?"; stty -g`, "/dev/null"], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, QX_URL: cp.url, QX_API_TOKEN: operator },
    });
    held.push(cli);
    let out = "";
    cli.stdout.on("data", (d) => (out += d));
    await eventually(
      "the console in the terminal",
      async () => out.includes("read-only") && out.includes("iPXE"),
      30_000,
      50,
    );
    cli.stdin.write("\x1d");
    await eventually("qx left", async () => /EXIT=\d+/.test(out), 15_000, 50);
    expect(out).toContain("EXIT=0");
    expect(out).toContain("left the console");
    const modes = out.split(/\r?\n/).filter((l) => /^[0-9a-f]+(:[0-9a-f]+){10,}\s*$/.test(l.trim()));
    expect(modes).toHaveLength(2);
    expect(modes[1].trim()).toBe(modes[0].trim());
  });

  it("a console held on the host (virsh console) gives console_busy; force takes it over", async () => {
    await closeAll();
    // Wait for the agent's stream to close (the linger) before another client takes the console.
    await new Promise((r) => setTimeout(r, 3_000));
    const virsh = spawn("script", ["-qfec", `virsh -c ${URI} console ${uuid}`, "/dev/null"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    held.push(virsh);
    let virshOut = "";
    virsh.stdout.on("data", (d) => (virshOut += d));
    await eventually("virsh holds the console", async () => /Connected to domain/.test(virshOut), 20_000, 50);
    const busy = await Viewer.open("rw");
    expect(await busy.ended()).toBe("console_busy");
    const forced = await Viewer.open("rw", true);
    await forced.until("forced open", () => forced.state?.kind === "open");
    const again = `f${randomBytes(4).toString("hex")}`;
    forced.type(`echo ${again}\r`);
    await forced
      .until("echo through the forced console", () => forced.text.split(again).length >= 3, 20_000)
      .catch((err) => {
        console.log(
          "DBG",
          JSON.stringify(forced.states),
          JSON.stringify(forced.text.slice(-300)),
          virshOut.slice(-300),
        );
        throw err;
      });
    await eventually("virsh lost the console", async () => virsh.exitCode !== null, 15_000, 100);
    const events = (await json(await cp.api(`/api/vms/${uuid}/events`))).events;
    expect(events.some((e: any) => e.action === "console.opened" && /forced/.test(e.message))).toBe(true);
  });

  it("virsh destroy ends the console with vm_stopped", async () => {
    const v = openWriters()[0];
    await admin.domainDestroy(await domain());
    expect(await v.ended()).toBe("vm_stopped");
  });

  it("the host view opens the same console through the agent's local API (host token), without the control plane", async () => {
    await closeAll();
    await admin.domainDestroy(await domain()).catch(() => {}); // stopped already in a full run
    execFileSync("virsh", ["-c", URI, "start", "--paused", uuid], { stdio: "ignore" });
    const res = await fetch(`${hostView}/api/v1/vms/${uuid}/console`, {
      method: "POST",
      headers: { authorization: `Bearer ${keptHostToken(agent!)}`, "content-type": "application/json" },
      body: JSON.stringify({ mode: "rw" }),
    });
    const answer = await json(res);
    expect(res.status, JSON.stringify(answer)).toBe(201);
    expect(answer.url).toBe(`/api/v1/vms/${uuid}/console/ws`);
    const refused = await fetch(`${hostView}/api/v1/vms/${uuid}/console`, { method: "POST", body: "{}" });
    expect(refused.status).toBe(401);
    // The host view's console page alone lets xterm.js add <style> elements.
    const policy = async (path: string) =>
      (await fetch(`${hostView}${path}`)).headers.get("content-security-policy") ?? "";
    expect(await policy("/console")).toContain("style-src-elem 'self' 'unsafe-inline'");
    expect(await policy("/")).not.toContain("unsafe");
    const shown: Buffer[] = [];
    let state: ConsoleState | undefined;
    const local = new ConsoleClient({
      ticket: answer.ticket,
      connect: () => new WebSocket(`${hostView.replace("http", "ws")}${answer.url}`),
      onOutput: (bytes) => shown.push(Buffer.from(bytes)),
      onState: (s) => (state = s),
    });
    try {
      await eventually("host view console open", async () => state?.kind === "open", 20_000, 50);
      await admin.domainResume(await domain());
      await eventually("SeaBIOS in the host view", async () => Buffer.concat(shown).includes("SeaBIOS"), 30_000, 50);
      await admin.domainDestroy(await domain());
      await eventually("host view console ended", async () => state?.kind === "ended", 20_000, 50);
      expect(state).toMatchObject({ kind: "ended", reason: "vm_stopped" });
    } finally {
      local.close();
    }
  });

  it("killing the agent ends the console with host_offline; the scrollback is readable while the node is offline", async () => {
    await closeAll();
    await admin.domainCreate(await domain());
    const v = await Viewer.open("rw");
    await v.sees("SeaBIOS", 30_000);
    expect(agent!.output).not.toContain(MARKER);
    await agent!.dispose();
    agent = undefined;
    expect(await v.ended(90_000)).toBe("host_offline");
    const late = await Viewer.open("ro");
    expect(await late.ended()).toBe("host_offline");
    expect(late.text).toContain("iPXE");
    await admin.domainDestroy(await domain()).catch(() => {});
  });

  it("no typed marker reaches the events, the logs or D1", async () => {
    const events = JSON.stringify(await json(await cp.api(`/api/vms/${uuid}/events`)));
    expect(events).toContain("console.closed");
    expect(events).not.toContain(MARKER);
    expect(cp.logs).not.toContain(MARKER);
    const d1 = join(cp.persistDir, "v3", "d1");
    const files = walk(d1).filter((f) => /\.sqlite(-wal)?$/.test(f));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(readFileSync(f).includes(MARKER), f).toBe(false);
  });
});

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...walk(path));
    else out.push(path);
  }
  return out;
}
