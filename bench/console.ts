// Bench: a serial console through the control plane (wrangler dev, the node's Durable Object, the real
// agent on libvirtd + QEMU) to the echo guest (bench/echo-guest.ts, a zero-delay echo on its serial
// port). In the same run:
// - a keystroke's round trip, next to the floor probe's bare Durable Object WebSocket echo (same
//   wrangler dev settings), alternating, and to the same echo straight on libvirt's console stream
//   (the baseline: what the guest and libvirtd take);
// - a 10 MiB output flood: the isolate's heap (over workerd's inspector, after a GC) stays bounded,
//   a reader that keeps up gets every byte exactly, and a stalled reader is cut with `too_slow`.
// Needs QEMU; `BENCH_ONLY=console npm run bench`.
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import { LibvirtClient } from "../agent/libvirt/index.ts";
import { CONSOLE_ACK_EVERY_BYTES, decodeOutput, type ConsoleServerMessage } from "../protocol/console.ts";
import { createNode, eventually, json, waitConnected } from "../test/e2e/journey.ts";
import { AgentProcess } from "../test/support/agent.ts";
import { ControlPlane, freePort } from "../test/support/control-plane.ts";
import { EchoGuest, FLOOD_BYTES, FLOOD_KEY, floodBytes } from "./echo-guest.ts";
import { FloorProbe } from "./floor/probe.ts";
import { Inspector } from "./inspector.ts";
import { percentile } from "./load.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

const URI = "qemu:///system";
const ROUNDS = 300;
const WARMUP_ROUNDS = 20;
/** One keystroke each this often at most: the object drops input past 100 frames a second. */
const KEY_EVERY_MS = 15;
const FLOOD_WITHIN_MS = 15 * 60_000;
const HEAP_EVERY_MS = 2_000;
const MiB = 1024 * 1024;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number) => Math.round(x * 100) / 100;

/** Resolves when `check` holds, tested on every `poke()`; rejects after `ms`. */
class Waiter {
  private checks: (() => void)[] = [];
  poke(): void {
    for (const check of [...this.checks]) check();
  }
  until(what: string, check: () => boolean, ms = 20_000): Promise<void> {
    return new Promise((ok, fail) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.checks = this.checks.filter((c) => c !== test);
        if (err) fail(err);
        else ok();
      };
      const test = () => check() && done();
      const timer = setTimeout(() => done(new Error(`${what}: not within ${ms} ms`)), ms);
      this.checks.push(test);
      test();
    });
  }
}

/** A console socket as a browser holds it, without pacing (each keystroke goes at once): the offset
 *  of the next byte, acks every CONSOLE_ACK_EVERY_BYTES unless stalled, and what it kept. */
