// End to end: power actions through the real Worker to a real agent, and the stuck case: an agent
// frozen with SIGSTOP never acknowledges a stop, the VM is left in STOPPING, reset_state recovers
// it (forced while the agent is frozen, from the hypervisor once it is back), and a stop whose
// deadline passed while the agent was frozen is never carried out late (the reconciler then puts
// the VM back to the hypervisor's state by itself).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../support/control-plane.ts";
import type { AgentProcess } from "../support/agent.ts";
import {
  DEMO,
  enrollAgent,
  freeLoopback,
  getRequest,
  getVm,
  json,
  keptHostToken,
  startControlPlane,
  waitRequestSettled,
  waitVmState,
} from "./journey.ts";

let cp: ControlPlane;
let agent: AgentProcess;
let listen: string;

beforeAll(async () => {
  cp = await startControlPlane();
  listen = await freeLoopback();
  ({ agent } = await enrollAgent(cp, "power", { listen }));
});

afterAll(async () => {
  await agent?.dispose();
  await cp?.dispose();
});

const post = (path: string) => cp.api(path, { method: "POST" });

/** The domain's state as the agent's hypervisor sees it, through the agent's local API. */
async function hypervisorState(vmId: string): Promise<string> {
  const res = await fetch(`http://${listen}/api/v1/vms`, {
    headers: { authorization: `Bearer ${keptHostToken(agent)}` },
  });
  expect(res.status).toBe(200);
  const { vms } = await json<{ vms: { id?: string; uuid?: string; state: string }[] }>(res);
  const vm = vms.find((v) => (v.id ?? v.uuid) === vmId);
  if (!vm) throw new Error(`VM ${vmId} not in the agent's local list`);
  return vm.state;
}

describe("power actions", () => {
  it("queues a stop: 202 with the VM in STOPPING and a request that ends done, the VM STOPPED", async () => {
    const res = await post(`/api/vms/${DEMO.web01}/stop`);
    expect(res.status).toBe(202);
    const body = await json(res);
    expect(body).toMatchObject({
      success: true,
      vm: { id: DEMO.web01, state: "STOPPING" },
      request: { id: expect.any(String) },
    });
    expect(["queued", "sent", "done"]).toContain(body.request.status);
    const request = await waitRequestSettled(cp, body.request.id);
    expect(request).toMatchObject({ status: "done", kind: expect.stringContaining("stop"), vm_id: DEMO.web01 });
    await waitVmState(cp, DEMO.web01, "STOPPED");
    expect(await hypervisorState(DEMO.web01)).toBe("STOPPED");
  });

  it("with ?wait=true answers 200 with the final VM", async () => {
    const res = await post(`/api/vms/${DEMO.web01}/start?wait=true`);
    expect(res.status).toBe(200);
    expect((await json(res)).vm).toMatchObject({ id: DEMO.web01, state: "RUNNING" });
    expect(await hypervisorState(DEMO.web01)).toBe("RUNNING");
  });

  it("force-stops a paused VM", async () => {
    const res = await post(`/api/vms/${DEMO.analytics}/stop?force=true&wait=true`);
    expect(res.status).toBe(200);
    expect((await json(res)).vm.state).toBe("STOPPED");
    expect(await hypervisorState(DEMO.analytics)).toBe("STOPPED");
  });

  it("refuses actions the state does not allow with 409 naming the state", async () => {
    const start = await post(`/api/vms/${DEMO.web01}/start`);
    expect(start.status).toBe(409);
    expect((await json(start)).error.message).toMatch(/RUNNING/);
    const stop = await post(`/api/vms/${DEMO.legacyErp}/stop`);
    expect(stop.status).toBe(409);
    expect((await json(stop)).error.message).toMatch(/ERROR/);
    expect((await getVm(cp, DEMO.legacyErp)).state).toBe("ERROR");
  });
});

