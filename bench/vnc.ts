// Bench: a graphical console's RFB round trip (a FramebufferUpdateRequest to its update) through the
// control plane (wrangler dev, the node's Durable Object, the real agent on libvirtd + QEMU), next to
// the same exchange straight on the host's loopback to the guest's VNC server, both in this run,
// alternating. Needs QEMU (a diskless SeaBIOS guest named vnc-bench-*); `BENCH_ONLY=vnc npm run bench`.
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { LibvirtAdmin } from "../test/support/libvirt-admin.ts";
import WebSocket from "ws";
import { FAST_AGENT_ARGS, createNode, eventually, json, waitConnected } from "../test/e2e/journey.ts";
import { AgentProcess } from "../test/support/agent.ts";
import { ControlPlane } from "../test/support/control-plane.ts";
import { percentile } from "./load.ts";
import type { BenchRow } from "./table.ts";

const URI = "qemu:///system";
const ROUNDS = 300;
const MAX_MS = 60_000;

/** A byte queue over either transport, read by exact counts. */
class Bytes {
  private parts: Buffer[] = [];
  private size = 0;
  private waiter: (() => void) | null = null;
  push(b: Buffer): void {
    this.parts.push(b);
    this.size += b.byteLength;
    this.waiter?.();
  }
  async read(n: number): Promise<Buffer> {
    while (this.size < n) {
      await new Promise<void>((ok, fail) => {
        const timer = setTimeout(() => fail(new Error(`no ${n} RFB bytes in time`)), 20_000);
        this.waiter = () => (clearTimeout(timer), ok());
      });
    }
    const all = Buffer.concat(this.parts);
    this.parts = [all.subarray(n)];
    this.size -= n;
    return all.subarray(0, n);
  }
}

type Rfb = { send(b: Buffer): void; bytes: Bytes; close(): void };

/** Handshake (None), then 32-bpp Raw; returns a timed round trip of a 16×16 non-incremental update. */
async function prepare(rfb: Rfb): Promise<() => Promise<number>> {
  const { bytes } = rfb;
  await bytes.read(12);
  rfb.send(Buffer.from("RFB 003.008\n"));
  const count = (await bytes.read(1))[0];
  await bytes.read(count);
  rfb.send(Buffer.from([1]));
  await bytes.read(4);
  rfb.send(Buffer.from([1]));
  const init = await bytes.read(24);
  await bytes.read(init.readUInt32BE(20));
  rfb.send(Buffer.from([0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]));
  rfb.send(Buffer.from([2, 0, 0, 1, 0, 0, 0, 0]));
  const request = Buffer.from([3, 0, 0, 0, 0, 0, 0, 16, 0, 16]);
  return async () => {
    const t0 = performance.now();
    rfb.send(request);
    const head = await bytes.read(4);
    for (let i = 0, n = head.readUInt16BE(2); i < n; i++) {
      const r = await bytes.read(12);
      await bytes.read(r.readUInt16BE(4) * r.readUInt16BE(6) * 4);
    }
    return performance.now() - t0;
  };
}

function direct(port: number): Promise<Rfb> {
  return new Promise((ok, fail) => {
    const bytes = new Bytes();
    const s: Socket = connect({ host: "127.0.0.1", port }, () =>
      ok({ send: (b) => s.write(b), bytes, close: () => s.destroy() }),
    );
    s.setNoDelay(true);
    s.on("data", (b) => bytes.push(b));
    s.once("error", fail);
  });
}

async function relayed(cp: ControlPlane, token: string, vmId: string): Promise<Rfb> {
  const res = await cp.api(`/api/vms/${vmId}/console`, { method: "POST", token, json: { type: "vnc", mode: "ro" } });
  const { ticket, url } = await json<{ ticket: string; url: string }>(res);
  const ws = new WebSocket(new URL(url, cp.url).href.replace(/^http/, "ws"));
  const bytes = new Bytes();
  let received = 0;
  ws.on("message", (data, binary) => {
    if (!binary) return;
    const b = data as Buffer;
    received += b.byteLength;
    bytes.push(b);
    ws.send(JSON.stringify({ type: "ack", offset: received }));
  });
  await new Promise((ok, fail) => (ws.once("open", ok), ws.once("error", fail)));
  ws.send(JSON.stringify({ type: "hello", ticket }));
  return { send: (b) => ws.send(b), bytes, close: () => ws.close() };
}

export async function benchVnc(): Promise<BenchRow[]> {
  const name = `vnc-bench-${randomBytes(4).toString("hex")}`;
  const uuid = crypto.randomUUID();
  const admin = new LibvirtAdmin({ uri: URI });
  await admin.connectOpen();
  const cp = await ControlPlane.start({ rateLimits: false });
  let agent: AgentProcess | undefined;
  try {
    await admin.domainCreateXML(`<domain type='qemu'><name>${name}</name><uuid>${uuid}</uuid>
      <memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
      <graphics type='vnc' listen='127.0.0.1' autoport='yes'/><video><model type='vga'/></video>
      <memballoon model='none'/></devices></domain>`);
    const xml = await admin.domainGetXMLDesc(await admin.domainLookupByUUIDString(uuid));
    const port = Number(/<graphics[^>]*port='(\d+)'/.exec(xml)?.[1]);
    const token = (
      await json<{ token: string }>(
        await cp.api("/api/tokens", { method: "POST", json: { name: "bench", role: "operator" } }),
      )
    ).token;
    // The host may run other guests: wait for this one, not for a count.
    const { node, joinToken } = await createNode(cp, `bench-vnc-${Date.now()}`);
    agent = AgentProcess.start({
      server: cp.url,
      token: joinToken,
      libvirtUri: URI,
      logDir: "/var/log/libvirt/qemu",
      args: FAST_AGENT_ARGS,
    });
    await waitConnected(cp, node.id);
    await eventually("the bench guest listed", async () => (await cp.api(`/api/vms/${uuid}`)).ok, 30_000);
    const through = await relayed(cp, token, uuid);
    const loop = await direct(port);
    const [viaRelay, viaLoopback] = await Promise.all([prepare(through), prepare(loop)]);
    const relayTimes: number[] = [];
    const loopTimes: number[] = [];
    const deadline = Date.now() + MAX_MS;
    for (let i = 0; i < ROUNDS + 20 && Date.now() < deadline; i++) {
      const r = await viaRelay();
      const l = await viaLoopback();
      if (i < 20) continue; // the first rounds warm up
      relayTimes.push(r);
      loopTimes.push(l);
    }
    through.close();
    loop.close();
    const round = (x: number) => Math.round(x * 100) / 100;
    const rows: BenchRow[] = [];
    for (const p of [50, 99]) {
      const value = round(percentile(relayTimes, p));
      const baseline = round(percentile(loopTimes, p));
      rows.push({
        name: `vnc: RFB update round trip p${p} (16×16 raw, ${relayTimes.length} rounds)`,
        value,
        unit: "ms",
        baseline,
        ratio: round(value / baseline),
        note: "baseline: the same request straight to the guest's VNC server on the host's loopback",
      });
    }
    return rows;
  } finally {
    await agent?.dispose();
    const dom = await admin.domainLookupByUUIDString(uuid).catch(() => null);
    if (dom) await admin.domainDestroy(dom).catch(() => {});
    await admin.connectClose();
    rmSync(`/var/log/libvirt/qemu/${name}.log`, { force: true });
    await cp.dispose();
  }
}

if (import.meta.filename === process.argv[1]) for (const row of await benchVnc()) console.log(row);