class RawConsole {
  readonly ws: WebSocket;
  readonly waiter = new Waiter();
  next = -1;
  private ackedAt = 0;
  /** bytes that skipped past `next` (a gap) */
  gaps = 0;
  keep: Buffer[] | null = null;
  ready: Extract<ConsoleServerMessage, { type: "ready" }> | null = null;
  closed: { reason: string; message?: string } | null = null;
  closeCode: number | null = null;
  notices = 0;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data, binary) => {
      if (!binary) {
        const msg = JSON.parse(String(data)) as ConsoleServerMessage;
        if (msg.type === "ready") {
          this.ready = msg;
          this.next = msg.offset;
          this.ackedAt = msg.offset;
        } else if (msg.type === "closed") this.closed = { reason: msg.reason, message: msg.message };
        else if (msg.type === "notice") this.notices++;
      } else this.output(new Uint8Array(data as Buffer));
      this.waiter.poke();
    });
    ws.on("close", (code) => ((this.closeCode = code), this.waiter.poke()));
    ws.on("error", () => {});
  }

  static async open(cp: ControlPlane, token: string, vmId: string, mode: "rw" | "ro"): Promise<RawConsole> {
    const res = await cp.api(`/api/vms/${vmId}/console`, { method: "POST", token, json: { mode } });
    if (res.status !== 201) throw new Error(`POST console answered ${res.status}: ${await res.text()}`);
    const { ticket, url } = await json<{ ticket: string; url: string }>(res);
    const ws = new WebSocket(new URL(url, cp.url).href.replace(/^http/, "ws"));
    const c = new RawConsole(ws);
    await new Promise((ok, fail) => (ws.once("open", ok), ws.once("error", fail)));
    ws.send(JSON.stringify({ type: "hello", ticket }));
    await c.waiter.until("console ready", () => c.ready !== null || c.closed !== null);
    if (!c.ready) throw new Error(`console refused: ${JSON.stringify(c.closed)}`);
    return c;
  }

  private output(frame: Uint8Array): void {
    const out = decodeOutput(frame);
    if (!out) return;
    const end = out.offset + out.bytes.byteLength;
    if (end <= this.next) return;
    if (out.offset > this.next) this.gaps += out.offset - this.next;
    const fresh = out.bytes.subarray(Math.max(0, this.next - out.offset));
    this.keep?.push(Buffer.from(fresh));
    this.next = end;
    if (this.next - this.ackedAt >= CONSOLE_ACK_EVERY_BYTES) {
      this.ackedAt = this.next;
      this.ws.send(JSON.stringify({ type: "ack", offset: this.next }));
    }
  }

  /** Types one byte and waits for output to move past it; the round trip in ms. */
  async keystroke(byte: number): Promise<number> {
    const want = this.next + 1;
    const t0 = performance.now();
    this.ws.send(Buffer.from([byte]));
    await this.waiter.until("the keystroke's echo", () => this.next >= want || this.closed !== null);
    if (this.closed) throw new Error(`console closed: ${JSON.stringify(this.closed)}`);
    return performance.now() - t0;
  }
}

/** A floor: a WebSocket to the floor probe's object, which sends each frame straight back
 *  (`/ws-echo`), or through the probe's echo client, a Node process as the agent is (`/ws-relay`). */
async function floorEcho(
  floor: FloorProbe,
  path: "/ws-echo" | "/ws-relay",
): Promise<(byte: number) => Promise<number>> {
  const ws = new WebSocket(`ws://127.0.0.1:${floor.port}${path}`);
  const waiter = new Waiter();
  let got = 0;
  ws.on("message", () => (got++, waiter.poke()));
  await new Promise((ok, fail) => (ws.once("open", ok), ws.once("error", fail)));
  return async (byte) => {
    const want = got + 1;
    const t0 = performance.now();
    ws.send(Buffer.from([byte]));
    await waiter.until("the floor's echo", () => got >= want);
    return performance.now() - t0;
  };
}

/** The baseline: the same keystrokes straight on libvirt's console stream, from this process. */
async function directEcho(uuid: string): Promise<number[]> {
  const client = await LibvirtClient.connect(URI);
  const stream = await client.openConsole(uuid);
  let got = 0;
  const waiter = new Waiter();
  stream.onData((b) => ((got += b.byteLength), waiter.poke()));
  try {
    // The banner went out before anyone listened: poke until the guest echoes.
    const poke = setInterval(() => stream.write(Buffer.from("?")), 200);
    await waiter.until("the echo guest answering", () => got > 0, 60_000).finally(() => clearInterval(poke));
    await sleep(300);
    const times: number[] = [];
    for (let i = 0; i < ROUNDS + WARMUP_ROUNDS; i++) {
      const want = got + 1;
      const t0 = performance.now();
      stream.write(Buffer.from([97 + (i % 26)]));
      await waiter.until("the echo", () => got >= want);
      if (i >= WARMUP_ROUNDS) times.push(performance.now() - t0);
      await sleep(KEY_EVERY_MS);
    }
    return times;
  } finally {
    await stream.close().catch(() => {});
    await client.close();
  }
}

