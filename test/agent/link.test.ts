// The outbound link against a loopback control plane that drops, refuses and stalls: backoff that
// grows with jitter and caps, resets only after a stable link, connect timeout, dead-link detection,
// refused credentials. Then the real agent process: enrollment, hello + inventory after every
// (re)connect, commands over the socket, exit statuses, clean SIGTERM.
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AgentLink, DEFAULT_TIMINGS, Reconnects, backoffDelay, type LinkState } from "../../agent/link/connection.ts";
import { tokenDigest } from "../../agent/link/credentials.ts";
import type { AgentMessage } from "../../protocol/wire.ts";
import {
  LoopbackControlPlane,
  TEST_URI,
  spawnAgentProcess,
  type AgentProcess,
  VMS,
  silentLog,
  tempDir,
  until,
  type Behaviour,
} from "./helpers.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function controlPlane(behaviour: (attempt: number) => Behaviour = () => "accept") {
  const cp = await LoopbackControlPlane.start();
  cp.behaviour = behaviour;
  cleanups.push(() => cp.close());
  return cp;
}

function link(
  cp: LoopbackControlPlane,
  timings: Partial<ConstructorParameters<typeof AgentLink>[0]["timings"]>,
  random?: () => number,
) {
  const delays: { delay: number; attempt: number }[] = [];
  const states: LinkState[] = [];
  const refused: string[] = [];
  let opens = 0;
  const l = new AgentLink({
    url: cp.url.replace("http", "ws") + "/agent/connect",
    credential: () => "cred-1",
    timings: { connectTimeoutMs: 2_000, backoffBaseMs: 20, backoffCapMs: 160, stableAfterMs: 60_000, ...timings },
    log: silentLog,
    random,
    events: {
      onOpen: () => opens++,
      onMessage: () => {},
      onRefused: (d) => refused.push(d),
      onBackoff: (delay, attempt) => delays.push({ delay, attempt }),
      onStateChange: (s) => states.push(s),
    },
  });
  cleanups.push(() => l.stop());
  l.start();
  return { l, delays, states, refused, opens: () => opens };
}

