// The libvirt client against the real daemon: libvirt's test driver (test/agent/fixtures/node.xml)
// opened through the shared libvirtd's socket, every procedure the agent uses checked on the wire by
// number (a recording relay between client and daemon) and by shape (each reply decodes to its last
// byte), 200 concurrent calls on one socket, lifecycle events, typed statistics, libvirt's own error
// codes; and a private libvirtd of our own, killed while calls wait on it.
import { copyFileSync, chmodSync, chownSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DestroyFlags,
  DomainState,
  ErrorCode,
  LibvirtClient,
  LibvirtError,
  LifecycleEventType,
  ListFlags,
  Proc,
  StatsGroup,
  UnsupportedUriError,
  resolveUri,
  type LifecycleEvent,
} from "../../../agent/libvirt/index.ts";
import { PacketStatus, PacketType } from "../../../agent/libvirt/protocol.ts";
import { startPrivateLibvirtd, type PrivateDaemon } from "../../../scripts/private-libvirtd.ts";
import { NODE_XML, VMS } from "../helpers.ts";
import { SYSTEM_SOCKET, recordingRelay, socketDir } from "./support.ts";

const URI = `test://${NODE_XML}`;
const byState = Object.entries(VMS).map(([state, vm]) => ({
  ...vm,
  state: DomainState[state as keyof typeof DomainState],
}));