export async function benchConsole(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const cleanup: (() => unknown)[] = [];
  try {
    const guest = await EchoGuest.start(URI, `console-bench-${randomBytes(4).toString("hex")}`);
    cleanup.unshift(() => guest.dispose());
    const direct = await directEcho(guest.uuid);

    const inspectorPort = await freePort();
    const cp = await ControlPlane.start({ rateLimits: false, inspectorPort, vars: { QX_DEBUG_COUNTS: "1" } });
    cleanup.unshift(() => cp.dispose());
    const floor = await FloorProbe.start();
    cleanup.unshift(() => floor.dispose());
    const token = (
      await json<{ token: string }>(
        await cp.api("/api/tokens", { method: "POST", json: { name: "bench", role: "operator" } }),
      )
    ).token;
    const { node, joinToken } = await createNode(cp, `bench-console-${Date.now()}`);
    const agent = AgentProcess.start({
      server: cp.url,
      token: joinToken,
      libvirtUri: URI,
      logDir: "/var/log/libvirt/qemu",
      args: ["--poll-interval", "3000", "--log-level", "warn"],
    });
    cleanup.unshift(() => agent.dispose());
    await waitConnected(cp, node.id, true, 60_000);
    await eventually("the echo guest listed", async () => (await cp.api(`/api/vms/${guest.uuid}`)).ok, 60_000);

    // Keystrokes: product and floor alternating, one of each per KEY_EVERY_MS at most.
    const writer = await RawConsole.open(cp, token, guest.uuid, "rw");
    cleanup.unshift(() => writer.ws.terminate());
    const from = writer.next;
    const poke = setInterval(() => writer.ws.send(Buffer.from("?")), 300);
    await writer.waiter
      .until("the echo through the console", () => writer.next > from, 60_000)
      .finally(() => clearInterval(poke));
    await sleep(500);
    const bare = await floorEcho(floor, "/ws-echo");
    const relayed = await floorEcho(floor, "/ws-relay");
    const relayTimes: number[] = [];
    const floorTimes: number[] = [];
    const relayedFloorTimes: number[] = [];
    for (let i = 0; i < ROUNDS + WARMUP_ROUNDS; i++) {
      const t0 = performance.now();
      const key = 97 + (i % 26);
      const r = await writer.keystroke(key);
      const f = await bare(key);
      const rf = await relayed(key);
      if (i >= WARMUP_ROUNDS) {
        relayTimes.push(r);
        floorTimes.push(f);
        relayedFloorTimes.push(rf);
      }
      await sleep(Math.max(0, KEY_EVERY_MS - (performance.now() - t0)));
    }
    for (const [p, id] of [
      [50, "consoleKeystrokeP50"],
      [99, "consoleKeystrokeP99"],
    ] as const) {
      const value = round(percentile(relayTimes, p));
      const floorValue = round(percentile(floorTimes, p));
      rows.push({
        name: `console: keystroke round trip p${p} (Worker, object, agent, libvirt, echo guest; ${relayTimes.length} keys)`,
        value,
        unit: "ms",
        floor: floorValue,
        overFloor: round(value - floorValue),
        baseline: round(percentile(direct, p)),
        ratio: round(value / floorValue),
        ...goal(id, { value, floor: floorValue }),
        note: "floor: a bare Durable Object WebSocket echo (floor probe); baseline: the same echo straight on libvirt's console stream",
      });
    }
    for (const p of [50, 99]) {
      const value = round(percentile(relayedFloorTimes, p));
      const floorValue = round(percentile(floorTimes, p));
      rows.push({
        name: `console floor: a keystroke relayed by a Durable Object to a Node client and back, p${p}`,
        value,
        unit: "ms",
        floor: floorValue,
        overFloor: round(value - floorValue),
        ratio: round(value / floorValue),
        note: `the platform's hops of the console's path with no product code, no libvirt, no guest; the console is ${round(percentile(relayTimes, p) - value)} ms over it`,
      });
    }
    if (writer.notices) rows.at(-1)!.note += `; ${writer.notices} input notices`;

    // The flood, on its own: a failure there keeps the keystroke rows.
    try {
      rows.push(...(await flood(cp, token, guest.uuid, node.id, writer, inspectorPort, cleanup)));
    } catch (err) {
      rows.push({ name: "console flood: FAILED", value: NaN, unit: "", note: (err as Error).message.split("\n")[0] });
    }
    return rows;
  } finally {
    for (const step of cleanup) await step();
  }
}