describe("backoff", () => {
  it("grows exponentially from the base and caps (full jitter at its ceiling)", async () => {
    const cp = await controlPlane(() => "drop");
    const { delays, l } = link(cp, {}, () => 0.999999);
    await until(() => delays.length >= 7);
    await l.stop();
    expect(delays.slice(0, 7).map((d) => d.delay)).toEqual([19, 39, 79, 159, 159, 159, 159]);
    expect(delays.slice(0, 7).map((d) => d.attempt)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it("is jittered: uniform below the ceiling, never above it", async () => {
    const cp = await controlPlane(() => "refuse503");
    const { delays, l } = link(cp, { backoffBaseMs: 4, backoffCapMs: 16 });
    await until(() => delays.length >= 30);
    await l.stop();
    for (const { delay, attempt } of delays) expect(delay).toBeLessThanOrEqual(Math.min(16, 4 * 2 ** attempt));
    const capped = delays.filter((d) => d.attempt >= 2).map((d) => d.delay);
    expect(new Set(capped).size).toBeGreaterThan(3); // not a fixed delay
    expect(Math.max(...capped)).toBeGreaterThan(8);
    expect(cp.attempts.length).toBeGreaterThanOrEqual(30); // a 503 is retried, not treated as refusal
  });

  it("resets only after the link stayed up long enough", async () => {
    // attempts 0-2 refused (503); 3 accepted and closed by us after 50 ms (not stable); 4-5 refused;
    // 6 accepted and kept past stableAfter (1 s: a stall of this process must not make the first
    // one stable), then closed: the next delay starts over.
    const plan: Behaviour[] = ["refuse503", "refuse503", "refuse503", "accept", "refuse503", "refuse503", "accept"];
    const cp = await controlPlane((i) => plan[i] ?? "refuse503");
    const { delays, l, opens } = link(cp, { stableAfterMs: 1_000 }, () => 0.999999);
    await until(() => opens() === 1);
    await new Promise((r) => setTimeout(r, 50));
    cp.socket!.close(1012, "restart");
    await until(() => opens() === 2);
    await new Promise((r) => setTimeout(r, 1_100));
    cp.socket!.close(1012, "restart");
    await until(() => delays.length >= 8);
    await l.stop();
    expect(delays.slice(0, 8).map((d) => d.attempt)).toEqual([0, 1, 2, 3, 4, 5, 0, 1]);
  });
});

describe("reconnect spread (welcome.reconnectSpreadMs)", () => {
  it("after a lost link, every retry's window is at least the spread the welcome asked for, within the cap; first connects are not spread", async () => {
    // attempts 0-1 refused (a fresh start: plain exponential), 2 accepted then dropped by the
    // server, 3-5 refused, 6 accepted.
    const plan: Behaviour[] = ["refuse503", "refuse503", "accept", "refuse503", "refuse503", "refuse503", "accept"];
    const cp = await controlPlane((i) => plan[i] ?? "accept");
    cp.reconnectSpreadMs = 120;
    const { delays, l, opens } = link(cp, {}, () => 0.999999);
    await until(() => opens() === 1);
    cp.socket!.close(1012, "restart");
    await until(() => opens() === 2);
    await l.stop();
    // base 20, cap 160: 19, 39 before any link; then (the link was not stable, so the attempt count
    // goes on from 2) max(120, 20·2^n) within the cap: 120, 160, 160, 160.
    expect(delays.map((d) => d.attempt)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(delays.map((d) => d.delay)).toEqual([19, 39, 119, 159, 159, 159]);
  });

  it("spreads a fleet: 1,000 agents dropped at once, with the window a 1,000-node control plane asks for (34 s, within the 30 s cap), come back at most ~0.1 of them per second", async () => {
    const spread = 34_000; // reconnectSpreadMs(1000) in worker/config.ts (checked in test/worker/nodes.test.ts)
    const perSecond = new Map<number, number>();
    for (let i = 0; i < 1000; i++) {
      const s = Math.floor(backoffDelay(0, { backoffBaseMs: 1_000, backoffCapMs: 30_000 }, Math.random, spread) / 1000);
      perSecond.set(s, (perSecond.get(s) ?? 0) + 1);
    }
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(100);
    expect(Math.max(...perSecond.keys())).toBeLessThan(30); // the agent's cap bounds the window
  });
});

describe("faults", () => {
  it("a stalled handshake times out and is retried, one connect at a time", async () => {
    const cp = await controlPlane((i) => (i < 2 ? "stallHandshake" : "accept"));
    const { opens, states, l } = link(cp, { connectTimeoutMs: 200 });
    const t0 = Date.now();
    await until(() => opens() === 1, 5_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400); // two timeouts of 200 ms
    expect(cp.attempts).toHaveLength(3);
    expect(states.filter((s) => s === "connecting")).toHaveLength(3);
    expect(l.state).toBe("online");
  });

  it("two unanswered pings mean a dead link: it reconnects", async () => {
    const cp = await controlPlane((i) => (i === 0 ? "silent" : "accept"));
    cp.heartbeatMs = 200; // the welcome sets the agent's heartbeat
    const { opens, l } = link(cp, {});
    await until(() => opens() === 2, 5_000);
    expect(cp.attempts.map((a) => a.behaviour)).toEqual(["silent", "accept"]);
    // The answered link stays up over many heartbeats.
    await new Promise((r) => setTimeout(r, 2_000));
    expect(opens()).toBe(2);
    expect(l.state).toBe("online");
  });

  it("401 on the upgrade: refused once, never retried", async () => {
    const cp = await controlPlane(() => "refuse401");
    const { refused, l } = link(cp, {});
    await until(() => refused.length === 1);
    await new Promise((r) => setTimeout(r, 200));
    expect(cp.attempts).toHaveLength(1);
    expect(l.state).toBe("closed");
    expect(cp.attempts[0].authorization).toBe("Bearer cred-1");
  });

  it("close code 4001 (credential revoked): refused, never retried", async () => {
    const cp = await controlPlane(() => "close4001");
    const { refused } = link(cp, {});
    await until(() => refused.length === 1);
    await new Promise((r) => setTimeout(r, 200));
    expect(cp.attempts).toHaveLength(1);
    expect(refused[0]).toMatch(/4001/);
  });

  it("stop() closes cleanly with 1001 and does not reconnect", async () => {
    const cp = await controlPlane();
    const { l, opens } = link(cp, {});
    await until(() => opens() === 1);
    await l.stop();
    await until(() => cp.closes.length === 1);
    expect(cp.closes[0].code).toBe(1001);
    await new Promise((r) => setTimeout(r, 100));
    expect(cp.attempts).toHaveLength(1);
  });
});

// ---- the real agent process ------------------------------------------------------------------

function spawnAgent(args: string[], env: Record<string, string> = {}): AgentProcess {
  const agent = spawnAgentProcess(args, env);
  cleanups.push(agent.kill);
  return agent;
}

const FAST = ["--backoff-base", "50", "--backoff-cap", "200", "--poll-interval", "200", "--log-level", "info"];

describe("the agent process", () => {
  it("refused credential: exits 3 with a message saying so, after one attempt", async () => {
    const cp = await controlPlane();
    cp.credentials.add("the-current-credential");
    const stateDir = tempDir();
    writeFileSync(
      join(stateDir, "node.json"),
      JSON.stringify({ nodeId: "node-1", credential: "revoked-credential", server: cp.url }),
      { mode: 0o600 },
    );
    const agent = spawnAgent(["--server", cp.url, "--state-dir", stateDir, "--libvirt-uri", TEST_URI, ...FAST]);
    expect(await agent.exit).toBe(3);
    expect(agent.out()).toMatch(/credential refused/);
    expect(cp.attempts).toHaveLength(1);
    expect(agent.out()).not.toContain("revoked-credential"); // never logged
  });

  it("refused join token: exits 3 with a message saying so", async () => {
    const cp = await controlPlane();
    const agent = spawnAgent([
      "--server",
      cp.url,
      "--token",
      "used-join-token",
      "--state-dir",
      tempDir(),
      "--libvirt-uri",
      TEST_URI,
      ...FAST,
    ]);
    expect(await agent.exit).toBe(3);
    expect(agent.out()).toMatch(/join token refused: used, expired or unknown/);
    expect(agent.out()).not.toContain("used-join-token");
    expect(cp.attempts).toHaveLength(0);
  });

  it("bad configuration: exits 2 with a one-line message", async () => {
    const agent = spawnAgent(["--server", "ftp://example", "--state-dir", tempDir()]);
    expect(await agent.exit).toBe(2);
    expect(agent.out().trim().split("\n")).toHaveLength(1);
    expect(agent.out()).toMatch(/--server: expected an http\(s\):\/\/ or ws\(s\):\/\/ URL/);
  });

  it("after rotate_token: a refused credential plus a new join token re-enrolls once and connects", async () => {
    const cp = await controlPlane();
    cp.credentials.add("cred-new-holder"); // the old credential is no longer accepted
    cp.joinTokens.set("join-2", "cred-2");
    const stateDir = tempDir();
    writeFileSync(
      join(stateDir, "node.json"),
      JSON.stringify({
        nodeId: "node-1",
        credential: "cred-old",
        server: cp.url,
        joinTokenSha256: tokenDigest("join-1"),
      }),
      { mode: 0o600 },
    );
    const agent = spawnAgent([
      "--server",
      cp.url,
      "--token",
      "join-2",
      "--state-dir",
      stateDir,
      "--libvirt-uri",
      TEST_URI,
      ...FAST,
    ]);
    await cp.waitFor((m) => m.type === "hello");
    expect(cp.attempts.map((a) => a.authorization)).toEqual(["Bearer cred-old", "Bearer cred-2"]);
    expect(JSON.parse(readFileSync(join(stateDir, "node.json"), "utf8"))).toMatchObject({ credential: "cred-2" });
    agent.child.kill("SIGTERM");
    expect(await agent.exit).toBe(0);
  });

  it("enrolls, keeps the credential 0600, sends hello + inventory after every (re)connect, answers commands, stops cleanly", async () => {
    const cp = await controlPlane();
    cp.joinTokens.set("join-ok", "cred-ok");
    const stateDir = join(tempDir(), "state");
    const logDir = tempDir("qx-logs-");
    mkdirSync(logDir, { recursive: true });
    writeFileSync(
      join(logDir, `${VMS.running.name}.log`),
      "line 1\nline 2\n2026-01-01 qemu-system-x86_64: terminating on signal 15\n",
    );
    const agent = spawnAgent([
      "--server",
      cp.url,
      "--token",
      "join-ok",
      "--state-dir",
      stateDir,
      "--libvirt-uri",
      TEST_URI,
      "--log-dir",
      logDir,
      ...FAST,
    ]);

    const hello = await cp.waitFor((m) => m.type === "hello");
    expect(hello.payload).toMatchObject({
      protocolVersion: 1,
      libvirtVersion: expect.stringMatching(/^\d+\.\d+\.\d+$/),
    });
    const inv = await cp.waitFor((m): m is Extract<AgentMessage, { type: "inventory" }> => m.type === "inventory");
    expect(inv.payload.vms).toHaveLength(8);
    expect(cp.received.findIndex((m) => m.type === "hello")).toBeLessThan(
      cp.received.findIndex((m) => m.type === "inventory"),
    );
    expect(statSync(join(stateDir, "node.json")).mode & 0o777).toBe(0o600);
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    expect(JSON.parse(readFileSync(join(stateDir, "node.json"), "utf8"))).toMatchObject({
      nodeId: "node-1",
      credential: "cred-ok",
    });
    expect(agent.out()).not.toContain("cred-ok");
    expect(agent.out()).not.toContain("join-ok");

    const deadline = Date.now() + 10_000;
    cp.send({ type: "vm.forceStop", id: "f1", payload: { vmId: VMS.running.uuid, name: VMS.running.name, deadline } });
    const forced = await cp.waitFor((m) => m.id === "f1" && m.type === "result");
    expect(forced.payload).toMatchObject({ state: "STOPPED" });
    expect(cp.received.find((m) => m.id === "f1")!.type).toBe("ack");
    // The poll reports the change too (vm.changed), without a full inventory.
    const changed = await cp.waitFor((m) => m.type === "vm.changed");
    expect(changed.payload).toMatchObject({
      vms: [expect.objectContaining({ uuid: VMS.running.uuid, state: "STOPPED" })],
    });

    cp.send({
      type: "vm.logs",
      id: "l1",
      payload: { vmId: VMS.running.uuid, name: VMS.running.name, deadline, lines: 2, maxBytes: 8 << 20 },
    });
    const logs = await cp.waitFor((m) => m.id === "l1" && m.type === "result");
    const chunk = cp.received.find((m) => m.id === "l1" && m.type === "log.chunk")!;
    expect((chunk.payload as { text: string }).text).toBe(
      "line 2\n2026-01-01 qemu-system-x86_64: terminating on signal 15\n",
    );
    expect(logs.payload).toMatchObject({ linesReturned: 2, truncated: true, chunks: 1 });

    cp.send({
      type: "vm.stop",
      id: "late",
      payload: { vmId: VMS.paused.uuid, name: VMS.paused.name, deadline: Date.now() - 5_000, graceMs: 1_000 },
    });
    expect((await cp.waitFor((m) => m.id === "late")).payload).toMatchObject({ code: "expired" });

    // The control plane restarts: the agent reconnects and resends hello and the full inventory.
    cp.socket!.terminate();
    await until(() => cp.received.filter((m) => m.type === "hello").length === 2);
    await until(() => cp.received.filter((m) => m.type === "inventory").length === 2);

    agent.child.kill("SIGTERM");
    const t0 = Date.now();
    expect(await agent.exit).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5_000);
    await until(() => cp.closes.length === 2);
    expect(cp.closes[1].code).toBe(1001);
  });
});

describe("the control plane's clock", () => {
  it("a deadline counts as passed when it may have passed on the server: a slow welcome never makes a late command look on time", () => {
    const clock = new Reconnects(DEFAULT_TIMINGS, Math.random);
    // The connect went out 50 ms ago; the server (whose clock is ours here) stamped its welcome as the
    // request arrived, and the welcome took the rest of the 50 ms to come back.
    const askedAt = Date.now() - 50;
    clock.welcomed({ serverTime: askedAt }, askedAt);
    const deadline = Date.now() - 10; // passed 10 ms ago on the server's clock
    expect(clock.serverNow()).toBeGreaterThan(deadline);
    // Without knowing when it asked, the welcome's arrival is all there is (the older estimate).
    const unaware = new Reconnects(DEFAULT_TIMINGS, Math.random);
    unaware.welcomed({ serverTime: askedAt });
    expect(unaware.serverNow()).toBeLessThan(deadline);
  });
});