describe("the client on the real daemon (test driver through libvirtd)", () => {
  let relay: Awaited<ReturnType<typeof recordingRelay>>;
  let client: LibvirtClient;

  beforeAll(async () => {
    relay = await recordingRelay(SYSTEM_SOCKET);
    client = await LibvirtClient.connect(`${URI}?socket=${relay.path}`);
  });
  afterAll(async () => {
    await client?.close();
    await relay?.close();
  });

  it("calls every procedure the agent uses under its own number, each reply decoding to its last byte", async () => {
    expect(await client.libVersion()).toMatch(/^\d+\.\d+\.\d+$/);
    expect((await client.hostname()).length).toBeGreaterThan(0);
    const all = await client.listDomains();
    expect(all.map((d) => d.name).sort()).toEqual(byState.map((v) => v.name).sort());
    const active = await client.listDomains(ListFlags.active);
    const inactive = await client.listDomains(ListFlags.inactive);
    expect(active.length + inactive.length).toBe(all.length);
    expect(inactive.every((d) => d.id === -1)).toBe(true);

    const running = await client.lookupByUuid(VMS.running.uuid);
    expect(running).toMatchObject({ name: VMS.running.name, uuid: VMS.running.uuid });
    expect(running.id).toBeGreaterThan(0);
    expect(await client.lookupByName(VMS.running.name)).toEqual(running);
    for (const vm of byState) expect((await client.domainState(vm.uuid)).state).toBe(vm.state);
    const info = await client.domainInfo(running);
    expect(info).toMatchObject({ state: DomainState.running, vcpus: expect.any(Number) });
    expect(typeof info.cpuTimeNs).toBe("bigint");
    expect(info.maxMemKiB).toBeGreaterThan(0n);
    expect(await client.domainXml(running)).toContain(`<uuid>${VMS.running.uuid}</uuid>`);

    await client.suspend(running);
    expect((await client.domainState(running)).state).toBe(DomainState.paused);
    await client.resume(running);
    await client.reboot(running);
    await client.shutdown(running);
    expect((await client.domainState(running)).state).toBe(DomainState.shutoff);
    await client.start(running);
    expect((await client.domainState(running)).state).toBe(DomainState.running);
    await client.destroy(running, DestroyFlags.graceful);
    await client.start(running);
    await client.destroy(running);
    expect((await client.domainState(running)).state).toBe(DomainState.shutoff);
    await client.start(running);

    const name = "libvirt-client-test-transient";
    const xml = `<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`;
    const transient = await client.createXml(xml);
    expect((await client.domainState(transient)).state).toBe(DomainState.running);
    await client.destroy(transient);
    const defined = await client.defineXml(xml.replace(name, `${name}-defined`));
    await client.undefine(defined);

    const stats = await client.allDomainStats({ stats: StatsGroup.state });
    expect(stats.length).toBe(all.length);
    const sub = await client.lifecycleEvents(() => {});
    await sub.close();
    await expect(client.pmWakeup(VMS.pmsuspended.uuid)).rejects.toMatchObject({ code: ErrorCode.NO_SUPPORT });
    await expect(client.openConsole(VMS.running.uuid)).rejects.toMatchObject({ code: ErrorCode.NO_SUPPORT });

    // On the wire: each call answered by a reply of the same procedure and serial.
    const calls = relay.packets.filter((p) => p.from === "client" && p.type === PacketType.call);
    const replies = relay.packets.filter((p) => p.from === "daemon" && p.type === PacketType.reply);
    for (const call of calls) {
      const reply = replies.find((r) => r.serial === call.serial);
      expect(reply, `reply to procedure ${call.procedure}`).toBeDefined();
      expect(reply!.procedure).toBe(call.procedure);
    }
    const used = new Set(calls.map((c) => c.procedure));
    const expected = Object.entries(Proc).filter(
      ([name]) => name !== "DOMAIN_EVENT_CALLBACK_LIFECYCLE" && name !== "CONNECT_CLOSE" && name !== "AUTH_POLKIT",
    );
    for (const [procName, number] of expected) expect(used.has(number), `${procName} (${number}) called`).toBe(true);
    const failed = replies.filter((r) => r.status === PacketStatus.error).map((r) => r.procedure);
    expect(failed.sort()).toEqual([Proc.DOMAIN_OPEN_CONSOLE, Proc.DOMAIN_PM_WAKEUP].sort());
  });

  it("answers 200 concurrent calls on one socket, each to its own caller", async () => {
    const calls = Array.from({ length: 200 }, (_, i) => {
      const vm = byState[i % byState.length];
      return i % 2
        ? client.lookupByName(vm.name).then((d) => expect(d.uuid).toBe(vm.uuid))
        : client.domainState(vm.uuid).then((s) => expect(s.state).toBe(vm.state));
    });
    await Promise.all(calls);
  });

  it("delivers lifecycle events of a suspended and resumed domain, and none after the subscription closes", async () => {
    const events: LifecycleEvent[] = [];
    const sub = await client.lifecycleEvents((e) => events.push(e));
    await client.suspend(VMS.running.uuid);
    await client.resume(VMS.running.uuid);
    await expect
      .poll(() => events.map((e) => e.event))
      .toEqual([LifecycleEventType.suspended, LifecycleEventType.resumed]);
    expect(events[0].domain).toMatchObject({ name: VMS.running.name, uuid: VMS.running.uuid });
    await sub.close();
    await client.suspend(VMS.running.uuid);
    await client.resume(VMS.running.uuid);
    await client.hostname(); // a round trip after the events would have come
    expect(events).toHaveLength(2);
  });

  it("gives statistics as typed parameters", async () => {
    const stats = await client.allDomainStats({
      stats: StatsGroup.state,
      domains: [VMS.paused.uuid, VMS.shutoff.uuid],
    });
    expect(stats.map((s) => s.domain.uuid)).toEqual([VMS.paused.uuid, VMS.shutoff.uuid]);
    expect(stats[0].params.get("state.state")).toEqual({ type: "int", value: DomainState.paused });
    expect(stats[1].params.get("state.state")).toEqual({ type: "int", value: DomainState.shutoff });
  });

  it("delivers libvirt's own error codes: no domain, operation invalid", async () => {
    const missing = await client.lookupByUuid("11111111-0000-4000-8000-0000000000ff").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(LibvirtError);
    expect(missing).toMatchObject({ code: ErrorCode.NO_DOMAIN, message: expect.stringMatching(/not found/i) });
    await expect(client.destroy(VMS.shutoff.uuid)).rejects.toMatchObject({ code: ErrorCode.OPERATION_INVALID });
    expect(await client.hostname()).toBeTruthy(); // errors leave the connection usable
  });
});

