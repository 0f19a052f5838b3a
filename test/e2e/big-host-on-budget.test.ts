// A 1,000-VM host on the real control plane (wrangler dev, local D1, the node's Durable Object), through
// the agent's own link, inventory reporter and metrics sampler over a NAMED FAKE host (a thousand
// running domains in memory, counters moving with time: no libvirt holds that many here). Its metrics
// batch, several times the node's byte burst, goes paced under the node's byte budget: the link is
// never closed, the node never flagged, and every sample lands. Then its digests, at an unchanged
// inventory, cost one D1 row read each (the session's cost meter, QX_DEBUG_COUNTS=1).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { InventoryReporter } from "../../agent/host/inventory.ts";
import type { Libvirt } from "../../agent/host/libvirt.ts";
import { MetricsSampler } from "../../agent/host/metrics.ts";
import { AgentLink } from "../../agent/link/connection.ts";
import type { MetricsAnswer } from "../../protocol/metrics.ts";
import { AGENT_ENROLL_PATH } from "../../protocol/wire-constants.ts";
import {
  EnrollResponse,
  mapLibvirtState,
  PROTOCOL_VERSION,
  WIRE_FEATURES,
  type AgentMessage,
  type VmInfo,
} from "../../protocol/wire.ts";
import type { CostCounts } from "../../worker/cost-counts.ts";
import { ControlPlane } from "../support/control-plane.ts";
import { movingCounters } from "../support/moving-counters.ts";
import { createNode, eventually, json } from "./journey.ts";

const VMS = 1_000;
/** The node's byte budget here: 300 kB/s with a 3 s burst (900 kB), a tenth of the batch below. */
const BUDGET = { BUDGET_BYTES_PER_SECOND: "300000", BUDGET_BURST_SECONDS: "3" };
/** The agent's pace: half the budget. */
const PACE = 150_000;
/** Ticks in the batch: 12 ticks of 1,000 VM samples, four frames of about 650 kB. */
const TICKS = 12;
const INTERVAL_MS = 10_000;

const uuidOf = (i: number) =>
  `${(i % 16).toString(16)}${String(i).padStart(7, "0")}-b16e-4000-8000-${String(i).padStart(12, "0")}`;
const vmInfos: VmInfo[] = Array.from({ length: VMS }, (_, i) => ({
  uuid: uuidOf(i),
  name: `big host vm ${i}`,
  state: mapLibvirtState("running"),
  libvirtState: "running",
  vcpus: 1,
  memoryMiB: 512,
}));

/** A NAMED FAKE libvirt: a thousand running domains whose counters move with the time since it was made. */
function fakeHost(): Libvirt {
  const born = Date.now();
  const host = {
    listDomains: async () => vmInfos,
    activeCounters: async () => movingCounters(vmInfos, born),
  };
  return host as unknown as Libvirt;
}

let cp: ControlPlane;
let nodeId: string;
let link: AgentLink;
let reporter: InventoryReporter;
let sampler: MetricsSampler;
/** when each frame was handed to the link, its type and its bytes */
const sent: { at: number; type: string; bytes: number }[] = [];
const linkLost: { code: number; reason: string }[] = [];
/** the time the sampler stamps its next tick with */
let stamp: number | null = null;

async function costCounts(): Promise<CostCounts> {
  const body = await json<{ cost: { session: CostCounts } }>(await cp.api(`/api/debug/counts?node=${nodeId}&cost=1`));
  return body.cost.session;
}

beforeAll(async () => {
  cp = await ControlPlane.start({ vars: { QX_DEBUG_COUNTS: "1", ...BUDGET } });
  const { node, joinToken } = await createNode(cp, "big-host-on-budget");
  nodeId = node.id;
  const res = await fetch(cp.url + AGENT_ENROLL_PATH, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ joinToken, hostname: "big-host" }),
  });
  const { credential } = EnrollResponse.parse(await res.json());
  const host = fakeHost();
  const send = (msg: AgentMessage) => {
    const ok = link.send(msg);
    if (ok) sent.push({ at: Date.now(), type: msg.type, bytes: JSON.stringify(msg).length });
    return ok;
  };
  const peerFeatures = () => new Set<string>(WIRE_FEATURES);
  reporter = new InventoryReporter({
    libvirt: host,
    send,
    log: pino({ level: "silent" }),
    pollMs: 3_600_000,
    digestIntervalMs: 1_000,
    peerFeatures,
  });
  sampler = new MetricsSampler({
    libvirt: host,
    intervalMs: INTERVAL_MS,
    log: pino({ level: "silent" }),
    send,
    peerFeatures,
    hostCpus: 64,
    serverNow: () => stamp ?? link.serverNow(),
    batchTicks: TICKS,
    paceBytesPerSecond: PACE,
  });
  let welcomed: () => void = () => {};
  const up = new Promise<void>((r) => (welcomed = r));
  link = new AgentLink({
    url: `${cp.url.replace(/^http/, "ws")}/agent/connect`,
    credential: () => credential,
    // Only the link's "link lost" warnings are kept (close code and reason), nothing printed.
    log: pino(
      { level: "warn" },
      {
        write: (line: string) => {
          const e = JSON.parse(line) as { msg?: string; code?: number; reason?: string };
          if (e.msg === "link lost") linkLost.push({ code: e.code ?? 0, reason: e.reason ?? "" });
        },
      },
    ),
    events: {
      onOpen: () => {
        send({
          type: "hello",
          id: crypto.randomUUID(),
          payload: {
            agentVersion: "big-host-test",
            hostname: "big-host",
            libvirtVersion: "fake",
            protocolVersion: PROTOCOL_VERSION,
            features: [...WIRE_FEATURES],
          },
        });
        void reporter.fullSync();
      },
      onMessage: (msg) => {
        if (msg.type === "welcome") welcomed();
        if (msg.type === "resync") void reporter.resync(msg.id, msg.payload);
        if (msg.type === "metrics.stored") sampler.stored(msg.id);
      },
      onRefused: () => {},
    },
  });
  link.start();
  await up;
  await eventually(
    "the big host's inventory stored",
    async () => (await json<{ node: { vmCount: number } }>(await cp.api(`/api/nodes/${nodeId}`))).node.vmCount === VMS,
    120_000,
    500,
  );
}, 240_000);

