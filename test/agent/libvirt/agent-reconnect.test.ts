// The agent's libvirt adapter when its daemon dies: a private libvirtd of our own (never the shared
// one) serving the test driver is killed and started again on the same socket; the adapter's calls
// fail with libvirt_error meanwhile, then it reconnects by itself and subscribes to lifecycle events
// again (and asks for a look, since events may have been missed). A URI it cannot speak is refused
// by the configuration (exit 2).
import { chownSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../agent/config.ts";
import { AgentFailure, Libvirt } from "../../../agent/host/libvirt.ts";
import type { LifecycleEvent } from "../../../agent/libvirt/index.ts";
import { startPrivateLibvirtd, type PrivateDaemon } from "../../../scripts/private-libvirtd.ts";
import { NODE_XML, VMS, silentLog } from "../helpers.ts";
import { socketDir } from "./support.ts";

const dir = socketDir();
const daemons: PrivateDaemon[] = [];
afterAll(async () => {
  for (const d of daemons) await d.stop();
});

async function daemon(): Promise<PrivateDaemon> {
  const d = await startPrivateLibvirtd(dir);
  daemons.push(d);
  return d;
}

describe("the agent's libvirt connection across a daemon restart", () => {
  it("fails calls while the daemon is gone, then reconnects and subscribes to events again", async () => {
    const first = await daemon();
    const xml = join(dir, "node.xml");
    copyFileSync(NODE_XML, xml);
    if (process.getuid?.() === 0) chownSync(xml, 65534, 65534);
    const uri = `test://${xml}?socket=${first.socket}`;
    const libvirt = new Libvirt(uri, silentLog, { reconnectMinMs: 100, reconnectMaxMs: 500 });
    let starts = 0;
    const events: LifecycleEvent[] = [];
    libvirt.watchLifecycle({ onLifecycle: (e) => events.push(e), onStart: () => starts++ });
    try {
      await expect.poll(() => libvirt.eventsRunning).toBe(true);
      expect(starts).toBe(1);
      // Events arrive on the agent's own connection (the test driver keeps state per connection).
      await libvirt.destroy(VMS.running.uuid);
      await expect.poll(() => events.map((e) => e.domain.uuid)).toContain(VMS.running.uuid);

      first.process.kill("SIGKILL");
      await expect.poll(() => libvirt.eventsRunning).toBe(false);
      const failure = await libvirt.state(VMS.running.uuid).catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(AgentFailure);
      expect((failure as AgentFailure).code).toBe("libvirt_error");

      await daemon(); // the same directory, so the same socket
      await expect.poll(() => libvirt.eventsRunning, { timeout: 30_000 }).toBe(true);
      expect(starts).toBe(2);
      expect((await libvirt.state(VMS.running.uuid)).state).toBe("RUNNING"); // a fresh test-driver copy
      events.length = 0;
      await libvirt.destroy(VMS.running.uuid);
      await expect.poll(() => events.map((e) => e.domain.uuid)).toContain(VMS.running.uuid);
    } finally {
      await libvirt.close();
    }
  });

  it("refuses, at start, a URI of a driver or transport it cannot speak (exit 2 names which)", () => {
    const config = (uri: string) => loadConfig(["--server", "http://127.0.0.1:9", "--libvirt-uri", uri], {});
    expect(() => config("xen:///system")).toThrow(ConfigError);
    expect(() => config("xen:///system")).toThrow(/--libvirt-uri: libvirt driver "xen"/);
    expect(() => config("qemu+tls://host/system")).toThrow(/transport "tls"/);
    expect(() => config("qemu:///system")).not.toThrow();
  });
});
