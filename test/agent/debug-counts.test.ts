// The agent's debug counts (what the soak bench samples): answered over an IPC channel only when
// the agent runs with QX_DEBUG_COUNTS=1, and they follow what the agent holds: a live follow is
// counted while it runs and is gone from the count once the link it lived on drops.
import { afterEach, describe, expect, it } from "vitest";
import { serveDebugCounts } from "../../agent/debug-counts.ts";
import { AgentProcess } from "../support/agent.ts";
import { LoopbackControlPlane, TEST_URI, VMS, tempDir, until } from "./helpers.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("agent debug counts", () => {
  it("nothing listens without QX_DEBUG_COUNTS=1", () => {
    expect(serveDebugCounts(() => ({}), {})).toBe(false);
    expect(serveDebugCounts(() => ({}), { QX_DEBUG_COUNTS: "0" })).toBe(false);
  });

  it("answer the agent's memory and collection sizes; a follow leaves the count when its link drops", async () => {
    const cp = await LoopbackControlPlane.start();
    cleanups.push(() => cp.close());
    cp.joinTokens.set("join-counts", "cred-counts");
    const agent = AgentProcess.start({
      server: cp.url,
      token: "join-counts",
      libvirtUri: TEST_URI,
      logDir: tempDir(),
      args: ["--backoff-base", "50", "--backoff-cap", "200", "--log-level", "warn"],
      nodeFlags: ["--expose-gc"],
      debugCounts: true,
    });
    cleanups.push(() => agent.dispose());
    await cp.waitFor((m) => m.type === "inventory");

    const first = await agent.debugCounts();
    expect(first.rssBytes).toBeGreaterThan(first.heapUsedBytes);
    expect(first.heapUsedBytes).toBeGreaterThan(0);
    expect(first.counts).toMatchObject({
      follows: 0,
      powerQueues: 0,
      consoles: 0,
      consoleChannels: 0,
      consolePendingBytes: 0,
      vncRelays: 0,
      vncChannels: 0,
    });
    await expect.poll(async () => (await agent.debugCounts()).counts.inventoryReported, { timeout: 10_000 }).toBe(8);

    cp.send({
      type: "vm.logs.follow",
      id: "counted",
      payload: { vmId: "11111111-0000-4000-8000-000000000001", name: "web-running", deadline: Date.now() + 10_000 },
    });
    await cp.waitFor((m) => m.id === "counted" && m.type === "ack");
    expect((await agent.debugCounts()).counts.follows).toBe(1);
    cp.socket!.terminate();
    await until(() => cp.received.filter((m) => m.type === "hello").length === 2, 10_000);
    await expect.poll(async () => (await agent.debugCounts()).counts.follows, { timeout: 10_000 }).toBe(0);

    // A console that cannot open (the test driver has none) leaves nothing counted.
    cp.send({
      type: "console.open",
      id: "no-console",
      payload: { vmId: VMS.running.uuid, name: VMS.running.name, channel: 1, force: false, windowBytes: 262_144 },
    });
    await cp.waitFor((m) => m.id === "no-console" && m.type === "console.closed");
    expect((await agent.debugCounts()).counts).toMatchObject({ consoles: 0, consoleChannels: 0 });
  });
});
