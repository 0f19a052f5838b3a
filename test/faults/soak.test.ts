// Soak: a minute (QX_SOAK_MS makes it longer) of random commands (start, stop, force stop, reset_state, logs) against a real
// agent on the demo host while its link is randomly cut, blackholed and the agent itself SIGKILLed
// and restarted (the test driver then reloads the host: the hypervisor's states jump back). At the
// end every request is in a final status, no 500 was ever answered, and once the stuck VMs are reset
// (recovery: every difference converges by itself) every VM's state equals the hypervisor's as the agent's local API reads it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VmView } from "../../protocol/rest.ts";
import { TRANSITIONAL_STATES, type VmState } from "../../protocol/wire.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess } from "../support/agent.ts";
import {
  DEMO,
  DEMO_VM_COUNT,
  FAST_AGENT_ARGS,
  createNode,
  eventually,
  freeLoopback,
  json,
  keptHostToken,
  listVms,
  startControlPlane,
  waitConnected,
  waitRequestSettled,
} from "../e2e/journey.ts";
import { LinkProxy } from "./link-proxy.ts";

const SOAK_MS = Number(process.env.QX_SOAK_MS ?? 60_000);
/** A fault every 3-8 s plus its own length (a restart included): at least one per 12 s. */
const FAULTS_AT_LEAST = Math.max(1, Math.floor((SOAK_MS - 8_000) / 12_000));
const VMS = Object.values(DEMO);

let cp: ControlPlane;
let proxy: LinkProxy;
let agent: AgentProcess;
let listen: string;
let nodeId: string;

beforeAll(async () => {
  cp = await startControlPlane({ OFFLINE_AFTER_MS: "6000" });
  proxy = await LinkProxy.start(cp.port);
  listen = await freeLoopback();
  const { node, joinToken } = await createNode(cp, "soak");
  nodeId = node.id;
  agent = AgentProcess.start({ server: proxy.url, token: joinToken, listen, args: FAST_AGENT_ARGS });
  await waitConnected(cp, nodeId);
  await eventually("demo inventory", async () => (await listVms(cp, nodeId)).length === DEMO_VM_COUNT);
});

afterAll(async () => {
  await agent?.dispose();
  await proxy?.close();
  await cp?.dispose();
});

const pick = <T>(xs: readonly T[]) => xs[Math.floor(Math.random() * xs.length)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the hypervisor says, through the agent's local API (live libvirt reads). */
async function hypervisorStates(): Promise<Map<string, VmState>> {
  const res = await fetch(`http://${listen}/api/v1/vms`, {
    headers: { authorization: `Bearer ${keptHostToken(agent)}` },
  });
  const body = await json<{ vms: { id: string; state: VmState }[] }>(res);
  return new Map(body.vms.map((v) => [v.id, v.state]));
}

describe("soak", () => {
  it(
    `random commands and faults for ${SOAK_MS / 1000} s end consistent`,
    async () => {
      const statuses: Record<number, number> = {};
      const requestIds: string[] = [];
      const faults: Record<string, number> = { cut: 0, blackhole: 0, sigkill: 0 };
      const until = Date.now() + SOAK_MS;

      const traffic = (async () => {
        while (Date.now() < until) {
          const vm = pick(VMS);
          const action = pick(["start", "stop", "stop?force=true", "reset_state", "logs", "start?wait=true"]);
          const res =
            action === "logs"
              ? await cp.api(`/api/vms/${vm}/logs?lines=${1 + Math.floor(Math.random() * 500)}`)
              : await cp.api(`/api/vms/${vm}/${action}`, { method: "POST" });
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
          const body = await json(res); // always JSON, whatever happened
          if (res.status >= 400)
            expect(body).toMatchObject({
              success: false,
              error: { code: expect.any(String), message: expect.any(String) },
            });
          if (body.request?.id) requestIds.push(body.request.id);
          await sleep(50 + Math.random() * 250);
        }
      })();

      const chaos = (async () => {
        while (Date.now() < until - 8_000) {
          await sleep(3_000 + Math.random() * 5_000);
          const fault = pick(["cut", "blackhole", "sigkill"] as const);
          faults[fault]++;
          if (fault === "cut") {
            proxy.cut();
            await sleep(300 + Math.random() * 2_500);
            proxy.restore();
          } else if (fault === "blackhole") {
            proxy.blackhole();
            await sleep(500 + Math.random() * 3_000);
            proxy.restore();
          } else {
            process.kill(agent.pid, "SIGKILL");
            await agent.waitForExit(5_000);
            await agent.restart();
          }
        }
      })();
      await Promise.all([traffic, chaos]);

      // Settle: the link is up, the agent connected, every request final.
      proxy.restore();
      await waitConnected(cp, nodeId, true, 30_000);
      for (const id of requestIds)
        expect(["done", "failed", "expired"]).toContain((await waitRequestSettled(cp, id, 30_000)).status);
      expect(statuses[500] ?? 0).toBe(0);

      // Stuck VMs (a power action whose answer never came) are reset from the hypervisor; then every
      // VM's state must match the hypervisor's, with nothing missing and nothing lost.
      for (const vm of await listVms(cp, nodeId)) {
        if (TRANSITIONAL_STATES.includes(vm.state)) {
          const res = await cp.api(`/api/vms/${vm.id}/reset_state`, { method: "POST" });
          expect(res.status).toBe(200);
        }
      }
      let last: { ours: VmView[]; theirs: Map<string, VmState> } | undefined;
      await eventually(
        "every VM's state equals the hypervisor's",
        async () => {
          const ours = await listVms(cp, nodeId);
          const theirs = await hypervisorStates();
          last = { ours, theirs };
          return ours.length === DEMO_VM_COUNT && ours.every((v) => !v.missing && theirs.get(v.id) === v.state);
        },
        20_000,
      ).catch((err) => {
        throw new Error(
          `${(err as Error).message}: ${JSON.stringify(last?.ours.map((v) => [v.name, v.state, last?.theirs.get(v.id)]))}`,
        );
      });
      console.log(
        `soak: ${requestIds.length} power requests, statuses ${JSON.stringify(statuses)}, faults ${JSON.stringify(faults)}`,
      );
      expect(faults.cut + faults.blackhole + faults.sigkill).toBeGreaterThanOrEqual(FAULTS_AT_LEAST);
    },
    SOAK_MS + 150_000,
  );
});