describe("the stuck case", () => {
  it("a stop the frozen agent never acknowledges fails with 504, the request failed and the VM left STOPPING", async () => {
    agent.freeze();
    const started = Date.now();
    const res = await post(`/api/vms/${DEMO.db01}/stop?wait=true`);
    expect(res.status).toBe(504);
    expect((await json(res)).error.code).toBe("agent_timeout");
    expect(Date.now() - started).toBeLessThan(10_000); // ACK_TIMEOUT_MS is 2 s here

    const vm = await getVm(cp, DEMO.db01);
    expect(vm.state).toBe("STOPPING");
    // Neither start nor stop is allowed any more: that is what "stuck" means.
    expect((await post(`/api/vms/${DEMO.db01}/start`)).status).toBe(409);
    expect((await post(`/api/vms/${DEMO.db01}/stop`)).status).toBe(409);
  });

  it("reset_state without force while the agent is frozen: no answer in time, so STOPPED (forced)", async () => {
    const res = await post(`/api/vms/${DEMO.db01}/reset_state`);
    expect(res.status).toBe(200);
    const body = await json(res);
    expect(body).toMatchObject({
      success: true,
      previousState: "STOPPING",
      source: "forced",
      vm: { id: DEMO.db01, state: "STOPPED" },
    });
    expect(body.message).toMatch(/answer|offline/i);
  });

  it("reset_state with force while the agent is frozen sets STOPPED without asking", async () => {
    // the agent is still frozen: put another VM in the stuck state first
    const res = await post(`/api/vms/${DEMO.web02}/stop?wait=true`);
    expect(res.status).toBe(504);
    const forced = await json(await post(`/api/vms/${DEMO.web02}/reset_state?force=true`));
    expect(forced).toMatchObject({
      success: true,
      previousState: "STOPPING",
      source: "forced",
      vm: { state: "STOPPED" },
    });
  });

  it("once the agent is back, reset_state asks the hypervisor: the late stops were never carried out", async () => {
    agent.thaw();
    for (const id of [DEMO.db01, DEMO.web02]) {
      const body = await json(await post(`/api/vms/${id}/reset_state`));
      expect(body).toMatchObject({ success: true, source: "hypervisor", vm: { id, state: "RUNNING" } });
      // STOPPED as forced above, unless the thawed agent's own report already put it right
      // (a VM no longer in transition takes the hypervisor's state from the inventory).
      expect(["STOPPED", "RUNNING"]).toContain(body.previousState);
      expect(await hypervisorState(id)).toBe("RUNNING");
    }
    const events = (
      await json<{
        events: { action: string; source: string | null; fromState: string | null; toState: string | null }[];
      }>(await cp.api(`/api/vms/${DEMO.db01}/events`))
    ).events;
    const resets = events.filter((e) => e.action === "reset_state");
    expect(resets.map((e) => e.source)).toEqual(["hypervisor", "forced"]); // newest first
    expect(resets[1]).toMatchObject({ fromState: "STOPPING", toState: "STOPPED" });
  });

  it("reset_state with force on a VM whose agent answers still sets STOPPED, and says it was forced", async () => {
    const body = await json(await post(`/api/vms/${DEMO.files01}/reset_state?force=true`));
    expect(body).toMatchObject({ success: true, previousState: "RUNNING", source: "forced", vm: { state: "STOPPED" } });
    expect(body.message).toMatch(/forced/i);
    // and asking the hypervisor puts it right again
    expect(await json(await post(`/api/vms/${DEMO.files01}/reset_state`))).toMatchObject({
      source: "hypervisor",
      vm: { state: "RUNNING" },
    });
  });
});

describe("an expired command", () => {
  it("is not carried out when the agent reads it after its deadline", async () => {
    agent.freeze();
    const res = await post(`/api/vms/${DEMO.web01}/stop`);
    expect(res.status).toBe(202);
    const { request } = await json(res);
    const settled = await waitRequestSettled(cp, request.id, 15_000);
    expect(settled.status).toBe("failed");
    await new Promise((r) => setTimeout(r, 1_000)); // well past the command's deadline
    agent.thaw();
    // Give the thawed agent time to read the stale stop (and to have stopped the domain, were it wrong).
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await hypervisorState(DEMO.web01)).toBe("RUNNING");
    expect((await getRequest(cp, request.id)).status).toBe("failed"); // a late answer does not rewrite it
    // Left STOPPING by a request no longer in flight: the reconciler asks the hypervisor (at once, or
    // at its next pass if its first question also expired in the frozen agent) and takes its answer.
    await waitVmState(cp, DEMO.web01, "RUNNING", 70_000);
    const events = (await json<{ events: { action: string }[] }>(await cp.api(`/api/vms/${DEMO.web01}/events`))).events;
    expect(events[0]?.action).toBe("auto_repair");
  }, 90_000);
});