/** A reader that keeps up (the writer) and one that stalls (a watcher that stops reading) through a
 *  flood; the isolate's heap read every HEAP_EVERY_MS meanwhile. */
async function flood(
  cp: ControlPlane,
  token: string,
  vmId: string,
  nodeId: string,
  writer: RawConsole,
  inspectorPort: number,
  cleanup: (() => unknown)[],
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const stalled = await RawConsole.open(cp, token, vmId, "ro");
  cleanup.unshift(() => stalled.ws.terminate());
  const stalledFrom = stalled.next;
  stalled.ws.pause();
  const inspector = new Inspector(inspectorPort);
  cleanup.unshift(() => inspector.close());
  // The inspector can be slow to answer on a loaded machine: a few tries.
  let heapBefore = NaN;
  for (let i = 0; i < 3 && !Number.isFinite(heapBefore); i++)
    heapBefore = await inspector.heapAfterGc().catch(() => NaN);
  const heaps: number[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      heaps.push(await inspector.heapAfterGc().catch(() => NaN));
      await sleep(HEAP_EVERY_MS);
    }
  })();
  const start = writer.next;
  writer.keep = [];
  const t0 = performance.now();
  writer.ws.send(Buffer.from(FLOOD_KEY));
  await writer.waiter
    .until("the whole flood", () => writer.next >= start + FLOOD_BYTES || writer.closed !== null, FLOOD_WITHIN_MS)
    .finally(() => (sampling = false));
  const seconds = (performance.now() - t0) / 1000;
  await sampler;
  const got = Buffer.concat(writer.keep);
  const expected = floodBytes();
  let wrong = 0;
  for (let i = 0; i < FLOOD_BYTES; i++) if (got[i] !== expected[i]) wrong++;
  const lost = wrong + writer.gaps;
  rows.push({
    name: `console flood: bytes lost or wrong for a reader that keeps up (${FLOOD_BYTES.toLocaleString("en")} B)`,
    value: lost,
    unit: "B",
    ...goal("consoleFloodLost", { value: lost }),
    note: `${Math.round(seconds)} s, ${round(FLOOD_BYTES / MiB / seconds)} MiB/s (the guest's emulated UART sets the pace)${writer.closed ? `; the reader was closed: ${writer.closed.reason}` : ""}`,
  });
  const growth = round((Math.max(...heaps.filter(Number.isFinite)) - heapBefore) / MiB);
  const counts = await json<{ session: Record<string, number> }>(await cp.api(`/api/debug/counts?node=${nodeId}`));
  rows.push({
    name: "console flood: the isolate's heap growth, most during the flood over before (after GC)",
    value: growth,
    unit: "MiB",
    ...goal("consoleFloodHeap", { value: growth }),
    note: `before ${round(heapBefore / MiB)} MiB, ${heaps.length} readings every ${HEAP_EVERY_MS / 1000} s; output kept in the object's SQLite after it: ${counts.session.consoleOutputBytes?.toLocaleString("en")} B`,
  });
  stalled.ws.resume();
  await stalled.waiter.until("the stalled reader's close", () => stalled.closeCode !== null, 60_000);
  // NaN unless it was cut with too_slow.
  const sent = stalled.closed?.reason === "too_slow" ? round((stalled.next - stalledFrom) / 1024) : NaN;
  rows.push({
    name: "console flood: a stalled reader (never acks, stops reading), output it was sent before too_slow",
    value: sent,
    unit: "KiB",
    ...goal("consoleFloodTooSlow", { value: sent }),
    note: `closed: ${JSON.stringify(stalled.closed)} (close code ${stalled.closeCode}); the writer kept up meanwhile`,
  });
  return rows;
}

if (import.meta.filename === process.argv[1]) for (const row of await benchConsole()) console.log(row);
