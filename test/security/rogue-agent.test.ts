// One node's credential cannot hurt the others: against the real control plane (wrangler dev), a
// rogue agent floods for 10 s with the costliest frames the protocol accepts, as fast as the frame
// limit allows, while a viewer lists VMs and an operator resets a VM on an honest node with its
// real agent. The rogue writes at most 10,000 events, is closed with a reason, its node is flagged
// for admins, and the honest node's records and events come out exact. (Latency and memory during
// the same flood are figures of `npm run bench`, section isolation.)
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOSE } from "../../protocol/wire.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess, writeNodeXml } from "../support/agent.ts";
import { RogueAgent } from "../support/rogue-agent.ts";
import { enrollAgent, getNode, getVm, json, startControlPlane } from "../e2e/journey.ts";

let cp: ControlPlane;
let dir = "";
const agents: AgentProcess[] = [];
const honest = { web: randomUUID(), db: randomUUID(), nodeId: "" };
const FLOOD_MS = 10_000;

beforeAll(async () => {
  cp = await startControlPlane();
  dir = mkdtempSync(join(tmpdir(), "qx-rogue-host-"));
  const uri = writeNodeXml(dir, [
    { name: "honest-web", uuid: honest.web, runstate: "running" },
    { name: "honest-db", uuid: honest.db, runstate: "shutoff" },
  ]);
  const a = await enrollAgent(cp, "honest", { libvirtUri: uri, expectVms: 2 });
  honest.nodeId = a.nodeId;
  agents.push(a.agent);
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.dispose()));
  await cp?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function eventsOf(vmId: string): Promise<{ at: string; action: string; actor: string }[]> {
  return (await json(await cp.api(`/api/vms/${vmId}/events`))).events;
}

describe("a rogue agent with a valid credential", () => {
  it("writes at most 10,000 events in 10 s, is closed with a reason and flagged; the honest node stays exact", async () => {
    const viewer = (await json(await cp.api("/api/tokens", { method: "POST", json: { name: "v", role: "viewer" } })))
      .token as string;
    const operator = (
      await json(await cp.api("/api/tokens", { method: "POST", json: { name: "o", role: "operator" } }))
    ).token as string;
    const rogue = await RogueAgent.enroll(cp, "rogue");
    const eventsBefore = (await eventsOf(honest.web)).length;

    const floodStart = Date.now();
    // 150 frames a second: under the 200 a second the frame limit allows, so only the cost limits act.
    const flooding = rogue.flood(FLOOD_MS, 150);
    const statuses: number[] = [];
    let resets = 0;
    const viewing = (async () => {
      while (Date.now() - floodStart < FLOOD_MS) {
        statuses.push((await cp.api("/api/vms?limit=50", { token: viewer })).status);
      }
    })();
    const operating = (async () => {
      while (Date.now() - floodStart < FLOOD_MS) {
        const res = await cp.api(`/api/vms/${honest.web}/reset_state`, { method: "POST", token: operator });
        const body = await json(res);
        expect(res.status, JSON.stringify(body)).toBe(200);
        expect(body, JSON.stringify(body)).toMatchObject({ source: "hypervisor", vm: { state: "RUNNING" } });
        resets++;
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const [outcome] = await Promise.all([flooding, viewing, operating]);

    // Throttled: closed with the reason, and a reconnect does not buy a fresh budget.
    expect(outcome.closes.length).toBeGreaterThanOrEqual(1);
    expect(outcome.closes[0]).toMatchObject({
      code: CLOSE.overloaded,
      reason: expect.stringMatching(/work budget|backlog/),
    });
    const node = await getNode(cp, rogue.nodeId);
    expect((node as unknown as { flag: { code: string } | null }).flag?.code).toBe("agent_overloaded");
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.every((s) => s === 200)).toBe(true);

    // Events of the rogue's VMs written during the flood (its discovery included).
    let written = 0;
    for (const id of rogue.uuids) {
      written += (await eventsOf(id)).filter((e) => Date.parse(e.at) >= floodStart).length;
    }
    console.log(
      `rogue: ${outcome.framesSent} frames on ${outcome.links} links (${outcome.refusedConnects} connects refused), ` +
        `${written} event rows in ${FLOOD_MS / 1000} s; closes: ${JSON.stringify(outcome.closes.slice(0, 3))}`,
    );
    expect(written).toBeLessThanOrEqual(10_000);

    // The honest node: every record as its hypervisor says, every reset in the trail, nothing else.
    expect((await getVm(cp, honest.web)).state).toBe("RUNNING");
    expect((await getVm(cp, honest.db)).state).toBe("STOPPED");
    const trail = await eventsOf(honest.web);
    expect(trail.filter((e) => e.action === "reset_state")).toHaveLength(resets);
    expect(trail.length - eventsBefore).toBe(resets);
    expect(resets).toBeGreaterThan(0);
  }, 120_000);
});
