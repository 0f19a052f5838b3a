// A host that misbehaves cannot hurt the others, inside workerd with local D1: a VM flapping faster
// than anyone can read becomes one event saying so (its record stays exact); an agent over its
// node's work budget is closed with a reason and the node flagged for admins, and reconnecting does
// not refill the budget; the events trail is trimmed by age and by count, keeping the audit trail.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CLOSE, type VmInfo } from "../../protocol/wire.ts";
import { applyRetention, retentionSettings } from "../../worker/retention.ts";
import { agentsClosedAfterEach, api, eventually, json, TestAgent, uuid, vmInfo } from "./support.ts";

const agents = agentsClosedAfterEach();
/** The worker pool's EVENT_WINDOW_MS (vitest.config.ts) and the default EVENT_BURST_PER_VM. */
const WINDOW_MS = 3000;
const BURST = 3;

const flip = (vms: VmInfo[], i: number): VmInfo[] =>
  vms.map((v) =>
    i % 2 === 0
      ? { ...v, state: "STOPPED", libvirtState: "shutoff" }
      : { ...v, state: "RUNNING", libvirtState: "running" },
  );

async function events(
  vmId: string,
): Promise<{ action: string; fromState: string; toState: string; message: string }[]> {
  return (await json(await api(`/api/vms/${vmId}/events`))).events;
}

const countEvents = async (nodeVms: string[]) =>
  (
    await env.DB.prepare(
      `SELECT count(*) AS n FROM vm_events WHERE vm_id IN (SELECT value FROM json_each(?)) AND action != 'discovered'`,
    )
      .bind(JSON.stringify(nodeVms))
      .first<{ n: number }>()
  )?.n ?? 0;

describe("a flapping VM", () => {
  it("gets events for its first changes, then one event per window saying how often it changed; its state stays exact", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vms = Array.from({ length: 20 }, (_, i) => vmInfo(`flap-${i}`, "running"));
    s.agent.inventory(vms);
    await eventually(async () => expect((await api(`/api/vms/${vms[19].uuid}`)).status).toBe(200));
    const started = Date.now();
    // 30 reports of all 20 flipping, each waited for (the session's pace, not the machine's).
    for (let i = 0; i < 30; i++) {
      // The last report also says the VM has 8 vCPUs: seen in the record, every report before it was applied.
      const report = flip(vms, i).map((v) => (i === 29 ? { ...v, vcpus: 8 } : v));
      s.agent.send({ type: "vm.changed", id: `c${i}`, payload: { vms: report, removed: [] } });
    }
    await eventually(async () => expect((await json(await api(`/api/vms/${vms[0].uuid}`))).vm.vcpus).toBe(8));
    const during = await events(vms[0].uuid);
    expect(during.filter((e) => e.action === "state_changed")).toHaveLength(BURST);
    // The window ends: one summary with the count and where the VM is now.
    const trail = await eventually(async () => {
      const e = await events(vms[0].uuid);
      expect(e.some((x) => x.action === "state_flapping")).toBe(true);
      return e;
    }, WINDOW_MS * 4);
    const summary = trail.find((x) => x.action === "state_flapping")!;
    // Reports that came inside the first window are all counted (some may fall in the next one).
    expect(summary.message).toMatch(/^changed state \d+ times in the last 3 s, now RUNNING$/);
    const n = Number(/changed state (\d+)/.exec(summary.message)![1]);
    if (Date.now() - started < WINDOW_MS) expect(n).toBe(30);
    expect(n).toBeGreaterThan(BURST);
    expect(summary.toState).toBe("RUNNING");
    expect(await countEvents(vms.map((v) => v.uuid))).toBeLessThanOrEqual(vms.length * (BURST + 2));
    // Every record is exact.
    for (const v of vms) expect((await json(await api(`/api/vms/${v.uuid}`))).vm.state).toBe("RUNNING");
  }, 60_000);

  it("a VM that changes now and then gets an event for every change", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vm = vmInfo("calm", "running");
    s.agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    for (let i = 0; i < BURST; i++) {
      s.agent.send({ type: "vm.changed", id: `c${i}`, payload: { vms: flip([vm], i), removed: [] } });
    }
    await eventually(async () =>
      expect((await events(vm.uuid)).filter((e) => e.action === "state_changed")).toHaveLength(BURST),
    );
    await new Promise((r) => setTimeout(r, WINDOW_MS + 500));
    expect((await events(vm.uuid)).some((e) => e.action === "state_flapping")).toBe(false);
  }, 30_000);
});

