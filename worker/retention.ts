// How long the VM events trail is kept, applied by the once-a-minute cron in small batches: one
// DELETE of a few hundred rows per D1 call, so an API call beside a run waits for one statement at
// most, never for the run. What hosts report (source 'agent': state changes, missing, discovered)
// is kept EVENTS_KEEP_DAYS and at most EVENTS_KEEP_PER_VM a VM; what people and the control plane
// did (power actions, resets, repairs, flags cleared, re-homes) is the audit trail, kept
// AUDIT_EVENTS_KEEP_DAYS.
import { sql } from "drizzle-orm";
import { database, type Database } from "./db/client.ts";
import { changes, compile, type Statement } from "./db/batch.ts";

export type RetentionSettings = {
  keepMs: number;
  keepPerVm: number;
  auditKeepMs: number;
  /** rows per DELETE statement, and statements per run at most */
  batchRows: number;
  batchesPerRun: number;
  /** a run starts no statement after this long; the rest is the next run's */
  runMs: number;
};

const DAY_MS = 86_400_000;
/** A quarter of the cron's period: runs never overlap, and a slow database cannot keep one going. */
const RUN_BUDGET_MS = 15_000;
/** VMs that had host events within this long are checked against the per-VM count (the cron runs
 *  every minute: twice its period, so a late run misses none). */
const RECENT_MS = 120_000;
/** VMs over the per-VM count trimmed per run. */
const VMS_PER_RUN = 500;
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
    batchRows: positive(env.RETENTION_BATCH_ROWS, 100),
    batchesPerRun: positive(env.RETENTION_BATCHES_PER_RUN, 1000),
    runMs: RUN_BUDGET_MS,
  };
}

export type RetentionRun = { byAge: number; audit: number; perVm: number; statements: number };

/** One run: old host events, then old audit events, then VMs over their count, each statement
 *  deleting at most `batchRows`, until `batchesPerRun` statements or `runMs` (read on `clock`)
 *  are spent; the rest next run. */
export async function applyRetention(
  env: Env,
  now = Date.now(),
  s = retentionSettings(env),
  clock: () => number = Date.now,
): Promise<RetentionRun> {
  const db = database(env.DB);
  const run: RetentionRun = { byAge: 0, audit: 0, perVm: 0, statements: 0 };
  const started = clock();
  const room = () => run.statements < s.batchesPerRun && clock() - started < s.runMs;
  const remove = (statement: Statement) => {
    run.statements++;
    return deleteRows(db, statement);
  };
  // Host events past their age: the (source, at) index walks exactly those rows.
  while (room()) {
    const n = await remove(oldest(sql`source = 'agent' AND at < ${now - s.keepMs}`, s.batchRows));
    run.byAge += n;
    if (n < s.batchRows) break;
  }
  while (room()) {
    const n = await remove(oldest(sql`source IN ${AUDIT_SOURCES} AND at < ${now - s.auditKeepMs}`, s.batchRows));
    run.audit += n;
    if (n < s.batchRows) break;
  }
  if (!room()) return run;
  // Of the VMs with recent host events, those over the count, each trimmed towards its newest
  // `keepPerVm` by at most `batchRows` a run. `+source` keeps SQLite on the (vm_id, at) index for
  // the per-VM walks: by (source, at) it would walk every VM's host events for each.
  const over = await db.all<{ vmId: string }>(
    sql`SELECT r.vm_id AS vmId FROM (SELECT DISTINCT vm_id FROM vm_events WHERE source = 'agent' AND at >= ${now - RECENT_MS}) r
      WHERE EXISTS (SELECT 1 FROM vm_events e WHERE e.vm_id = r.vm_id AND +e.source = 'agent' LIMIT 1 OFFSET ${s.keepPerVm})
      LIMIT ${VMS_PER_RUN}`,
  );
  for (const { vmId } of over) {
    if (!room()) break;
    run.perVm += await remove(
      sql`DELETE FROM vm_events WHERE id IN (SELECT id FROM vm_events WHERE vm_id = ${vmId} AND +source = 'agent'
        ORDER BY at DESC, id DESC LIMIT ${s.batchRows} OFFSET ${s.keepPerVm})`,
    );
  }
  return run;
}

/** The oldest `rows` matching `where`, by rowid (the subquery reads the index alone). */
const oldest = (where: ReturnType<typeof sql>, rows: number) =>
  sql`DELETE FROM vm_events WHERE id IN (SELECT id FROM vm_events WHERE ${where} LIMIT ${rows})`;

/**
 * One statement on its own (a D1 batch is one transaction: a batch of deletes would be one long
 * write), then a turn of the timer. Local D1 runs inside workerd, and workerd takes no new request
 * off its sockets while D1 answers keep it busy: without the timer, back-to-back deletes held every
 * API call made during a run (a list of VMs) at the door until the run ended, seconds later.
 */
async function deleteRows(db: Database, statement: Statement): Promise<number> {
  const q = compile(statement);
  const result = await db.$client
    .prepare(q.sql)
    .bind(...q.params)
    .run();
  await scheduler.wait(0);
  return changes(result);
}
