// The agent against a real libvirtd + QEMU (npm test's first step, scripts/test-prereq.mjs, installs and
// starts them as root): a diskless 64 MiB type='qemu' domain started, a graceful stop that the guest
// never honours (no OS, no ACPI handling) answered at its deadline with the VM still running, a force
// stop that shuts it off, and its real /var/log/libvirt/qemu/<name>.log tailed.
import { rmSync } from "node:fs";
import { LibvirtClient } from "../../agent/libvirt/index.ts";
import { disklessQemuDomain } from "../support/qemu-domain.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandRunner } from "../../agent/host/commands.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { MAX_LOG_BYTES, type AgentMessage } from "../../protocol/wire.ts";
import { recorder, silentLog } from "./helpers.ts";

const URI = "qemu:///system";
const LOG_DIR = "/var/log/libvirt/qemu";
const { name, uuid, xml } = disklessQemuDomain("qx-agent-test");

let admin: LibvirtClient; // sets up and tears down the domain, outside the code under test
const libvirt = new Libvirt(URI, silentLog);
const rec = recorder();
const runner = new CommandRunner({
  libvirt,
  logDir: LOG_DIR,
  send: rec.send,
  log: silentLog,
  serverNow: Date.now,
  stopPollMs: 100,
});
const target = () => ({ vmId: uuid, name, deadline: Date.now() + 10_000 });
const payloadOf = (id: string, type: AgentMessage["type"]) =>
  rec.of(id).find((m) => m.type === type)?.payload as Record<string, unknown> | undefined;

beforeAll(async () => {
  admin = await LibvirtClient.connect(URI); // fails loudly when libvirtd is not running: start it (see the header)
  await admin.defineXml(xml);
});

afterAll(async () => {
  try {
    const dom = await admin.lookupByUuid(uuid);
    await admin.destroy(dom).catch(() => {});
    await admin.undefine(dom);
  } finally {
    await admin.close();
    await libvirt.close();
    rmSync(`${LOG_DIR}/${name}.log`, { force: true });
  }
});

describe("real libvirtd + QEMU", () => {
  it("starts the domain, times out a graceful stop with the VM still running, force-stops it, tails its QEMU log", async () => {
    expect((await libvirt.listDomains()).find((v) => v.uuid === uuid)).toMatchObject({
      name,
      state: "STOPPED",
      vcpus: 1,
      memoryMiB: 64,
    });
    expect(await libvirt.version()).toMatch(/^\d+\.\d+\.\d+$/);

    await runner.handle({ type: "vm.start", id: "start", payload: target() });
    expect(rec.of("start").map((m) => m.type)).toEqual(["ack", "result"]);
    expect(payloadOf("start", "result")).toMatchObject({ state: "RUNNING", libvirtState: "running" });

    const t0 = Date.now();
    await runner.handle({ type: "vm.stop", id: "stop", payload: { ...target(), graceMs: 1_500 } });
    const waited = Date.now() - t0;
    expect(rec.of("stop").map((m) => m.type)).toEqual(["ack", "result"]);
    expect(payloadOf("stop", "result")).toMatchObject({ state: "RUNNING", timedOut: true });
    expect(waited).toBeGreaterThanOrEqual(1_400);
    expect(waited).toBeLessThan(5_000);

    await runner.handle({ type: "vm.forceStop", id: "force", payload: target() });
    expect(payloadOf("force", "result")).toMatchObject({ state: "STOPPED", libvirtState: "shutoff", timedOut: false });

    await runner.handle({ type: "vm.logs", id: "logs", payload: { ...target(), lines: 20, maxBytes: MAX_LOG_BYTES } });
    const text = rec
      .of("logs")
      .filter((m) => m.type === "log.chunk")
      .map((m) => (m.payload as { text: string }).text)
      .join("");
    expect(text).toMatch(/qemu-system-x86_64: terminating on signal 15/);
    expect(payloadOf("logs", "result")).toMatchObject({
      logPath: `${LOG_DIR}/${name}.log`,
      linesReturned: expect.any(Number),
      chunks: 1,
    });
  }, 30_000);
});
