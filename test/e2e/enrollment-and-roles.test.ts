// End to end: the real Worker (wrangler dev, local D1) and real agent processes on libvirt's test
// driver over a loopback WebSocket. Enrollment, inventory, refused tokens and credentials, roles,
// and an agent restart.
import { statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess } from "../support/agent.ts";
import {
  DEMO,
  DEMO_VM_COUNT,
  FAST_AGENT_ARGS,
  enrollAgent,
  eventually,
  getNode,
  getVm,
  json,
  keptCredential,
  listVms,
  startControlPlane,
  waitConnected,
  waitRequestSettled,
  waitVmState,
} from "./journey.ts";

let cp: ControlPlane;
let demo: Awaited<ReturnType<typeof enrollAgent>>;
const extraAgents: AgentProcess[] = [];

beforeAll(async () => {
  cp = await startControlPlane();
  demo = await enrollAgent(cp, "demo");
});

afterAll(async () => {
  await Promise.all([demo?.agent.dispose(), ...extraAgents.map((a) => a.dispose())]);
  await cp?.dispose();
});

describe("enrollment and inventory", () => {
  it("shows the enrolled node connected with its host facts and every domain of the host", async () => {
    const node = await getNode(cp, demo.nodeId);
    expect(node).toMatchObject({ name: "demo", connected: true, vmCount: DEMO_VM_COUNT });
    expect(node.agentVersion).toBeTruthy();
    expect(node.libvirtVersion).toBeTruthy();
    expect(node.lastSeenAt).not.toBeNull();

    const vms = await listVms(cp, demo.nodeId);
    const byName = Object.fromEntries(vms.map((v) => [v.name, v]));
    // libvirt's states mapped to VM states (running, shut off, paused, crashed), ids are the domain UUIDs, sizes from the domain XML.
    expect(byName["web-01"]).toMatchObject({ id: DEMO.web01, state: "RUNNING", node_id: demo.nodeId });
    expect(byName["db-01"]).toMatchObject({ id: DEMO.db01, state: "RUNNING", vcpus: 8, memoryMiB: 16384 });
    expect(byName["ci-runner"]).toMatchObject({ state: "STOPPED" });
    expect(byName["analytics"]).toMatchObject({ state: "PAUSED" });
    expect(byName["legacy-erp"]).toMatchObject({ state: "ERROR" });
    expect(byName["scratch"]).toMatchObject({ state: "STOPPED" });
    expect((await getVm(cp, DEMO.files01)).name).toBe("files-01");
  });

  it("keeps the node credential in the state directory, mode 0600, never the join token", async () => {
    const file = join(demo.agent.stateDir, "node.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const credential = keptCredential(demo.agent);
    expect(credential.length).toBeGreaterThan(20);
    expect(credential).not.toBe(demo.joinToken);
  });

  it("refuses a join token used a second time: that agent exits non-zero and says why", async () => {
    const reuse = AgentProcess.start({ server: cp.url, token: demo.joinToken, args: FAST_AGENT_ARGS });
    extraAgents.push(reuse);
    const exit = await reuse.waitForExit(20_000);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(reuse.output).toMatch(/join token refused/i);
    // and the enrolled agent is unaffected
    expect((await getNode(cp, demo.nodeId)).connected).toBe(true);
  });

  it("does not let a node credential call the REST API", async () => {
    const credential = keptCredential(demo.agent);
    for (const path of ["/api/nodes", "/api/vms", `/api/vms/${DEMO.web01}`]) {
      const res = await cp.api(path, { token: credential });
      expect(res.status, path).toBe(401);
      expect(await json(res)).toMatchObject({ success: false, error: { code: expect.any(String) } });
    }
  });

  it("after rotate_token the old credential is refused: its agent exits non-zero; the new join token enrolls again", async () => {
    const { node, joinToken } = await json<{ node: { id: string }; joinToken: string }>(
      await cp.api("/api/nodes", { method: "POST", json: { name: "rotated" } }),
    );
    const first = AgentProcess.start({ server: cp.url, token: joinToken, args: FAST_AGENT_ARGS });
    extraAgents.push(first);
    await waitConnected(cp, node.id);

    const rotated = await json<{ joinToken: string }>(
      await cp.api(`/api/nodes/${node.id}/rotate_token`, { method: "POST" }),
    );
    expect(rotated.joinToken).toBeTruthy();
    const exit = await first.waitForExit(20_000);
    expect(exit.code).not.toBe(0);
    expect(first.output).toMatch(/credential refused/i);

    const second = AgentProcess.start({
      server: cp.url,
      token: rotated.joinToken,
      stateDir: first.stateDir,
      args: FAST_AGENT_ARGS,
    });
    extraAgents.push(second);
    await waitConnected(cp, node.id);
  });
});

describe("token roles over the real loop", () => {
  let viewer: string;
  let operator: string;

  beforeAll(async () => {
    const make = async (name: string, role: string) =>
      (await json<{ token: string }>(await cp.api("/api/tokens", { method: "POST", json: { name, role } }))).token;
    viewer = await make("e2e-viewer", "viewer");
    operator = await make("e2e-operator", "operator");
  });

  it("answers 401 without a token or with an unknown one", async () => {
    expect((await fetch(`${cp.url}/api/vms`)).status).toBe(401);
    expect((await cp.api("/api/vms", { token: "qx_nonsense" })).status).toBe(401);
    expect((await fetch(`${cp.url}/api/health`)).status).toBe(200);
  });

  it("lets a viewer read but not act", async () => {
    expect((await cp.api(`/api/vms/${DEMO.web02}`, { token: viewer })).status).toBe(200);
    expect((await cp.api("/api/nodes", { token: viewer })).status).toBe(200);
    for (const [method, path] of [
      ["POST", `/api/vms/${DEMO.web02}/stop`],
      ["POST", `/api/vms/${DEMO.ciRunner}/start`],
      ["POST", `/api/vms/${DEMO.files01}/reset_state`],
      ["GET", `/api/vms/${DEMO.db01}/logs?lines=5`],
      ["POST", "/api/nodes"],
    ] as const) {
      const res = await cp.api(path, {
        method,
        token: viewer,
        ...(method === "POST" && path === "/api/nodes" ? { json: { name: "x" } } : {}),
      });
      expect(res.status, `${method} ${path}`).toBe(403);
    }
    expect((await getVm(cp, DEMO.web02)).state).toBe("RUNNING");
  });

  it("lets an operator read logs and run power actions but not manage nodes or tokens", async () => {
    const logs = await cp.api(`/api/vms/${DEMO.db01}/logs?lines=5`, { token: operator });
    expect(logs.status).toBe(200);
    expect((await json(logs)).linesReturned).toBe(5);

    const start = await cp.api(`/api/vms/${DEMO.ciRunner}/start`, { method: "POST", token: operator });
    expect(start.status).toBe(202);
    await waitRequestSettled(cp, (await json(start)).request.id);
    await waitVmState(cp, DEMO.ciRunner, "RUNNING");

    expect((await cp.api("/api/nodes", { method: "POST", token: operator, json: { name: "nope" } })).status).toBe(403);
    expect(
      (await cp.api("/api/tokens", { method: "POST", token: operator, json: { name: "t", role: "viewer" } })).status,
    ).toBe(403);
  });
});

describe("an agent restart", () => {
  it("reconnects with its kept credential and reports the host afresh (the test driver reloads its XML)", async () => {
    const stop = await cp.api(`/api/vms/${DEMO.web02}/stop?wait=true`, { method: "POST" });
    expect(stop.status).toBe(200);
    expect((await json(stop)).vm.state).toBe("STOPPED");

    await demo.agent.restart();
    await waitConnected(cp, demo.nodeId);
    // A new test-driver process starts from node.xml, where web-02 runs: the new inventory says so.
    await waitVmState(cp, DEMO.web02, "RUNNING");
    await waitVmState(cp, DEMO.ciRunner, "STOPPED");
    expect(await listVms(cp, demo.nodeId)).toHaveLength(DEMO_VM_COUNT);
    const events = (await json<{ events: { action: string }[] }>(await cp.api(`/api/vms/${DEMO.web02}/events`))).events;
    expect(events.length).toBeGreaterThanOrEqual(2);
    await eventually("node connected after restart", async () => (await getNode(cp, demo.nodeId)).connected);
  });
});