describe("URIs", () => {
  it("maps qemu:///system to virtqemud's socket first, then libvirtd's", () => {
    expect(resolveUri("qemu:///system")).toEqual({
      name: "qemu:///system",
      sockets: ["/var/run/libvirt/virtqemud-sock", "/var/run/libvirt/libvirt-sock"],
    });
    expect(resolveUri("qemu:///session", { XDG_RUNTIME_DIR: "/run/user/1000" }).sockets).toEqual([
      "/run/user/1000/libvirt/virtqemud-sock",
      "/run/user/1000/libvirt/libvirt-sock",
    ]);
  });

  it("takes ?socket= as the socket and leaves it out of the name the daemon opens", () => {
    expect(resolveUri("test+unix:///srv/node.xml?socket=/tmp/d.sock")).toEqual({
      name: "test:///srv/node.xml",
      sockets: ["/tmp/d.sock"],
    });
  });

  it("refuses unknown drivers, remote transports and hosts, saying which", () => {
    expect(() => resolveUri("xen:///system")).toThrow(/driver "xen"/);
    expect(() => resolveUri("qemu+ssh://root@host/system")).toThrow(/transport "ssh"/);
    expect(() => resolveUri("qemu://host/system")).toThrow(/remote libvirt host "host"/);
    expect(() => resolveUri("not a uri")).toThrow(UnsupportedUriError);
  });

  it("says which socket it could not reach", async () => {
    const dir = socketDir();
    await expect(LibvirtClient.connect(`qemu:///system?socket=${dir}/none.sock`)).rejects.toThrow(
      new RegExp(`cannot reach the libvirt daemon .*${dir}/none.sock: ENOENT`),
    );
  });
});

describe("a private libvirtd", () => {
  it("starts under directories it makes itself, as npm start's .wrangler/libvirtd on a fresh clone", async () => {
    const base = socketDir();
    chmodSync(base, 0o755); // a checkout anyone may enter; as root the daemon runs as nobody
    const d = await startPrivateLibvirtd(join(base, "clone/.wrangler/libvirtd"));
    try {
      const client = await LibvirtClient.connect(`test:///default?socket=${d.socket}`);
      expect((await client.listDomains()).length).toBeGreaterThan(0);
      await client.close();
    } finally {
      await d.stop();
    }
  });
});

describe("a private libvirtd killed while calls wait on it", () => {
  let daemon: PrivateDaemon;
  let xml: string;
  beforeAll(async () => {
    const dir = socketDir();
    daemon = await startPrivateLibvirtd(dir);
    xml = join(dir, "node.xml");
    copyFileSync(NODE_XML, xml);
    if (process.getuid?.() === 0) chownSync(xml, 65534, 65534);
  });
  afterAll(async () => {
    daemon?.process.kill("SIGCONT");
    await daemon?.stop();
  });

  it("fails every pending call at once with a clear error, and says the connection closed", async () => {
    const client = await LibvirtClient.connect(`test://${xml}?socket=${daemon.socket}`);
    expect((await client.domainState(VMS.running.uuid)).state).toBe(DomainState.running);
    let closed: LibvirtError | null = null;
    client.onClose((err) => (closed = err));
    daemon.process.kill("SIGSTOP"); // the calls below wait: the daemon cannot answer
    const pending = Array.from({ length: 20 }, () => client.domainState(VMS.running.uuid).catch((e: unknown) => e));
    let settled = 0;
    for (const p of pending) void p.then(() => settled++);
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(0);
    const killedAt = Date.now();
    daemon.process.kill("SIGKILL");
    const outcomes = await Promise.all(pending);
    expect(Date.now() - killedAt).toBeLessThan(5_000); // at once, not at a call timeout (60 s)
    for (const o of outcomes) {
      expect(o).toBeInstanceOf(LibvirtError);
      expect(o).toMatchObject({ code: ErrorCode.RPC, message: expect.stringMatching(/closed the connection/) });
    }
    expect(closed).toBeInstanceOf(LibvirtError);
    await expect(client.hostname()).rejects.toMatchObject({ message: expect.stringMatching(/closed the connection/) });
  });
});
