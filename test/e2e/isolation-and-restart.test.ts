// End to end: two nodes with their own agents stay apart (an agent cannot claim or act on another
// node's VM), and a control-plane restart keeps every record while the agents reconnect by themselves.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess, writeNodeXml } from "../support/agent.ts";
import {
  FAST_AGENT_ARGS,
  enrollAgent,
  eventually,
  getNode,
  getVm,
  json,
  listVms,
  startControlPlane,
  waitConnected,
  waitVmState,
} from "./journey.ts";

let cp: ControlPlane;
const dirs: string[] = [];
const agents: AgentProcess[] = [];
const a = { web: randomUUID(), db: randomUUID(), nodeId: "" };
const b = { app: randomUUID(), nodeId: "", stateDir: "" };

function hostXml(domains: Parameters<typeof writeNodeXml>[1]): string {
  const dir = mkdtempSync(join(tmpdir(), "qx-e2e-host-"));
  dirs.push(dir);
  return writeNodeXml(dir, domains);
}

beforeAll(async () => {
  cp = await startControlPlane();
  const [na, nb] = await Promise.all([
    enrollAgent(cp, "alpha", {
      libvirtUri: hostXml([
        { name: "alpha-web", uuid: a.web, runstate: "running" },
        { name: "alpha-db", uuid: a.db, runstate: "running", vcpus: 4, memoryMiB: 8192 },
      ]),
      expectVms: 2,
    }),
    enrollAgent(cp, "bravo", {
      libvirtUri: hostXml([{ name: "bravo-app", uuid: b.app, runstate: "shutoff" }]),
      expectVms: 1,
    }),
  ]);
  a.nodeId = na.nodeId;
  b.nodeId = nb.nodeId;
  b.stateDir = nb.agent.stateDir;
  agents.push(na.agent, nb.agent);
});

afterAll(async () => {
  await Promise.all(agents.map((x) => x.dispose()));
  await cp?.dispose();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("node isolation", () => {
  it("lists each node's own VMs only", async () => {
    expect((await listVms(cp, a.nodeId)).map((v) => v.name).sort()).toEqual(["alpha-db", "alpha-web"]);
    expect((await listVms(cp, b.nodeId)).map((v) => v.name)).toEqual(["bravo-app"]);
    expect((await getNode(cp, a.nodeId)).vmCount).toBe(2);
    expect((await getNode(cp, b.nodeId)).vmCount).toBe(1);
  });

  it("sends a VM's commands to its own node only", async () => {
    const res = await cp.api(`/api/vms/${a.web}/stop?wait=true`, { method: "POST" });
    expect(res.status).toBe(200);
    expect((await json(res)).vm.state).toBe("STOPPED");
    expect((await getVm(cp, b.app)).state).toBe("STOPPED");
    const start = await cp.api(`/api/vms/${b.app}/start?wait=true`, { method: "POST" });
    expect(start.status).toBe(200);
    expect((await getVm(cp, a.db)).state).toBe("RUNNING");
    expect((await getVm(cp, a.web)).state).toBe("STOPPED");
  });

  it("ignores an agent that reports another node's VM as its own", async () => {
    // bravo's agent restarts on a host that claims alpha-db's UUID (under another name and state).
    const impostorXml = hostXml([
      { name: "bravo-app", uuid: b.app, runstate: "running" },
      { name: "stolen", uuid: a.db, runstate: "shutoff" },
    ]);
    const old = agents.find((x) => x.stateDir === b.stateDir)!;
    await old.stop();
    const impostor = AgentProcess.start({
      server: cp.url,
      stateDir: b.stateDir,
      libvirtUri: impostorXml,
      args: FAST_AGENT_ARGS,
    });
    agents.push(impostor);
    await waitConnected(cp, b.nodeId);
    await eventually("bravo's inventory processed", async () => (await getNode(cp, b.nodeId)).connected);
    await new Promise((r) => setTimeout(r, 1_500)); // a few poll rounds of the impostor

    const vm = await getVm(cp, a.db);
    expect(vm).toMatchObject({ name: "alpha-db", node_id: a.nodeId, state: "RUNNING", vcpus: 4 });
    expect((await listVms(cp, b.nodeId)).map((v) => v.id)).not.toContain(a.db);
    expect((await listVms(cp, a.nodeId)).map((v) => v.id)).toContain(a.db);
  });
});

describe("a control-plane restart", () => {
  it("keeps nodes, VMs and events, and the agents reconnect by themselves", async () => {
    const before = {
      nodes: (await json(await cp.api("/api/nodes"))).nodes
        .map((n: { id: string; name: string }) => [n.id, n.name])
        .sort(),
      web: await getVm(cp, a.web),
      events: (await json(await cp.api(`/api/vms/${a.web}/events`))).events.length,
    };
    expect(before.events).toBeGreaterThan(0);

    const restartedAt = Date.now();
    await cp.restart();

    const nodes = (await json(await cp.api("/api/nodes"))).nodes
      .map((n: { id: string; name: string }) => [n.id, n.name])
      .sort();
    expect(nodes).toEqual(before.nodes);
    expect(await getVm(cp, a.web)).toMatchObject({
      id: a.web,
      name: "alpha-web",
      state: before.web.state,
      node_id: a.nodeId,
    });
    expect((await json(await cp.api(`/api/vms/${a.web}/events`))).events.length).toBeGreaterThanOrEqual(before.events);

    // Reconnected: a connection made since the restart (the rows said connected all along).
    await waitConnected(cp, a.nodeId, true, 45_000, restartedAt);
    await waitConnected(cp, b.nodeId, true, 45_000, restartedAt);
    // and the link works again end to end: the start is carried out by the agent (not waited for
    // in the request, whose short ack deadline a loaded machine can miss)
    const start = await cp.api(`/api/vms/${a.web}/start`, { method: "POST" });
    expect(start.status).toBe(202);
    await waitVmState(cp, a.web, "RUNNING");
  });
});
