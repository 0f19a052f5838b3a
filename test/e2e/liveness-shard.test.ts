// Liveness through the shard end to end: the real control plane (wrangler dev, cost counts on) and a
// real agent, which keeps a liveness socket beside its link. While it lives its node's object sets
// no alarm at all (the shard's alarm looks at its pings); frozen (SIGSTOP), the shard has the node
// shown offline within about OFFLINE_AFTER_MS and a shard period, and node.offline is delivered.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebhookReceiver, type Delivery } from "../../scripts/webhook-receiver.ts";
import type { CostCounts } from "../../worker/cost-counts.ts";
import type { AgentProcess } from "../support/agent.ts";
import { ControlPlane, freePort } from "../support/control-plane.ts";
import { enrollAgent, eventually, getNode, json, SHORT_DEADLINES } from "./journey.ts";

/** Above the agent's 20 s heartbeat (a live agent is never this silent); the shard looks every 7.5 s. */
const OFFLINE_AFTER_MS = 30_000;
const SHARD_PERIOD_MS = OFFLINE_AFTER_MS / 4;

let cp: ControlPlane;
let agent: AgentProcess | undefined;
const receiver = new WebhookReceiver("liveness-secret");

type Counts = {
  session: CostCounts;
  /** RPC calls to the node's object, by method */
  calls: Record<string, number>;
  shards: Record<string, (CostCounts & { sockets: number }) | null>;
};

async function counts(nodeId: string): Promise<Counts> {
  const res = await cp.api(`/api/debug/counts?node=${nodeId}&cost=1&liveness=1`);
  const body = await json<{
    cost: { session: CostCounts; calls: Record<string, number> };
    liveness: { shards: Counts["shards"] };
  }>(res);
  return { session: body.cost.session, calls: body.cost.calls, shards: body.liveness.shards };
}
const shardSockets = (c: Counts) => Object.values(c.shards).reduce((n, s) => n + (s?.sockets ?? 0), 0);
const shardAlarms = (c: Counts) => Object.values(c.shards).reduce((n, s) => n + (s?.wakes.alarm ?? 0), 0);
const nodeAlarms = (c: Counts) => ({ fired: c.session.wakes.alarm ?? 0, set: c.session.sqlite.alarmWrites });

beforeAll(async () => {
  await receiver.up(await freePort());
  cp = await ControlPlane.start({
    vars: { ...SHORT_DEADLINES, QX_DEBUG_COUNTS: "1", OFFLINE_AFTER_MS: String(OFFLINE_AFTER_MS) },
  });
  const res = await cp.api("/api/notifications/targets", {
    method: "POST",
    json: { name: "liveness receiver", url: receiver.url, secret: receiver.secret, events: ["node.offline"] },
  });
  expect(res.status, await res.text()).toBe(201);
}, 120_000);

afterAll(async () => {
  await agent?.dispose();
  await cp?.dispose();
  await receiver.down();
});

describe("a real agent watched by its liveness shard", () => {
  let nodeId = "";

  it("a control plane restart drops both its sockets; the agent opens both again", async () => {
    const enrolled = await enrollAgent(cp, `liveness-${Date.now()}`);
    agent = enrolled.agent;
    nodeId = enrolled.nodeId;
    await eventually(
      "the agent's liveness socket held by a shard",
      async () => shardSockets(await counts(nodeId)) === 1,
    );
    const restartedAt = Date.now();
    await cp.restart();
    await eventually(
      "the node connected again on a new link",
      async () => {
        const node = await getNode(cp, nodeId);
        return node.connected && node.lastSeenAt !== null && Date.parse(node.lastSeenAt) >= restartedAt;
      },
      60_000,
    );
    await eventually(
      "its liveness socket held by a shard again",
      async () => shardSockets(await counts(nodeId)) === 1,
      60_000,
    );
  }, 180_000);

  it("sets no alarm of its node's own while alive; frozen, it is shown offline by the shard and node.offline goes out", async () => {
    if (!agent) throw new Error("the previous test enrolls the agent");
    await eventually(
      "the agent's liveness socket held by a shard",
      async () => shardSockets(await counts(nodeId)) === 1,
    );
    // The connect's own alarms (the first check, before the socket came) are done within a period.
    await new Promise((r) => setTimeout(r, SHARD_PERIOD_MS));

    const alive = await counts(nodeId);
    await new Promise((r) => setTimeout(r, OFFLINE_AFTER_MS + SHARD_PERIOD_MS));
    const stillAlive = await counts(nodeId);
    expect((await getNode(cp, nodeId)).connected).toBe(true);
    // Over more than OFFLINE_AFTER_MS: the shard looked several times, the node's object set and
    // ran no alarm (the fallback check would have run at least once).
    expect(shardAlarms(stillAlive) - shardAlarms(alive)).toBeGreaterThanOrEqual(4);
    expect(nodeAlarms(stillAlive)).toEqual(nodeAlarms(alive));

    agent.freeze();
    const frozenAt = Date.now();
    await eventually(
      "the frozen node shown offline",
      async () => (await getNode(cp, nodeId)).connected === false,
      // Generous for a slow machine, and still far short of the hourly wake a watched node keeps.
      OFFLINE_AFTER_MS + SHARD_PERIOD_MS + 60_000,
      250,
    );
    console.log(`frozen node shown offline after ${Date.now() - frozenAt} ms`);
    const offline = await counts(nodeId);
    // The shard told the node (its link then silent as long, or, if a frame came after the last
    // ping, silent a little later by its own alarm) and holds no socket for it any more.
    expect(offline.calls.watchEnded ?? 0).toBeGreaterThan(stillAlive.calls.watchEnded ?? 0);
    expect(shardSockets(offline)).toBe(0);
    const delivered = await eventually(
      "node.offline delivered",
      async () =>
        receiver.received.find((d: Delivery) => d.event === "node.offline" && JSON.stringify(d.body).includes(nodeId)),
      30_000,
      100,
    );
    expect(delivered.signatureOk).toBe(true);
  }, 240_000);
});
