// Faults on the real loop (wrangler dev + real agent processes on libvirt's test driver): the agent
// SIGKILLed or SIGSTOPped mid-command, the control plane SIGKILLed and restarted mid-command, and
// the link blackholed or cut by a loopback TCP proxy and restored. Each asserts that every request
// ends in a final status, no record is lost, and no VM keeps a state the hypervisor contradicts
// (a VM left STARTING/STOPPING by an unanswered power action is the stuck case, and
// reset_state then adopts the hypervisor's state).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VmView } from "../../protocol/rest.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess, DEMO_LOG_DIR } from "../support/agent.ts";
import {
  DEMO,
  DEMO_VM_COUNT,
  FAST_AGENT_ARGS,
  createNode,
  eventually,
  getNode,
  getVm,
  json,
  listVms,
  startControlPlane,
  SHORT_DEADLINES,
  waitConnected,
  waitRequestSettled,
} from "../e2e/journey.ts";
import { LinkProxy } from "./link-proxy.ts";

let cp: ControlPlane;
const cleanup: (() => Promise<unknown>)[] = [];
const FINAL = ["done", "failed", "expired"];

beforeAll(async () => {
  cp = await startControlPlane({ OFFLINE_AFTER_MS: "6000" });
});
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
  await cp?.dispose();
});

/** A node whose real agent reaches the control plane at `server` (the proxy, or directly). */
async function agentNode(name: string, server = cp.url) {
  const { node, joinToken } = await createNode(cp, `${name}-${Date.now()}`);
  const agent = AgentProcess.start({ server, token: joinToken, args: FAST_AGENT_ARGS });
  cleanup.push(() => agent.dispose());
  await waitConnected(cp, node.id);
  // The previous test's node was deleted: its VMs (the same demo UUIDs) wait on no node for an admin.
  await rehomeOrphans(node.id);
  await eventually("demo inventory listed", async () => (await listVms(cp, node.id)).length === DEMO_VM_COUNT);
  return { nodeId: node.id, agent };
}

/** A deleted node's VMs are re-homed only by an admin: as one does when a host is re-enrolled. */
async function rehomeOrphans(nodeId: string) {
  const all = (await json<{ vms: VmView[] }>(await cp.api("/api/vms?limit=500"))).vms;
  for (const vm of all.filter((v) => v.node_id === null)) {
    const res = await cp.api(`/api/vms/${vm.id}/rehome`, { method: "POST", json: { node_id: nodeId } });
    expect(res.status, await res.text()).toBe(200);
  }
}

/** VM ids are libvirt UUIDs, global across nodes: each test's node is the only one holding the demo
 *  host while it runs, and is deleted at its end (its VMs stay, node-less, for the next test's node,
 *  to which an admin re-homes them). */
async function retire(nodeId: string, agent: AgentProcess) {
  await agent.dispose();
  expect((await cp.api(`/api/nodes/${nodeId}`, { method: "DELETE" })).status).toBeLessThan(300);
}

const post = (path: string) => cp.api(path, { method: "POST" });
const resetFromHypervisor = async (vmId: string) => {
  const res = await post(`/api/vms/${vmId}/reset_state`);
  expect(res.status).toBe(200);
  return json<{ source: string; vm: { state: string }; previousState: string }>(res);
};
const eventsOf = async (vmId: string) =>
  (await json<{ events: { action: string; toState: string | null }[] }>(await cp.api(`/api/vms/${vmId}/events`)))
    .events;

