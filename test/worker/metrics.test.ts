// Metrics in workerd: `metrics` frames from an agent kept in the node's Durable Object SQLite and read
// back through GET /api/vms/:id/metrics and /api/nodes/:id/metrics (viewer role, bad range 400,
// unknown ids 404); the welcome announces `metrics`; raw samples roll up into 5-minute means and
// leave after a day, the means after 30 days; an offline stretch answers as a gap.
import { env, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ROLLUP_STEP_MS, type MetricFigures } from "../../protocol/metrics.ts";
import type { NodeSession } from "../../worker/session/node-session.ts";
import {
  agentsClosedAfterEach,
  api,
  BASE,
  createNode,
  createToken,
  enroll,
  eventually,
  expectError,
  json,
  TestAgent,
  uuid,
  vmInfo,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const figures = (cpuPct: number, diskWriteBps: number | null = null): MetricFigures => ({
  cpuPct,
  memUsedMiB: 40,
  memAssignedMiB: 64,
  diskReadBps: 0,
  diskWriteBps,
  diskReadOps: 0,
  diskWriteOps: 0,
  netRxBps: null,
  netTxBps: null,
});
const sessionOf = (nodeId: string) => env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId));

describe("metrics", () => {
  it("keeps the agent's frames and answers them to a viewer, per VM and for the node", async () => {
    const { agent, nodeId } = await TestAgent.forNewNode();
    agents.push(agent);
    const vm = vmInfo("metrics vm ü");
    agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    const t = Date.now();
    const tick = (at: number, cpu: number) => ({
      t: at,
      vms: [{ vmId: vm.uuid, ...figures(cpu, 4096) }],
      node: figures(3),
    });
    // A batch of two ticks, and one stamped in the future (a skewed clock): dropped.
    agent.send({
      type: "metrics",
      id: "m1",
      payload: { intervalMs: 10_000, ticks: [tick(t - 10_000, 12.5), tick(t, 12.5), tick(t + 3_600_000, 99)] },
    });

    const viewer = await createToken("viewer");
    const answer = await eventually(async () => {
      const a = await json(await api(`/api/vms/${vm.uuid}/metrics?range=1h`, { token: viewer }));
      expect(a.points.length).toBeGreaterThan(0);
      return a;
    });
    expect(answer).toMatchObject({ range: "1h", stepMs: 10_000 });
    expect(answer.points.filter((p: { cpuPct: number | null }) => p.cpuPct !== null).length).toBeGreaterThanOrEqual(1);
    expect(answer.points.every((p: { cpuPct: number | null }) => p.cpuPct === null || p.cpuPct === 12.5)).toBe(true);
    expect(answer.points.find((p: { cpuPct: number | null }) => p.cpuPct !== null)).toMatchObject({
      memUsedMiB: 40,
      memAssignedMiB: 64,
      diskWriteBps: 4096,
      netRxBps: null,
    });
    const node = await json(await api(`/api/nodes/${nodeId}/metrics?range=24h`, { token: viewer }));
    expect(node).toMatchObject({ range: "24h", stepMs: 60_000 });
    expect(node.points[0]).toMatchObject({ cpuPct: 3 });
    expect((await json(await api(`/api/vms/${vm.uuid}/metrics`))).range).toBe("1h");

    await expectError(await api(`/api/vms/${vm.uuid}/metrics?range=2h`), 400, "invalid_request");
    await expectError(await api(`/api/vms/${uuid()}/metrics`), 404, "not_found");
    await expectError(await api(`/api/nodes/no-such-node/metrics`), 404, "not_found");
    await expectError(await api(`/api/vms/${vm.uuid}/metrics`, { token: null }), 401);
  });

  it("announces metrics in the welcome, so only an agent that sees it sends them", async () => {
    const { nodeId, credential } = await enroll((await createNode()).joinToken);
    const res = await SELF.fetch(`${BASE}/agent/connect`, {
      headers: { upgrade: "websocket", authorization: `Bearer ${credential}` },
    });
    const ws = res.webSocket!;
    const first = new Promise<string>((resolve) => ws.addEventListener("message", (e) => resolve(e.data as string)));
    ws.accept();
    const welcome = JSON.parse(await first);
    expect(welcome).toMatchObject({ type: "welcome", payload: { nodeId } });
    expect(welcome.payload.features).toContain("metrics");
    ws.close(1000, "test done");
  });

  it("rolls raw samples into 5-minute means, drops raw after a day and means after 30 days, and answers an offline stretch as a gap", async () => {
    const nodeId = `metrics-retention-${uuid()}`;
    const vmId = uuid();
    const day = 86_400_000;
    const start = Math.floor(Date.now() / ROLLUP_STEP_MS) * ROLLUP_STEP_MS - 40 * day;
    await runInDurableObject(sessionOf(nodeId), async (session: NodeSession) => {
      const history = session.metrics;
      const put = (t: number, cpu: number) =>
        history.ingest(
          { intervalMs: 10_000, ticks: [{ t, vms: [{ vmId, ...figures(cpu) }], node: figures(cpu / 2) }] },
          t,
        );
      // Two 5-minute buckets 40 days ago: one at 10 %, one at 30 %.
      for (let i = 0; i < 30; i++) put(start + i * 10_000, 10);
      for (let i = 30; i < 60; i++) put(start + i * 10_000, 30);
      put(start + 600_000, 50); // closes both buckets
      expect(history.counts()).toMatchObject({ rollup: 4 }); // (vm + node) x 2 buckets

      // 35 days later: the old raw rows have gone and the old means too (past 30 days).
      const later = start + 35 * day;
      for (let i = 0; i < 31; i++) put(later + i * 10_000, 20);
      expect(history.counts().raw).toBe(2 * 31);
      expect(history.counts().rollup).toBe(2); // only the new closed bucket
      const month = history.series(vmId, "30d", later + 400_000);
      expect(month.points.filter((p) => p.cpuPct !== null).map((p) => p.cpuPct)).toEqual([20]);

      // Silence for 20 minutes (node offline), then samples again: the hour shows a gap between.
      const back = later + 1_500_000;
      for (let i = 0; i < 3; i++) put(back + i * 10_000, 70);
      const hour = history.series(vmId, "1h", back + 30_000);
      const values = hour.points.map((p) => p.cpuPct);
      const gapAt = values.indexOf(null);
      expect(gapAt).toBeGreaterThan(0);
      expect(values.slice(0, gapAt).every((v) => v === 20)).toBe(true);
      expect(values.slice(gapAt + 1)).toEqual([70, 70, 70]);
      const nodeHour = history.series(null, "1h", back + 30_000);
      expect(nodeHour.points.at(-1)?.cpuPct).toBe(35);
    });
  });
});
