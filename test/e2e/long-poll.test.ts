// End to end on a network that blocks WebSockets: the real agent reaches the real control plane only
// through a loopback proxy that refuses `Upgrade:` requests (test/support/no-websocket-proxy.ts).
// With `--transport long-poll` it enrolls, syncs, answers reset_state, logs and power actions; with
// `auto` it switches to long-poll after its WebSocket failures, works, and goes back to the
// WebSocket once the proxy lets upgrades through.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LogsResponse } from "../../protocol/rest.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess, DEMO_LOG_DIR, writeNodeXml } from "../support/agent.ts";
import { NoWebSocketProxy } from "../support/no-websocket-proxy.ts";
import {
  DEMO,
  DEMO_VM_COUNT,
  FAST_AGENT_ARGS,
  createNode,
  eventually,
  freeLoopback,
  getVm,
  json,
  keptHostToken,
  listVms,
  startControlPlane,
  waitConnected,
} from "./journey.ts";

let cp: ControlPlane;
let proxy: NoWebSocketProxy;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  cp = await startControlPlane();
  proxy = await NoWebSocketProxy.start(cp.url);
});

afterAll(async () => {
  for (const a of agents) await a.dispose();
  await proxy?.close();
  await cp?.dispose();
});

/** Enrolls a node whose agent reaches the control plane only through the proxy. */
async function agentBehindProxy(
  name: string,
  args: string[],
  opts: { listen?: string; libvirtUri?: string; vms?: number } = {},
) {
  const { node, joinToken } = await createNode(cp, name);
  const agent = AgentProcess.start({
    server: proxy.url,
    token: joinToken,
    listen: opts.listen,
    libvirtUri: opts.libvirtUri,
    args: [...FAST_AGENT_ARGS, "--poll-wait", "2000", ...args],
  });
  agents.push(agent);
  const vms = opts.vms ?? DEMO_VM_COUNT;
  try {
    await waitConnected(cp, node.id);
    await eventually(`${vms} VMs of ${name} listed`, async () => (await listVms(cp, node.id)).length === vms);
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\n--- agent output ---\n${agent.output}\n--- control plane ---\n${cp.logs.slice(-3000)}`,
    );
  }
  return { nodeId: node.id, agent };
}

const post = (path: string) => cp.api(path, { method: "POST" });
const fileTail = (name: string, n: number) =>
  readFileSync(join(DEMO_LOG_DIR, `${name}.log`), "utf8")
    .replace(/\n$/, "")
    .split("\n")
    .slice(-n);

describe("--transport long-poll through a proxy that blocks WebSockets", () => {
  let agent: AgentProcess;
  let nodeId: string;
  let listen: string;

  beforeAll(async () => {
    listen = await freeLoopback();
    ({ agent, nodeId } = await agentBehindProxy("long-poll", ["--transport", "long-poll"], { listen }));
  });
  // Its polls would otherwise be counted with the next agent's.
  afterAll(() => agent?.stop());

  /** The domain's state as the agent's hypervisor sees it, through the agent's local API. */
  async function hypervisorState(vmId: string): Promise<string> {
    const res = await fetch(`http://${listen}/api/v1/vms`, {
      headers: { authorization: `Bearer ${keptHostToken(agent)}` },
    });
    const { vms } = await json<{ vms: { id: string; state: string }[] }>(res);
    const vm = vms.find((v) => v.id === vmId);
    if (!vm) throw new Error(`VM ${vmId} not in the agent's local list`);
    return vm.state;
  }

  it("enrolled and synced its inventory over poll + send, never trying a WebSocket", async () => {
    expect(proxy.refusedUpgrades).toBe(0);
    expect(proxy.forwarded.get("/agent/enroll")).toBe(1);
    expect(proxy.forwarded.get("/agent/poll")).toBeGreaterThanOrEqual(1);
    expect(proxy.forwarded.get("/agent/send")).toBeGreaterThanOrEqual(1);
    const vm = await getVm(cp, DEMO.db01);
    expect(vm).toMatchObject({ name: "db-01" });
  });

  it("answers logs?lines=N with the file's last lines", async () => {
    const body = await json<LogsResponse>(await cp.api(`/api/vms/${DEMO.db01}/logs?lines=40`));
    expect(body.linesReturned).toBe(40);
    expect(body.qemuLog.replace(/\n$/, "").split("\n")).toEqual(fileTail("db-01", 40));
    // a big answer: thousands of lines in several log.chunk frames over several sends
    const all = await json<LogsResponse>(await cp.api(`/api/vms/${DEMO.web01}/logs?lines=10000`));
    expect(all.qemuLog.replace(/\n$/, "").split("\n")).toEqual(fileTail("web-01", 10_000));
  });

  it("answers reset_state from the hypervisor", async () => {
    const body = await json(await post(`/api/vms/${DEMO.files01}/reset_state`));
    expect(body).toMatchObject({
      success: true,
      source: "hypervisor",
      vm: { id: DEMO.files01, state: await hypervisorState(DEMO.files01) },
    });
  });

  it("carries out a stop and a start on the test driver", async () => {
    expect(await hypervisorState(DEMO.web01)).toBe("RUNNING");
    const stopped = await post(`/api/vms/${DEMO.web01}/stop?force=true&wait=true`);
    expect(stopped.status).toBe(200);
    expect((await json(stopped)).vm.state).toBe("STOPPED");
    expect(await hypervisorState(DEMO.web01)).toBe("STOPPED");
    const started = await post(`/api/vms/${DEMO.web01}/start?wait=true`);
    expect(started.status).toBe(200);
    expect((await json(started)).vm.state).toBe("RUNNING");
    expect(await hypervisorState(DEMO.web01)).toBe("RUNNING");
  });

  it("a revoked credential ends the agent with exit status 3, as on the WebSocket", async () => {
    const rotated = await cp.api(`/api/nodes/${nodeId}/rotate_token`, { method: "POST" });
    expect(rotated.status).toBe(200);
    expect(await agent.waitForExit(15_000)).toEqual({ code: 3, signal: null });
    expect(agent.output).toMatch(/credential refused/);
  });
});