describe("agent process faults", () => {
  it("SIGKILL mid-command: the request fails at once, the VM is left STOPPING, and once the agent is back the hypervisor's state wins by itself", async () => {
    const { nodeId, agent } = await agentNode("sigkill");
    agent.freeze(); // the command reaches the socket but is never acknowledged
    const res = await post(`/api/vms/${DEMO.web01}/stop`);
    expect(res.status).toBe(202);
    const { request } = await json<{ request: { id: string } }>(res);
    process.kill(agent.pid, "SIGKILL");
    const t0 = Date.now();
    const settled = await waitRequestSettled(cp, request.id, 10_000);
    expect(settled.status).toBe("failed");
    expect(settled.error?.code).toMatch(/agent_disconnected|agent_timeout/);
    expect(Date.now() - t0).toBeLessThan(4_000); // within the 2 s ack deadline plus slack
    expect((await getVm(cp, DEMO.web01)).state).toBe("STOPPING");

    await agent.restart();
    await waitConnected(cp, nodeId);
    // No request holds the transition any more: the reconciler asks the hypervisor and repairs it.
    await eventually(
      "web-01 repaired by itself",
      async () => (await getVm(cp, DEMO.web01)).state === "RUNNING",
      70_000,
    );
    expect((await eventsOf(DEMO.web01)).some((e) => e.action === "auto_repair")).toBe(true);
    const reset = await resetFromHypervisor(DEMO.web01);
    expect(reset).toMatchObject({ source: "hypervisor", previousState: "RUNNING", vm: { state: "RUNNING" } });
    expect((await listVms(cp, nodeId)).filter((v) => v.missing)).toEqual([]);
    const actions = (await eventsOf(DEMO.web01)).map((e) => e.action);
    expect(actions.length).toBeGreaterThanOrEqual(2); // the stop and the reset are both in the trail
    await retire(nodeId, agent);
  }, 120_000);

  it("SIGSTOP mid-command: log read and start time out; after SIGCONT the late commands are not carried out and the next read is exact", async () => {
    const { nodeId, agent } = await agentNode("sigstop");
    agent.freeze();
    const t0 = Date.now();
    const logs = await cp.api(`/api/vms/${DEMO.web01}/logs?lines=50`);
    expect(logs.status).toBe(504);
    expect((await json(logs)).error.code).toBe("agent_timeout");
    expect(Date.now() - t0).toBeLessThan(6_000);
    const start = await post(`/api/vms/${DEMO.ciRunner}/start?wait=true`);
    expect(start.status).toBe(504);
    expect((await getVm(cp, DEMO.ciRunner)).state).toBe("STARTING");

    agent.thaw();
    await new Promise((r) => setTimeout(r, 1_500)); // the agent reads both late commands now
    const fresh = await json(await cp.api(`/api/vms/${DEMO.web01}/logs?lines=50`));
    const expected = readFileSync(join(DEMO_LOG_DIR, "web-01.log"), "utf8").replace(/\n$/, "").split("\n").slice(-50);
    expect(fresh.qemuLog.replace(/\n$/, "").split("\n")).toEqual(expected);
    // The start arrived after its deadline: the hypervisor still has ci-runner shut off (STARTING
    // still, or already repaired by the reconciler's question to the thawed agent).
    const reset = await resetFromHypervisor(DEMO.ciRunner);
    expect(reset).toMatchObject({ source: "hypervisor", vm: { state: "STOPPED" } });
    expect(["STARTING", "STOPPED"]).toContain(reset.previousState);
    await retire(nodeId, agent);
  });
});

