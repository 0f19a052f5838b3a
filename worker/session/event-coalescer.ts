// A node's VMs' reported state changes, turned into events a person can read: a VM gets an event of
// its own for each of its first EVENT_BURST_PER_VM changes in a window of EVENT_WINDOW_MS; past
// that it is muted, its changes only counted, and when the window ends one event says so ("changed
// state 312 times in the last minute, now RUNNING"). A VM that kept flapping stays muted for the
// next window too (one summary a window while it flaps); one that went quiet is forgotten. The
// record's state is written on every report all the same: only the trail is coalesced.
import { sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { runBatch } from "../db/batch.ts";
import type { EventsWritten } from "../inventory.ts";
import type { FlapWindow, SessionStore } from "./store.ts";

/** Summaries written per statement (one bound JSON parameter each). */
const SUMMARY_CHUNK = 500;

export type CoalescerSettings = { windowMs: number; burstPerVm: number };

const windowText = (ms: number) =>
  ms === 60_000 ? "the last minute" : ms % 60_000 === 0 ? `the last ${ms / 60_000} minutes` : `the last ${ms / 1000} s`;

export class EventCoalescer {
  private readonly store: SessionStore;
  private readonly db: Database;
  private readonly settings: CoalescerSettings;

  constructor(store: SessionStore, db: Database, settings: CoalescerSettings) {
    this.store = store;
    this.db = db;
    this.settings = settings;
  }

  /** Of these VMs, the ones whose changes get no event of their own right now. */
  muted(vmIds: Iterable<string>, now: number): string[] {
    const out: string[] = [];
    for (const id of vmIds) {
      const w = this.store.entry("flap", id.toLowerCase());
      if (w && now < w.start + this.settings.windowMs && w.written >= this.settings.burstPerVm) out.push(w.vmId);
    }
    return out;
  }

  /** Every VM of the node muted right now (for a sync's end, which may mark any of them missing). */
  allMuted(now: number): string[] {
    return this.muted(
      this.store.entries("flap").map(([id]) => id),
      now,
    );
  }

  /** Counts what a report changed: every change, and which of them got their own event. */
  count(written: EventsWritten, now: number): void {
    if (written.changed.length === 0) return;
    const own = new Set(written.recorded);
    for (const c of written.changed) {
      const open = this.store.entry("flap", c.id);
      const w: FlapWindow =
        open && now < open.start + this.settings.windowMs
          ? { ...open }
          : { vmId: c.id, start: now, changes: 0, written: 0, fromState: null };
      w.changes++;
      if (own.has(c.id)) w.written++;
      else w.fromState ??= c.fromState;
      this.store.putEntry("flap", c.id, w);
    }
    const due = this.store.get("flapDueAt");
    const end = Math.min(...written.changed.map((c) => this.store.entry("flap", c.id)!.start)) + this.settings.windowMs;
    if (due === undefined || end < due) this.store.put("flapDueAt", end);
  }

  /** When the earliest window ends. */
  dueAt(): number | undefined {
    return this.store.get("flapDueAt");
  }

  /** Ends the windows that are over: a summary event for each VM whose changes were muted in it. */
  async flush(nodeId: string, actor: string, now: number): Promise<void> {
    const summaries: { id: string; n: number; from: string | null }[] = [];
    let next = Infinity;
    for (const [id, w] of this.store.entries("flap")) {
      if (now < w.start + this.settings.windowMs) {
        next = Math.min(next, w.start + this.settings.windowMs);
        continue;
      }
      const muted = w.changes - w.written;
      if (muted > 0) {
        summaries.push({ id, n: w.changes, from: w.fromState });
        // Still flapping, as far as we know: the next window starts muted.
        const carried = { vmId: id, start: now, changes: 0, written: this.settings.burstPerVm, fromState: null };
        this.store.putEntry("flap", id, carried);
        next = Math.min(next, now + this.settings.windowMs);
      } else this.store.deleteEntry("flap", id);
    }
    if (next === Infinity) this.store.delete("flapDueAt");
    else this.store.put("flapDueAt", next);
    const span = windowText(this.settings.windowMs);
    for (let i = 0; i < summaries.length; i += SUMMARY_CHUNK) {
      const json = JSON.stringify(summaries.slice(i, i + SUMMARY_CHUNK));
      await runBatch(this.db, [
        sql`INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
          SELECT v.id, ${now}, ${actor}, 'state_flapping', json_extract(s.value, '$.from'), v.state, 'agent',
            'changed state ' || json_extract(s.value, '$.n') || ' times in ' || ${span} || ', now ' ||
            CASE WHEN v.missing = 1 THEN 'missing (' || v.state || ')' ELSE v.state END
          FROM json_each(${json}) s CROSS JOIN vms v ON v.id = json_extract(s.value, '$.id')
          WHERE v.node_id = ${nodeId}`,
      ]);
    }
  }
}
