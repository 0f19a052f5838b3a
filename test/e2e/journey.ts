// Shared steps of the end-to-end journeys: a control plane with short deadlines, enrolling a node
// and starting its real agent, polling the REST API until something holds.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { NodeView, RequestView, VmView } from "../../protocol/rest.ts";
import { ControlPlane, freePort } from "../support/control-plane.ts";
import { AgentProcess, type AgentOptions } from "../support/agent.ts";

/** Deadlines short enough for tests (the defaults are 10 s / 60 s). */
export const SHORT_DEADLINES = { ACK_TIMEOUT_MS: "2000", QUERY_TIMEOUT_MS: "2000", STOP_GRACE_MS: "3000" };

/** Agent knobs for tests: poll libvirt often, reconnect fast, quiet logs. */
export const FAST_AGENT_ARGS = [
  "--poll-interval",
  "200",
  "--backoff-base",
  "100",
  "--backoff-cap",
  "1000",
  "--stable-after",
  "1000",
  "--connect-timeout",
  "3000",
  "--log-level",
  "warn",
];

/** The shipped demo host's domains (agent/demo/node.xml). */
export const DEMO = {
  web01: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f01",
  web02: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f02",
  db01: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f03",
  ciRunner: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f04",
  analytics: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f05",
  legacyErp: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f06",
  files01: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f07",
  scratch: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f08",
} as const;
export const DEMO_VM_COUNT = Object.keys(DEMO).length;

export const startControlPlane = (vars: Record<string, string> = {}) =>
  ControlPlane.start({ vars: { ...SHORT_DEADLINES, ...vars } });

export async function json<T = any>(res: Response): Promise<T> {
  const text = await res.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`expected JSON, got ${res.status}: ${text.slice(0, 300)}`);
  }
}

/** Polls `probe` until it returns something other than undefined/false, or fails after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 20_000,
  everyMs = 150,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}`);
}

export async function createNode(cp: ControlPlane, name: string): Promise<{ node: NodeView; joinToken: string }> {
  const res = await cp.api("/api/nodes", { method: "POST", json: { name } });
  if (res.status !== 201) throw new Error(`POST /api/nodes answered ${res.status}: ${await res.text()}`);
  return json(res);
}

export const getNode = async (cp: ControlPlane, id: string) =>
  (await json<{ node: NodeView }>(await cp.api(`/api/nodes/${id}`))).node;
export const getVm = async (cp: ControlPlane, id: string) =>
  (await json<{ vm: VmView }>(await cp.api(`/api/vms/${id}`))).vm;
export const getRequest = async (cp: ControlPlane, id: string) =>
  (await json<{ request: RequestView }>(await cp.api(`/api/requests/${id}`))).request;

export async function listVms(cp: ControlPlane, nodeId: string): Promise<VmView[]> {
  return (await json<{ vms: VmView[] }>(await cp.api(`/api/vms?node_id=${nodeId}&limit=500`))).vms;
}

/** With `since` (epoch ms), connected means a connection made after it: after a control-plane restart
 *  the node's row still says connected until its session's next liveness check. */
export const waitConnected = (cp: ControlPlane, nodeId: string, connected = true, timeoutMs = 30_000, since?: number) =>
  eventually(
    `node ${nodeId} ${connected ? "connected" : "disconnected"}${since ? ` since ${new Date(since).toISOString()}` : ""}`,
    async () => {
      const node = await getNode(cp, nodeId);
      return (
        node.connected === connected &&
        (since === undefined || (node.lastSeenAt !== null && Date.parse(node.lastSeenAt) >= since))
      );
    },
    timeoutMs,
  );

export const waitVmState = (cp: ControlPlane, vmId: string, state: string, timeoutMs = 20_000) =>
  eventually(
    `VM ${vmId} in ${state}`,
    async () => {
      const vm = await getVm(cp, vmId);
      return vm.state === state ? vm : undefined;
    },
    timeoutMs,
  );

export const waitRequestSettled = (cp: ControlPlane, requestId: string, timeoutMs = 20_000) =>
  eventually(
    `request ${requestId} settled`,
    async () => {
      const r = await getRequest(cp, requestId);
      return r.status === "queued" || r.status === "sent" ? undefined : r;
    },
    timeoutMs,
  );

/** Enrolls a node, starts its real agent and waits until its whole inventory is listed. */
export async function enrollAgent(
  cp: ControlPlane,
  name: string,
  opts: Omit<AgentOptions, "server" | "token"> & { expectVms?: number } = {},
): Promise<{ nodeId: string; joinToken: string; agent: AgentProcess }> {
  const { node, joinToken } = await createNode(cp, name);
  const agent = AgentProcess.start({
    ...opts,
    server: cp.url,
    token: joinToken,
    args: [...FAST_AGENT_ARGS, ...(opts.args ?? [])],
  });
  try {
    await waitConnected(cp, node.id);
    const expected = opts.expectVms ?? DEMO_VM_COUNT;
    await eventually(`${expected} VMs of ${name} listed`, async () => (await listVms(cp, node.id)).length === expected);
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\n--- agent output ---\n${agent.output}\n--- control plane ---\n${cp.logs.slice(-4000)}`,
    );
  }
  return { nodeId: node.id, joinToken, agent };
}

/** The node credential the agent kept (`<state dir>/node.json`). */
export function keptCredential(agent: AgentProcess): string {
  return (JSON.parse(readFileSync(join(agent.stateDir, "node.json"), "utf8")) as { credential: string }).credential;
}

/** The host-view token the agent keeps for its local API (`<state dir>/host-token`, made with --listen). */
export function keptHostToken(agent: AgentProcess): string {
  return readFileSync(join(agent.stateDir, "host-token"), "utf8").trim();
}

export async function freeLoopback(): Promise<string> {
  return `127.0.0.1:${await freePort()}`;
}