describe("--transport auto when WebSockets are blocked", () => {
  let agent: AgentProcess;
  let nodeId: string;
  // A host of its own (VM ids are unique across nodes), with domains named like the demo logs.
  const host = mkdtempSync(join(tmpdir(), "qx-auto-host-"));
  const legacyErp = "7d0e6a4b-1c2d-4e3f-8a9b-0c1d2e3f4a01";
  const scratch = "7d0e6a4b-1c2d-4e3f-8a9b-0c1d2e3f4a02";

  beforeAll(async () => {
    proxy.refusedUpgrades = 0;
    const libvirtUri = writeNodeXml(host, [
      { name: "legacy-erp", uuid: legacyErp, runstate: "running" },
      { name: "scratch", uuid: scratch, runstate: "shutoff" },
    ]);
    // Retry the WebSocket every 3 s while on long-poll (default: 10 minutes).
    ({ agent, nodeId } = await agentBehindProxy("auto", ["--transport", "auto", "--websocket-retry", "3000"], {
      libvirtUri,
      vms: 2,
    }));
  });
  afterAll(() => rmSync(host, { recursive: true, force: true }));

  it("switches to long-poll after 5 WebSocket failures in a row, HTTPS answering and one more failure; says so once at warn, and works", async () => {
    expect(proxy.refusedUpgrades).toBeGreaterThanOrEqual(6);
    const switches = agent.output.split("\n").filter((l) => l.includes("switching to long-poll"));
    expect(switches).toHaveLength(1);
    // 5 in a row, then GET /api/health through the proxy answered, then the next failure switched:
    // the sixth, or a later one when the retry (0-1 s of jitter) failed before the answer came.
    const line = JSON.parse(switches[0]);
    expect(line).toMatchObject({ level: 40 });
    expect(line.failures).toBeGreaterThanOrEqual(6);
    expect(proxy.forwarded.get("/api/health")).toBeGreaterThanOrEqual(1);
    const body = await json<LogsResponse>(await cp.api(`/api/vms/${legacyErp}/logs?lines=5`));
    expect(body.qemuLog.replace(/\n$/, "").split("\n")).toEqual(fileTail("legacy-erp", 5));
  });

  it("keeps trying the WebSocket later and goes back to it once the proxy lets it through", async () => {
    const refusedBefore = proxy.refusedUpgrades;
    await eventually("another WebSocket attempt", async () => proxy.refusedUpgrades > refusedBefore, 10_000);
    await waitConnected(cp, nodeId); // the failed attempt cost the working long-poll link nothing
    proxy.allowWebSockets = true;
    try {
      await eventually("back on the WebSocket", async () => agent.output.includes("WebSocket works again"), 10_000);
      await waitConnected(cp, nodeId);
      const body = await json(await post(`/api/vms/${scratch}/reset_state`));
      expect(body).toMatchObject({ success: true, source: "hypervisor", vm: { state: "STOPPED" } });
      // Polls stopped: the link is the socket now.
      const polls = proxy.forwarded.get("/agent/poll") ?? 0;
      await new Promise((r) => setTimeout(r, 2_500));
      expect(proxy.forwarded.get("/agent/poll") ?? 0).toBeLessThanOrEqual(polls + 1);
    } finally {
      proxy.allowWebSockets = false;
    }
  });
});