describe("the node's work budget", () => {
  it("an agent reporting more VMs a second than the budget allows is closed with the reason; the node is flagged; a reconnect does not refill it", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vms = Array.from({ length: 500 }, (_, i) => vmInfo(`costly-${i}`, "running"));
    // 500 VM changes a frame: the default burst (30 s of 1,000 a second) lasts about 60 frames.
    for (let i = 0; i < 90 && !s.agent.closed; i++)
      s.agent.send({ type: "vm.changed", id: `c${i}`, payload: { vms: flip(vms, i), removed: [] } });
    const closed = await s.agent.waitClosed(60_000);
    expect(closed.code).toBe(CLOSE.overloaded);
    expect(closed.reason).toMatch(/work budget: more than 1000 VM state changes a second|inbox backlog/);
    const node = await eventually(async () => {
      const { node } = await json(await api(`/api/nodes/${s.nodeId}`));
      expect(node.flag).toMatchObject({ code: "agent_overloaded" });
      return node;
    });
    expect(node.flag.message).toMatch(/work budget/);
    // Reconnecting: the budget is the node's, still spent.
    const again = await TestAgent.connect(s.credential);
    agents.push(again);
    for (let i = 0; i < 4 && !again.closed; i++)
      again.send({ type: "vm.changed", id: `r${i}`, payload: { vms: flip(vms, i), removed: [] } });
    expect((await again.waitClosed(30_000)).code).toBe(CLOSE.overloaded);
  }, 120_000);

  it("an honest host stays far below it: a 5,000-VM resync and a start/stop storm of every VM", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vms = Array.from({ length: 5000 }, (_, i) => vmInfo(`honest-${i}`, "running"));
    s.agent.inventory(vms);
    await eventually(async () => expect((await api(`/api/vms/${vms[4999].uuid}`)).status).toBe(200), 30_000);
    // Every VM stopped, then started again, reported as the agent reports changes (500 a frame).
    for (const round of [0, 1])
      for (let i = 0; i < vms.length; i += 500)
        s.agent.send({
          type: "vm.changed",
          id: `s${round}-${i}`,
          payload: { vms: flip(vms.slice(i, i + 500), round), removed: [] },
        });
    // And a reconnect's full resync on top.
    s.agent.inventory(vms);
    await eventually(async () => {
      const row = await env.DB.prepare(
        "SELECT count(*) AS n FROM vm_events WHERE action = 'state_changed' AND vm_id IN (SELECT id FROM vms WHERE node_id = ?)",
      )
        .bind(s.nodeId)
        .first<{ n: number }>();
      expect(row?.n).toBe(10_000);
    }, 60_000);
    expect(s.agent.closed).toBeNull();
    expect((await json(await api(`/api/nodes/${s.nodeId}`))).node.flag).toBeNull();
  }, 120_000);
});

describe("events retention", () => {
  it("deletes host events past their age and past the per-VM count in batches; the audit trail is kept longer", async () => {
    const settings = { ...retentionSettings(env), batchRows: 50, keepPerVm: 100 };
    const now = Date.now();
    const day = 86_400_000;
    const old = uuid();
    const busy = uuid();
    const insert = (vmId: string, at: number, action: string, source: string, n: number) =>
      env.DB.prepare(
        `INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
         WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < ?5)
         SELECT ?1, ?2 + value, 'test', ?3, 'RUNNING', 'STOPPED', ?4, 'seeded' FROM s`,
      )
        .bind(vmId, at, action, source, n)
        .run();
    await insert(old, now - 40 * day, "state_changed", "agent", 230); // past 30 days: gone
    await insert(old, now - 40 * day, "reset_state", "hypervisor", 5); // audit, 40 days: kept
    await insert(old, now - 400 * day, "stop", "control_plane", 7); // audit past a year: gone
    await insert(busy, now - 1000, "state_changed", "agent", 260); // recent, over the count
    const count = async (vmId: string, source?: string) =>
      (
        await env.DB.prepare(`SELECT count(*) AS n FROM vm_events WHERE vm_id = ? AND (?2 IS NULL OR source = ?2)`)
          .bind(vmId, source ?? null)
          .first<{ n: number }>()
      )?.n;
    const run = await applyRetention(env, now, settings);
    expect(run, JSON.stringify(run)).toMatchObject({ byAge: 230, audit: 7, perVm: 50 });
    // In batches: 230 rows of 50 take 5 statements, and each VM's trim is one batch of at most 50.
    expect(run.statements).toBeGreaterThanOrEqual(5 + 1 + 1);
    expect(await count(old, "agent")).toBe(0);
    expect(await count(old, "hypervisor")).toBe(5);
    expect(await count(old, "control_plane")).toBe(0);
    // The busy VM: trimmed 50 at a time towards its newest 100 (260 -> 210 -> 160 -> 110 -> 100).
    expect(await count(busy)).toBe(210);
    for (const left of [160, 110, 100, 100]) {
      await applyRetention(env, now, settings);
      expect(await count(busy)).toBe(left);
    }
    const newest = await env.DB.prepare("SELECT min(at) AS at FROM vm_events WHERE vm_id = ?")
      .bind(busy)
      .first<{ at: number }>();
    expect(newest?.at).toBe(now - 1000 + 161);
  }, 30_000);
});
