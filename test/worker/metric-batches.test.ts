// Acknowledged metrics batches in workerd: the welcome announces `metricsAck`; a batch's frames are
// held by the node's Durable Object and stored together at its last frame, which is answered with
// `metrics.stored`; a batch cut short (its agent moved on to another) is still stored, unanswered; an
// older agent's frames, without a batch, are stored at once and never answered.
import { env, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { NodeSession } from "../../worker/session/node-session.ts";
import { figures } from "./metrics-history.ts";
import {
  agentsClosedAfterEach,
  api,
  BASE,
  createNode,
  enroll,
  eventually,
  json,
  TestAgent,
  vmInfo,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const samplesHeld = (nodeId: string) =>
  runInDurableObject(env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId)), (s: NodeSession) => s.metrics.counts());

async function nodeWithVm() {
  const { joinToken } = await createNode();
  const { nodeId, credential } = await enroll(joinToken);
  const agent = await TestAgent.connect(credential);
  agents.push(agent);
  agent.hello("host.test", ["metrics", "metricsAck"]);
  const vm = vmInfo("batched vm");
  agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  const t0 = Date.now() - 120_000;
  const frame = (id: string, ks: number[], batch?: { id: string; last: boolean }) => ({
    type: "metrics",
    id,
    payload: {
      intervalMs: 10_000,
      ticks: ks.map((k) => ({
        t: t0 + k * 10_000,
        vms: [{ vmId: vm.uuid, ...figures(Math.max(0, k)) }],
        node: figures(1),
      })),
      ...(batch ? { batch } : {}),
    },
  });
  return { agent, nodeId, vm, frame };
}

describe("acknowledged metrics batches", () => {
  it("holds a batch's frames and stores them together at its last, answering metrics.stored", async () => {
    const { agent, nodeId, frame } = await nodeWithVm();
    agent.send(frame("f0", [0, 1, 2], { id: "batch-a", last: false }));
    agent.send(frame("f1", [3, 4, 5], { id: "batch-a", last: false }));
    // Frames are taken in order: a frame of no batch, stored at once, shows the two before it held.
    agent.send(frame("single", [-5]));
    await eventually(async () => expect((await samplesHeld(nodeId)).raw).toBe(2));
    agent.send(frame("f2", [6, 7], { id: "batch-a", last: true }));
    const stored = await agent.next("metrics.stored");
    expect(stored.id).toBe("batch-a");
    // 8 more ticks of the VM and of the node
    expect((await samplesHeld(nodeId)).raw).toBe(2 + 16);
  });

  it("stores a batch cut short when the agent moves on, answering only the one that ended", async () => {
    const { agent, nodeId, vm, frame } = await nodeWithVm();
    agent.send(frame("f0", [0, 1], { id: "cut-short", last: false }));
    agent.send(frame("f1", [2, 3], { id: "whole", last: true }));
    expect((await agent.next("metrics.stored")).id).toBe("whole");
    expect((await samplesHeld(nodeId)).raw).toBe(8);
    const answer = await json<{ points: { cpuPct: number | null }[] }>(
      await api(`/api/vms/${vm.uuid}/metrics?range=1h`),
    );
    expect(answer.points.map((p) => p.cpuPct).filter((c) => c !== null)).toEqual([0, 1, 2, 3]);
    expect(agent.frames.filter((f) => f.type === "metrics.stored")).toEqual([]);
  });

  it("rolls up a whole batch however long ago its ticks were taken; a lone old frame waits for a late one", async () => {
    const { agent, nodeId, vm } = await nodeWithVm();
    // Ten minutes of ticks that ended twenty minutes ago (a batch sent late: a backlog, a replay).
    const from = Math.floor((Date.now() - 30 * 60_000) / 300_000) * 300_000;
    const ticks = Array.from({ length: 60 }, (_, k) => ({
      t: from + k * 10_000,
      vms: [{ vmId: vm.uuid, ...figures(k % 7) }],
    }));
    const send = (id: string, part: typeof ticks, batch?: { id: string; last: boolean }) =>
      agent.send({ type: "metrics", id, payload: { intervalMs: 10_000, ticks: part, ...(batch ? { batch } : {}) } });
    // As an older agent sends it: stored, but no bucket is closed by a frame this old.
    send("old-agent", ticks.slice(0, 30));
    await eventually(async () => expect((await samplesHeld(nodeId)).raw).toBe(30));
    expect((await samplesHeld(nodeId)).rollup).toBe(0);
    // The rest as a whole batch: both 5-minute buckets close at once.
    send("b-0", ticks.slice(30, 45), { id: "late", last: false });
    send("b-1", ticks.slice(45), { id: "late", last: true });
    expect((await agent.next("metrics.stored")).id).toBe("late");
    expect(await samplesHeld(nodeId)).toMatchObject({ raw: 60, rollup: 2 });
  });

  it("stores an older agent's frames at once and never answers them", async () => {
    const { agent, nodeId, frame } = await nodeWithVm();
    agent.send(frame("old-0", [0, 1]));
    await eventually(async () => expect((await samplesHeld(nodeId)).raw).toBe(4));
    agent.send(frame("marker", [2], { id: "marker", last: true }));
    expect((await agent.next("metrics.stored")).id).toBe("marker");
    expect(agent.frames.filter((f) => f.type === "metrics.stored")).toEqual([]);
  });

  it("announces metricsAck in the welcome", async () => {
    const { credential } = await enroll((await createNode()).joinToken);
    const res = await SELF.fetch(`${BASE}/agent/connect`, {
      headers: { upgrade: "websocket", authorization: `Bearer ${credential}` },
    });
    const ws = res.webSocket!;
    const first = new Promise<string>((resolve) => ws.addEventListener("message", (e) => resolve(e.data as string)));
    ws.accept();
    expect(JSON.parse(await first).payload.features).toContain("metricsAck");
    ws.close(1000, "test done");
  });
});
