// The once-a-minute scan for stuck VMs: a VM left STOPPING on a node whose agent went away (so no
// reconciler runs for it) is queued as `vm.stuck` for subscribed targets, once per transition.
// The target is a loopback port nothing listens on: what is checked is the queued delivery.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { reportStuckVms } from "../../worker/notifications/stuck-scan.ts";
import { agentsClosedAfterEach, api, eventually, json, TestAgent, vmInfo } from "./support.ts";

const agents = agentsClosedAfterEach();
const STUCK_AFTER_MS = 120_000; // the default the worker pool runs with

async function deliveries(targetId: string) {
  return (await json(await api(`/api/notifications/deliveries?target_id=${targetId}`))).deliveries as {
    event: string;
    payload: any;
  }[];
}

describe("stuck scan", () => {
  it("queues vm.stuck once for a VM stuck on an offline node, and nothing for targets not subscribed or VMs not stuck long enough", async () => {
    const stuckTarget = (
      await json(
        await api("/api/notifications/targets", {
          json: { name: "stuck", url: "http://127.0.0.1:9/hook", secret: "s", events: ["vm.stuck"] },
        }),
        201,
      )
    ).target;
    const otherTarget = (
      await json(
        await api("/api/notifications/targets", {
          json: { name: "other", url: "http://127.0.0.1:9/hook", secret: "s", events: ["vm.flagged"] },
        }),
        201,
      )
    ).target;

    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vm = vmInfo(`scan-${s.name}`, "running");
    s.agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    const { request } = await json(await api(`/api/vms/${vm.uuid}/stop`, { method: "POST" }), 202);
    await s.agent.next("vm.stop"); // never acknowledged
    s.agent.close(); // and the agent is gone: no reconciler for this node
    await eventually(
      async () => expect((await json(await api(`/api/requests/${request.id}`))).request.status).toBe("failed"),
      6000,
    );
    expect((await json(await api(`/api/vms/${vm.uuid}`))).vm.state).toBe("STOPPING");

    // Not stuck long enough yet.
    expect(await reportStuckVms(env, Date.now())).toBe(0);
    // Past STUCK_AFTER_MS: reported; a second run (next minute) does not repeat it.
    expect(await reportStuckVms(env, Date.now() + STUCK_AFTER_MS + 1000)).toBeGreaterThanOrEqual(1);
    expect(await reportStuckVms(env, Date.now() + STUCK_AFTER_MS + 61_000)).toBeGreaterThanOrEqual(1);
    const queued = (await deliveries(stuckTarget.id)).filter((d) => d.payload.vm?.id === vm.uuid);
    expect(queued).toHaveLength(1);
    expect(queued[0].payload).toMatchObject({
      event: "vm.stuck",
      vm: { id: vm.uuid, name: vm.name },
      node: { id: s.nodeId },
      message: expect.stringMatching(/STOPPING .*node is offline/),
    });
    expect((await deliveries(otherTarget.id)).filter((d) => d.event === "vm.stuck")).toEqual([]);
    // Nothing listens there: its first attempt is kept as a failure with a retry due (the outbox
    // is done with it before the test ends).
    await eventually(async () => {
      const [d] = (await deliveries(stuckTarget.id)).filter((x) => x.payload.vm?.id === vm.uuid) as any[];
      expect(d).toMatchObject({
        status: "pending",
        attempts: [{ httpStatus: null, error: expect.stringMatching(/no answer/) }],
        nextAttemptAt: expect.any(String),
      });
    });
  });
});
