// REPAIR_AFTER_MS: with it set, the reconciler leaves a VM in a transition that no request holds
// alone for that long (npm start's demo keeps its stuck VM this way, for a user to try Reset
// State on), even through the agent's digests and resyncs; reset_state still recovers it at once.
// Without it (the default) the same VM is put right by itself as soon as the agent answers.
import { afterAll, describe, expect, it } from "vitest";
import type { ControlPlane } from "../support/control-plane.ts";
import type { AgentProcess } from "../support/agent.ts";
import { DEMO, enrollAgent, eventually, getVm, json, startControlPlane } from "./journey.ts";

const opened: { cp: ControlPlane; agent: AgentProcess }[] = [];

afterAll(async () => {
  for (const { cp, agent } of opened) {
    await agent.dispose();
    await cp.dispose();
  }
});

/** A control plane and a demo agent whose digests come every second; web-02 left in STOPPING by a
 *  stop the frozen agent never acknowledged. */
async function stuckStop(vars: Record<string, string>) {
  const cp = await startControlPlane({ RECONCILE_INTERVAL_MS: "1000", ...vars });
  const { agent } = await enrollAgent(cp, `repair-${Date.now()}`, { args: ["--digest-interval", "1000"] });
  opened.push({ cp, agent });
  agent.freeze();
  const res = await cp.api(`/api/vms/${DEMO.web02}/stop?wait=true`, { method: "POST" });
  expect(res.status).toBe(504);
  agent.thaw();
  return { cp, agent };
}

describe("how long a transition no request holds is left alone", () => {
  it("with REPAIR_AFTER_MS set it stays STOPPING through digests and reconciler passes; reset_state asks the hypervisor", async () => {
    const { cp } = await stuckStop({ REPAIR_AFTER_MS: "600000" });
    // Several digests (1 s) and reconciler passes (1 s) go by: the VM is still where the failed stop left it.
    await new Promise((r) => setTimeout(r, 6_000));
    expect((await getVm(cp, DEMO.web02)).state).toBe("STOPPING");
    const reset = await json(await cp.api(`/api/vms/${DEMO.web02}/reset_state`, { method: "POST" }));
    expect(reset).toMatchObject({
      success: true,
      source: "hypervisor",
      previousState: "STOPPING",
      vm: { state: "RUNNING" },
    });
  }, 90_000);

  it("by default it is asked about as soon as the agent answers, and put back to RUNNING by itself", async () => {
    const { cp } = await stuckStop({});
    await eventually("web-02 repaired", async () => (await getVm(cp, DEMO.web02)).state === "RUNNING", 30_000);
    const { events } = await json<{ events: { action: string; actor: string }[] }>(
      await cp.api(`/api/vms/${DEMO.web02}/events`),
    );
    expect(events.some((e) => e.action === "auto_repair" && e.actor === "reconciler")).toBe(true);
  }, 90_000);
});
