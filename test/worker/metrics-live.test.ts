// Live metrics in workerd: a viewer's watching read (`watch=1`) asks the node's agent for samples as
// they are taken (`metrics.live`, only to an agent that announced `liveMetrics`), at most once per
// half lease however many reads come, again on a new link; a single tick as the live agent sends it
// is read back at once; a plain read asks nothing.
import { describe, expect, it } from "vitest";
import { METRICS_WATCH_LEASE_MS, type MetricFigures } from "../../protocol/metrics.ts";
import {
  agentsClosedAfterEach,
  api,
  createNode,
  createToken,
  enroll,
  eventually,
  expectError,
  json,
  session,
  TestAgent,
  vmInfo,
  type Frame,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const figures = (cpuPct: number): MetricFigures => ({
  cpuPct,
  memUsedMiB: 40,
  memAssignedMiB: 64,
  diskReadBps: null,
  diskWriteBps: null,
  diskReadOps: null,
  diskWriteOps: null,
  netRxBps: null,
  netTxBps: null,
});

/** Connects an agent announcing `features` for a new node with one running VM, once the session has its hello. */
async function agentWith(features: string[], credential?: string) {
  const node = credential ? null : await enroll((await createNode()).joinToken);
  const agent = await TestAgent.connect(credential ?? node!.credential);
  agents.push(agent);
  agent.hello("host.test", features);
  return { agent, nodeId: node?.nodeId ?? "", credential: credential ?? node!.credential };
}

/** The frames the session sent before a `resync` asked for now: whatever a read sent is already on
 *  the socket when its answer came, so this sees it without waiting for time to pass. */
async function framesUntilMarker(agent: TestAgent, nodeId: string): Promise<Frame[]> {
  expect(await session(nodeId).resync()).toBe(true);
  const seen: Frame[] = [];
  for (;;) {
    const f = await agent.next();
    if (f.type === "resync") return seen;
    seen.push(f);
  }
}

describe("live metrics while a chart is watched", () => {
  it("a viewer's watching read asks the agent for live samples, once per half lease; a plain read asks nothing; a live tick reads back at once", async () => {
    const { agent, nodeId } = await agentWith(["metrics", "liveMetrics"]);
    const vm = vmInfo("live vm ü");
    agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    const viewer = await createToken("viewer");

    await json(await api(`/api/vms/${vm.uuid}/metrics?range=1h`, { token: viewer }));
    expect((await framesUntilMarker(agent, nodeId)).filter((f) => f.type === "metrics.live")).toEqual([]);

    await json(await api(`/api/vms/${vm.uuid}/metrics?range=1h&watch=1`, { token: viewer }));
    const asked = (await framesUntilMarker(agent, nodeId)).filter((f) => f.type === "metrics.live");
    expect(asked).toHaveLength(1);
    expect(asked[0].payload).toEqual({ leaseMs: METRICS_WATCH_LEASE_MS });

    // More watchers, the VM's chart and the node's: the lease still has more than half to run.
    for (let i = 0; i < 5; i++) {
      await json(await api(`/api/vms/${vm.uuid}/metrics?range=1h&watch=1`, { token: viewer }));
      await json(await api(`/api/nodes/${nodeId}/metrics?range=1h&watch=1`, { token: viewer }));
    }
    expect((await framesUntilMarker(agent, nodeId)).filter((f) => f.type === "metrics.live")).toEqual([]);

    // What a live agent sends: one frame per tick, readable by the next poll.
    const t = Date.now();
    agent.send({
      type: "metrics",
      id: "live-1",
      payload: { intervalMs: 10_000, ticks: [{ t, vms: [{ vmId: vm.uuid, ...figures(33) }], node: figures(7) }] },
    });
    await eventually(async () => {
      const answer = await json(await api(`/api/vms/${vm.uuid}/metrics?range=1h&watch=1`, { token: viewer }));
      expect(answer.points.at(-1)).toMatchObject({ t: Math.floor(t / 10_000) * 10_000, cpuPct: 33 });
    });

    await expectError(await api(`/api/vms/${vm.uuid}/metrics?range=1h&watch=yes`, { token: viewer }), 400);
  });

  it("an agent that did not announce liveMetrics is never sent metrics.live (it keeps its batches)", async () => {
    const { agent, nodeId } = await agentWith(["metrics"]);
    const vm = vmInfo("old agent vm");
    agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    const answer = await json(await api(`/api/vms/${vm.uuid}/metrics?range=1h&watch=1`));
    expect(answer).toMatchObject({ range: "1h", points: [] });
    await json(await api(`/api/nodes/${nodeId}/metrics?range=1h&watch=1`));
    expect((await framesUntilMarker(agent, nodeId)).map((f) => f.type)).not.toContain("metrics.live");
  });

  it("a new link starts in batches: the next watching read asks its agent again", async () => {
    const first = await agentWith(["metrics", "liveMetrics"]);
    const { nodeId, credential } = first;
    first.agent.inventory([]);
    await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(true));
    await json(await api(`/api/nodes/${nodeId}/metrics?range=1h&watch=1`));
    expect((await framesUntilMarker(first.agent, nodeId)).map((f) => f.type)).toContain("metrics.live");

    // The agent restarted (a new link replaces the old one) with the lease still running.
    const second = await agentWith(["metrics", "liveMetrics"], credential);
    second.agent.inventory([]);
    await eventually(async () => expect((await session(nodeId).agentFeatures()).includes("liveMetrics")).toBe(true));
    await json(await api(`/api/nodes/${nodeId}/metrics?range=1h&watch=1`));
    const asked = (await framesUntilMarker(second.agent, nodeId)).filter((f) => f.type === "metrics.live");
    expect(asked).toHaveLength(1);
  });
});
