// The libvirt client on qemu:///system with a real QEMU guest that needs no OS (SeaBIOS and iPXE on
// its serial port): statistics of a running guest as typed parameters, and its console stream both
// ways (Ctrl-B gives iPXE's shell, which echoes). Written first: tearing a console down while both
// directions are busy must not deadlock (go-libvirt's stream teardown deadlocks in that case).
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DomainState,
  ErrorCode,
  LibvirtClient,
  LibvirtError,
  StatsFlags,
  StatsGroup,
  type ConsoleStream,
} from "../../../agent/libvirt/index.ts";
import { firmwareGuest } from "../../support/firmware-guest.ts";

const LOG_DIR = "/var/log/libvirt/qemu";
const guest = firmwareGuest("libvirt-console");
let client: LibvirtClient;

/** Collects a console's output as text (latin1: the firmware prints bytes, not UTF-8). */
function reader(stream: ConsoleStream) {
  const r = { text: "", ended: null as { error?: LibvirtError } | null };
  stream.onData((c) => (r.text += Buffer.from(c).toString("latin1")));
  stream.onEnd((e) => (r.ended = e));
  return r;
}

/** Restarts the guest and takes it to iPXE's shell through the console. */
async function toIpxeShell(): Promise<{ stream: ConsoleStream; out: ReturnType<typeof reader> }> {
  await client.destroy(guest.uuid).catch(() => {});
  await client.start(guest.uuid);
  const stream = await client.openConsole(guest.uuid, { force: true });
  const out = reader(stream);
  await expect.poll(() => out.text, { timeout: 60_000 }).toMatch(/Ctrl-B for the iPXE command line/);
  // iPXE waits a few seconds for Ctrl-B; keep pressing until its prompt shows.
  const press = setInterval(() => stream.write(Uint8Array.of(0x02)), 200);
  try {
    await expect.poll(() => out.text, { timeout: 30_000 }).toMatch(/iPXE> /);
  } finally {
    clearInterval(press);
  }
  return { stream, out };
}

beforeAll(async () => {
  client = await LibvirtClient.connect("qemu:///system"); // fails loudly when libvirtd is not running
  await client.defineXml(guest.xml);
}, 120_000);

afterAll(async () => {
  try {
    await client.destroy(guest.uuid).catch(() => {});
    await client.undefine(guest.uuid);
  } finally {
    await client.close();
    rmSync(`${LOG_DIR}/${guest.name}.log`, { force: true });
  }
}, 60_000);

describe("a console stream on a real QEMU guest", () => {
  it("tears down while both directions are busy without a deadlock, and the connection goes on", async () => {
    const { stream, out } = await toIpxeShell();
    // Type while the guest echoes (a character and a backspace, so iPXE's line never fills), data
    // flowing both ways when close() is called.
    const typist = (target: ConsoleStream) => {
      let typing = true;
      const done = (async () => {
        while (typing) {
          if (!target.write(Buffer.from("x\b".repeat(4)))) await new Promise<void>((r) => target.onDrain(r));
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      return async () => {
        typing = false;
        await done;
      };
    };
    let stopTyping = typist(stream);
    try {
      const echoedBefore = out.text.length;
      await expect.poll(() => out.text.length, { timeout: 30_000 }).toBeGreaterThan(echoedBefore + 256);
      const t0 = Date.now();
      await stream.close();
      expect(Date.now() - t0).toBeLessThan(10_000); // the finish handshake, not a hang
    } finally {
      await stopTyping();
    }
    expect(out.ended).not.toBeNull();
    expect(stream.ended).toBe(true);
    expect(client.closedWith).toBeNull();
    expect((await client.domainState(guest.uuid)).state).toBe(DomainState.running);

    // Abort while both directions are busy: the same.
    const again = await client.openConsole(guest.uuid);
    const out2 = reader(again);
    stopTyping = typist(again);
    try {
      await expect.poll(() => out2.text.length, { timeout: 30_000 }).toBeGreaterThan(256);
      await again.abort();
    } finally {
      await stopTyping();
    }
    expect(again.ended).toBe(true);
    expect(await client.hostname()).toBeTruthy();
  }, 180_000);

  it("carries the firmware's output and the typed text both ways: iPXE's shell echoes", async () => {
    const { stream, out } = await toIpxeShell();
    expect(out.text).toMatch(/SeaBIOS|iPXE/);
    const mark = out.text.length;
    stream.write(Buffer.from("echo qx-console-roundtrip"));
    await expect.poll(() => out.text.slice(mark), { timeout: 30_000 }).toContain("echo qx-console-roundtrip");
    stream.write(Buffer.from("\r"));
    await expect.poll(() => out.text.slice(mark), { timeout: 30_000 }).toMatch(/\r?\nqx-console-roundtrip\r?\n/);
    expect(stream.counts.out).toBeGreaterThan(20);

    // Someone else holding the console: refused without force; taken over with it.
    const refused = await client.openConsole(guest.uuid).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(LibvirtError);
    expect((refused as LibvirtError).code).not.toBe(ErrorCode.RPC); // the daemon's refusal, not ours
    const taker = await client.openConsole(guest.uuid, { force: true });
    await expect.poll(() => out.ended).not.toBeNull();
    await taker.close();

    // The guest powered off: an open console ends.
    const last = await client.openConsole(guest.uuid);
    const lastOut = reader(last);
    await client.destroy(guest.uuid);
    await expect.poll(() => lastOut.ended, { timeout: 30_000 }).not.toBeNull();
  }, 180_000);
});

describe("statistics of a running guest", () => {
  it("gives CPU time, vCPUs, interface and state as typed parameters, counters as BigInt", async () => {
    await client.destroy(guest.uuid).catch(() => {});
    await client.start(guest.uuid);
    const read = async () =>
      (
        await client.allDomainStats({
          stats: StatsGroup.state | StatsGroup.cpuTotal | StatsGroup.vcpu | StatsGroup.interface | StatsGroup.balloon,
          flags: StatsFlags.active,
        })
      ).find((r) => r.domain.uuid === guest.uuid)!;
    const first = await read();
    expect(first.params.get("state.state")).toEqual({ type: "int", value: DomainState.running });
    expect(first.params.get("cpu.time")).toMatchObject({ type: "ullong" });
    expect(first.params.get("vcpu.current")).toEqual({ type: "uint", value: 1 });
    expect(first.params.get("net.count")).toEqual({ type: "uint", value: 1 });
    expect(first.params.get("balloon.maximum")).toMatchObject({ type: "ullong", value: 65536n });
    const cpu = (r: typeof first) => r.params.get("cpu.time")!.value as bigint;
    await expect.poll(async () => cpu(await read()) > cpu(first), { timeout: 30_000 }).toBe(true);
    const info = await client.domainInfo(guest.uuid);
    expect(info.state).toBe(DomainState.running);
    expect(info.maxMemKiB).toBe(65536n);
  }, 120_000);
});
