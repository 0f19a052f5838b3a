// The events trail's retention inside workerd with local D1: a run is bounded by its time budget and
// its statement count, stops between statements, and the next runs finish the job; what goes is only
// what is past its age, oldest first, and the audit trail keeps its own longer retention.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { applyRetention, type RetentionRun, retentionSettings } from "../../worker/retention.ts";
import { uuid } from "./support.ts";

const DAY = 86_400_000;

async function seed(vmId: string, from: number, source: string, n: number): Promise<void> {
  await env.DB.prepare(
    `INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
     WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ?4 - 1)
     SELECT ?1, ?2 + i, 'test', 'state_changed', 'RUNNING', 'STOPPED', ?3, 'seeded' FROM s`,
  )
    .bind(vmId, from, source, n)
    .run();
}

const rows = async (vmId: string, source: string) =>
  (await env.DB.prepare("SELECT count(*) AS n, min(at) AS oldest FROM vm_events WHERE vm_id = ? AND source = ?")
    .bind(vmId, source)
    .first<{ n: number; oldest: number | null }>())!;

describe("events retention runs", () => {
  it("a run stops at its time budget between statements; the next runs delete the rest, and only rows past their age", async () => {
    const now = Date.now();
    const [flapped, recent, audited] = [uuid(), uuid(), uuid()];
    const oldFrom = now - 40 * DAY;
    await seed(flapped, oldFrom, "agent", 1000); // host events past 30 days: gone
    await seed(recent, now - 29 * DAY, "agent", 50); // host events within 30 days: kept
    await seed(audited, oldFrom, "hypervisor", 20); // audit trail, 40 days: kept (a year)
    await seed(audited, now - 400 * DAY, "control_plane", 30); // audit trail past a year: gone

    // A clock that moves 10 ms each time the run reads it: the budget runs out after a few statements
    // whatever the machine's speed.
    let t = 0;
    const clock = () => (t += 10);
    const settings = { ...retentionSettings(env), batchRows: 100, batchesPerRun: 1000, runMs: 35 };

    const first = await applyRetention(env, now, settings, clock);
    expect(first.byAge, JSON.stringify(first)).toBeGreaterThan(0);
    expect(first.byAge).toBeLessThan(1000);
    expect(first.byAge % 100, "stopped between statements, each a whole batch").toBe(0);
    expect(first.statements).toBeLessThan(settings.batchesPerRun); // the time stopped it, not the count
    // Oldest first: what is left of the old rows starts right after what went.
    expect(await rows(flapped, "agent")).toEqual({ n: 1000 - first.byAge, oldest: oldFrom + first.byAge });

    const runs: RetentionRun[] = [first];
    // Each run deletes at least one batch, so the 1,030 rows past their age take at most 11 runs.
    while (runs.length < 12) {
      const run = await applyRetention(env, now, settings, clock);
      runs.push(run);
      if (run.byAge + run.audit + run.perVm === 0) break;
    }
    const total = (k: "byAge" | "audit" | "perVm") => runs.reduce((sum, r) => sum + r[k], 0);
    expect(runs.length, JSON.stringify(runs)).toBeLessThan(12);
    expect({ byAge: total("byAge"), audit: total("audit"), perVm: total("perVm") }).toEqual({
      byAge: 1000,
      audit: 30,
      perVm: 0,
    });
    expect((await rows(flapped, "agent")).n).toBe(0);
    expect(await rows(recent, "agent")).toEqual({ n: 50, oldest: now - 29 * DAY });
    expect(await rows(audited, "hypervisor")).toEqual({ n: 20, oldest: oldFrom });
    expect((await rows(audited, "control_plane")).n).toBe(0);
  });

  it("a run stops at its statement count, however much time it has left", async () => {
    const now = Date.now();
    const vm = uuid();
    await seed(vm, now - 40 * DAY, "agent", 500);
    const settings = { ...retentionSettings(env), batchRows: 100, batchesPerRun: 3 };
    expect(await applyRetention(env, now, settings)).toEqual({ byAge: 300, audit: 0, perVm: 0, statements: 3 });
    expect((await rows(vm, "agent")).n).toBe(200);
    expect(await applyRetention(env, now, settings)).toMatchObject({ byAge: 200 });
    expect((await rows(vm, "agent")).n).toBe(0);
  });
});