afterAll(async () => {
  reporter?.stopPolling();
  sampler?.stop();
  await link?.stop();
  await cp?.dispose();
});

describe("a 1,000-VM host's metrics batch against the node's byte budget", () => {
  it("goes paced under the budget, the link is never closed, the node never flagged, and every sample lands", async () => {
    // The batch: TICKS ticks stamped 10 s apart over the last two minutes, taken as fast as the host answers.
    const from = Math.floor((Date.now() - (TICKS + 1) * INTERVAL_MS) / INTERVAL_MS) * INTERVAL_MS;
    await sampler.sampleNow(); // counters only
    for (let k = 0; k < TICKS; k++) {
      stamp = from + k * INTERVAL_MS;
      await sampler.sampleNow();
    }
    stamp = null;
    await sampler.idle();
    const frames = sent.filter((f) => f.type === "metrics");
    const batchBytes = frames.reduce((n, f) => n + f.bytes, 0);
    expect(frames.length).toBe(4);
    expect(batchBytes).toBeGreaterThan(2 * 900_000); // more than twice the node's burst: all at once it would be refused
    expect(sampler.counts().metricsPending).toBe(0);
    // The pace: each frame waits for its predecessor's bytes at PACE (timers fire late, never early).
    for (let i = 1; i < frames.length; i++)
      expect(frames[i].at - frames[i - 1].at).toBeGreaterThanOrEqual(Math.floor((frames[i - 1].bytes * 1000) / PACE));

    // Every tick of the first, a middle and the last VM, and of the node, is stored.
    const stamps = Array.from({ length: TICKS }, (_, k) => from + k * INTERVAL_MS);
    const storedTimes = async (path: string) =>
      (await json<MetricsAnswer>(await cp.api(`${path}?range=1h`))).points
        .filter((p) => p.cpuPct !== null)
        .map((p) => p.t);
    for (const path of [0, 500, VMS - 1]
      .map((i) => `/api/vms/${uuidOf(i)}/metrics`)
      .concat(`/api/nodes/${nodeId}/metrics`))
      await eventually(
        `every tick of ${path} stored`,
        async () => JSON.stringify(await storedTimes(path)) === JSON.stringify(stamps),
        60_000,
        500,
      );
    // The batch was acknowledged once stored whole: the agent keeps none of it.
    await eventually("the batch acknowledged", async () => sampler.counts().metricsInFlight === 0, 30_000, 200);
    expect(linkLost).toEqual([]);
    const { node } = await json<{ node: { flag: unknown; connected: boolean } }>(await cp.api(`/api/nodes/${nodeId}`));
    expect(node.flag).toBeNull();
    expect(node.connected).toBe(true);
  }, 180_000);
});

describe("the big host's digests at an unchanged inventory", () => {
  /** The session's counts once it took every frame sent and its D1 counts stopped moving. */
  async function allHandled(): Promise<CostCounts> {
    let last = "";
    return eventually(
      "every frame sent handled",
      async () => {
        const c = await costCounts();
        const now = JSON.stringify(c.d1);
        const done = (c.wakes.webSocketMessage ?? 0) >= sent.length && now === last;
        last = now;
        return done ? c : false;
      },
      30_000,
      300,
    );
  }

  it("read one D1 row each, not a row per VM", async () => {
    await reporter.digestNow(); // the first reads the node's rows and keeps their digest
    const before = await allHandled();
    const digests = 5;
    for (let i = 0; i < digests; i++) await reporter.digestNow();
    const after = await allHandled();
    expect(sent.filter((f) => f.type === "inventory.digest").length).toBe(digests + 1);
    expect(after.d1.withoutMeta - before.d1.withoutMeta).toBe(0);
    expect(after.d1.statements - before.d1.statements).toBe(digests);
    expect(after.d1.rowsRead - before.d1.rowsRead).toBe(digests);
    expect(linkLost).toEqual([]);
  }, 120_000);
});