describe("control plane killed mid-command", () => {
  it("SIGKILL + restart: nothing lost, the in-flight request ends failed, the late stop is not carried out", async () => {
    const { nodeId, agent } = await agentNode("cpkill");
    const tokenRes = await json<{ token: string }>(
      await cp.api("/api/tokens", { method: "POST", json: { name: "survivor", role: "viewer" } }),
    );
    const before = {
      vms: await listVms(cp, nodeId),
      events: await eventsOf(DEMO.web02),
      node: await getNode(cp, nodeId),
    };

    agent.freeze();
    const res = await post(`/api/vms/${DEMO.web02}/stop`);
    expect(res.status).toBe(202);
    const { request } = await json<{ request: { id: string } }>(res);
    const stopSentAt = Date.now();
    await cp.stop("SIGKILL");
    await cp.boot();
    // The stop frame is already in the frozen agent's socket buffer: thaw it only once the stop's
    // deadline (ACK_TIMEOUT_MS) has passed, however quickly the control plane came back.
    await new Promise((r) =>
      setTimeout(r, Math.max(0, stopSentAt + Number(SHORT_DEADLINES.ACK_TIMEOUT_MS) + 500 - Date.now())),
    );
    const thawedAt = Date.now();
    agent.thaw();

    // Connected again since the thaw: the row may still say connected from before the kill.
    await waitConnected(cp, nodeId, true, 30_000, thawedAt);
    const settled = await waitRequestSettled(cp, request.id, 20_000);
    expect(FINAL).toContain(settled.status);
    expect(settled.status).not.toBe("done");
    // Records: the node, every VM, the events so far and the API token all survived.
    const after = await listVms(cp, nodeId);
    expect(after.map((v) => v.id).sort()).toEqual(before.vms.map((v) => v.id).sort());
    expect((await eventsOf(DEMO.web02)).length).toBeGreaterThan(before.events.length); // + the stop
    expect((await getNode(cp, nodeId)).name).toBe(before.node.name);
    expect((await cp.api("/api/me", { token: tokenRes.token })).status).toBe(200);
    // The stop frame was read after its 2 s deadline (or never): the guest is still running.
    expect(await resetFromHypervisor(DEMO.web02)).toMatchObject({ source: "hypervisor", vm: { state: "RUNNING" } });
    await retire(nodeId, agent);
  });
});

describe("link faults through a TCP proxy", () => {
  let proxy: LinkProxy;
  beforeAll(async () => {
    proxy = await LinkProxy.start(cp.port);
    cleanup.push(() => proxy.close());
  });

  it("a silent link: the stop is never acknowledged (504, failed, stuck); restored, the agent reconnects and the hypervisor's state wins", async () => {
    const { nodeId, agent } = await agentNode("blackhole", proxy.url);
    const accepted = proxy.accepted;
    proxy.blackhole();
    const t0 = Date.now();
    const res = await post(`/api/vms/${DEMO.db01}/stop?wait=true`);
    expect(res.status).toBe(504);
    expect(Date.now() - t0).toBeLessThan(6_000);
    expect((await getVm(cp, DEMO.db01)).state).toBe("STOPPING");

    const restoredAt = Date.now();
    proxy.restore();
    await eventually("agent reconnected through the proxy", async () => proxy.accepted > accepted, 20_000);
    // Connected on the new link: the row may still say connected from the silent one.
    await waitConnected(cp, nodeId, true, 20_000, restoredAt);
    expect(await resetFromHypervisor(DEMO.db01)).toMatchObject({ source: "hypervisor", vm: { state: "RUNNING" } });
    await retire(nodeId, agent);
  });

  it("a cut link: the node goes offline (503), a forced reset is corrected by the inventory once the link is back", async () => {
    const { nodeId, agent } = await agentNode("cut", proxy.url);
    proxy.cut();
    await waitConnected(cp, nodeId, false, 15_000);
    const start = await post(`/api/vms/${DEMO.scratch}/start`);
    expect(start.status).toBe(503);
    expect((await json(start)).error.code).toBe("node_offline");
    expect((await getVm(cp, DEMO.scratch)).state).toBe("STOPPED"); // not changed by the refused start
    // The rule: node unreachable → reset sets STOPPED (forced), though files-01 really runs.
    const forced = await json(await post(`/api/vms/${DEMO.files01}/reset_state`));
    expect(forced).toMatchObject({ source: "forced", vm: { state: "STOPPED" } });

    proxy.restore();
    await waitConnected(cp, nodeId, true, 20_000);
    // The agent resends its inventory: files-01 is RUNNING again, as the hypervisor says.
    await eventually(
      "files-01 back to RUNNING from the inventory",
      async () => (await getVm(cp, DEMO.files01)).state === "RUNNING",
      15_000,
    );
    const vms: VmView[] = await listVms(cp, nodeId);
    expect(vms).toHaveLength(DEMO_VM_COUNT);
    expect(vms.filter((v) => v.missing)).toEqual([]);
    await retire(nodeId, agent);
  });
});
