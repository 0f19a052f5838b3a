// How long the VM events trail is kept, applied by the once-a-minute cron in small batches (D1 runs
// one statement at a time: a batch of a few hundred rows keeps every API call beside it quick).
// What hosts report (source 'agent': state changes, missing, discovered) is kept EVENTS_KEEP_DAYS
// and at most EVENTS_KEEP_PER_VM a VM; what people and the control plane did (power actions, resets,
// repairs, flags cleared, re-homes) is the audit trail, kept AUDIT_EVENTS_KEEP_DAYS.
import { sql } from "drizzle-orm";
import { database, type Database } from "./db/client.ts";
import { changes, runBatch } from "./db/batch.ts";

export type RetentionSettings = {
  keepMs: number;
  keepPerVm: number;
  auditKeepMs: number;
  /** rows per DELETE statement, and statements per run at most */
  batchRows: number;
  batchesPerRun: number;
};

const DAY_MS = 86_400_000;
/** VMs that had host events within this long are checked against the per-VM count (the cron runs
 *  every minute: twice its period, so a late run misses none). */
const RECENT_MS = 120_000;
/** VMs over the per-VM count trimmed per run. */
const VMS_PER_RUN = 500;
/** Per-VM trims per D1 batch. */
const TRIMS_PER_BATCH = 50;
/** The sources of the audit trail (everything not reported by a host). */
const AUDIT_SOURCES = sql`('control_plane', 'hypervisor', 'forced')`;

const positive = (v: string | undefined, fallback: number) => {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : fallback;
};

export function retentionSettings(
  env: Partial<
    Pick<
      Env,
      | "EVENTS_KEEP_DAYS"
      | "EVENTS_KEEP_PER_VM"
      | "AUDIT_EVENTS_KEEP_DAYS"
      | "RETENTION_BATCH_ROWS"
      | "RETENTION_BATCHES_PER_RUN"
    >
  >,
): RetentionSettings {
  return {
    keepMs: positive(env.EVENTS_KEEP_DAYS, 30) * DAY_MS,
    keepPerVm: positive(env.EVENTS_KEEP_PER_VM, 1000),
    auditKeepMs: positive(env.AUDIT_EVENTS_KEEP_DAYS, 365) * DAY_MS,
    batchRows: positive(env.RETENTION_BATCH_ROWS, 500),
    batchesPerRun: positive(env.RETENTION_BATCHES_PER_RUN, 200),
  };
}

export type RetentionRun = { byAge: number; audit: number; perVm: number; statements: number };

/** One run: old host events, then old audit events, then VMs over their count, each statement
 *  deleting at most `batchRows`, at most `batchesPerRun` statements in all; the rest next run. */
export async function applyRetention(env: Env, now = Date.now(), s = retentionSettings(env)): Promise<RetentionRun> {
  const db = database(env.DB);
  const run: RetentionRun = { byAge: 0, audit: 0, perVm: 0, statements: 0 };
  const room = () => run.statements < s.batchesPerRun;
  // Host events past their age: the (source, at) index walks exactly those rows.
  while (room()) {
    run.statements++;
    const n = await deleteBatch(db, sql`source = 'agent' AND at < ${now - s.keepMs}`, s.batchRows);
    run.byAge += n;
    if (n < s.batchRows) break;
  }
  while (room()) {
    run.statements++;
    const n = await deleteBatch(db, sql`source IN ${AUDIT_SOURCES} AND at < ${now - s.auditKeepMs}`, s.batchRows);
    run.audit += n;
    if (n < s.batchRows) break;
  }
  if (room()) await trimPerVm(db, now, s, run);
  return run;
}

async function deleteBatch(db: Database, where: ReturnType<typeof sql>, rows: number): Promise<number> {
  const [r] = await runBatch(db, [
    sql`DELETE FROM vm_events WHERE id IN (SELECT id FROM vm_events WHERE ${where} LIMIT ${rows})`,
  ]);
  return changes(r);
}

/** VMs with recent host events keep only their newest `keepPerVm` of them. */
async function trimPerVm(db: Database, now: number, s: RetentionSettings, run: RetentionRun): Promise<void> {
  // Of the VMs with recent host events, those over the count. `+source` keeps SQLite on the (vm_id,
  // at) index for the per-VM walks: by (source, at) it would walk every VM's host events for each.
  const recent = await db.all<{ vmId: string }>(
    sql`SELECT r.vm_id AS vmId FROM (SELECT DISTINCT vm_id FROM vm_events WHERE source = 'agent' AND at >= ${now - RECENT_MS}) r
      WHERE EXISTS (SELECT 1 FROM vm_events e WHERE e.vm_id = r.vm_id AND +e.source = 'agent' LIMIT 1 OFFSET ${s.keepPerVm})
      LIMIT ${VMS_PER_RUN}`,
  );
  for (let i = 0; i < recent.length && run.statements < s.batchesPerRun; i += TRIMS_PER_BATCH) {
    const some = recent.slice(i, i + TRIMS_PER_BATCH);
    run.statements += some.length;
    const results = await runBatch(
      db,
      some.map(
        ({
          vmId,
        }) => sql`DELETE FROM vm_events WHERE id IN (SELECT id FROM vm_events WHERE vm_id = ${vmId} AND +source = 'agent'
          ORDER BY at DESC, id DESC LIMIT ${s.batchRows} OFFSET ${s.keepPerVm})`,
      ),
    );
    for (const r of results) run.perVm += changes(r);
  }
}
