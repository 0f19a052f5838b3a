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

/** How often the windows held in memory are written to storage, at most. */
const PERSIST_MS = 1000;

export type CoalescerSettings = { windowMs: number; burstPerVm: number };

const windowText = (ms: number) =>
  ms === 60_000 ? "the last minute" : ms % 60_000 === 0 ? `the last ${ms / 60_000} minutes` : `the last ${ms / 1000} s`;

export class EventCoalescer {
  private readonly store: SessionStore;
  private readonly db: Database;
  private readonly settings: CoalescerSettings;
  /** The windows, held in memory (a flood must not cost a storage write per VM per frame) and
   *  written to storage at most every PERSIST_MS, so an evicted object still sums up its windows. */
  private windows: Map<string, FlapWindow> | null = null;
  private readonly dirty = new Set<string>();
  private persistedAt = 0;

  constructor(store: SessionStore, db: Database, settings: CoalescerSettings) {
    this.store = store;
    this.db = db;
    this.settings = settings;
  }

  private held(): Map<string, FlapWindow> {
    this.windows ??= new Map(this.store.entries("flap"));
    return this.windows;
  }

  /** Of these VMs, the ones whose changes get no event of their own right now. */
  muted(vmIds: Iterable<string>, now: number): string[] {
    const out: string[] = [];
    const windows = this.held();
    for (const id of vmIds) {
      const w = windows.get(id.toLowerCase());
      if (w && now < w.start + this.settings.windowMs && w.written >= this.settings.burstPerVm) out.push(w.vmId);
    }
    return out;
  }

  /** Every VM of the node muted right now (for a sync's end, which may mark any of them missing). */
  allMuted(now: number): string[] {
    return this.muted(this.held().keys(), now);
  }

  /** Counts what a report changed: every change, and which of them got their own event. */
  count(written: EventsWritten, now: number): void {
    if (written.changed.length === 0) return;
    const windows = this.held();
    const own = new Set(written.recorded);
    let earliest = Infinity;
    for (const c of written.changed) {
      const open = windows.get(c.id);
      const w: FlapWindow =
        open && now < open.start + this.settings.windowMs
          ? open
          : { vmId: c.id, start: now, changes: 0, written: 0, fromState: null };
      w.changes++;
      if (own.has(c.id)) w.written++;
      else w.fromState ??= c.fromState;
      windows.set(c.id, w);
      this.dirty.add(c.id);
      earliest = Math.min(earliest, w.start);
    }
    const due = this.store.get("flapDueAt");
    const end = earliest + this.settings.windowMs;
    if (due === undefined || end < due) this.store.put("flapDueAt", end);
    if (now - this.persistedAt >= PERSIST_MS) this.persist(now);
  }

  private persist(now: number): void {
    const windows = this.held();
    for (const id of this.dirty) {
      const w = windows.get(id);
      if (w) this.store.putEntry("flap", id, w);
      else this.store.deleteEntry("flap", id);
    }
    this.dirty.clear();
    this.persistedAt = now;
  }

  /** When the earliest window ends. */
  dueAt(): number | undefined {
    return this.store.get("flapDueAt");
  }

  /** Ends the windows that are over: a summary event for each VM whose changes were muted in it. */
  async flush(nodeId: string, actor: string, now: number): Promise<void> {
    const summaries: { id: string; n: number; from: string | null }[] = [];
    let next = Infinity;
    const windows = this.held();
    for (const [id, w] of windows) {
      if (now < w.start + this.settings.windowMs) {
        next = Math.min(next, w.start + this.settings.windowMs);
        continue;
      }
      const muted = w.changes - w.written;
      if (muted > 0) {
        summaries.push({ id, n: w.changes, from: w.fromState });
        // Still flapping, as far as we know: the next window starts muted.
        windows.set(id, { vmId: id, start: now, changes: 0, written: this.settings.burstPerVm, fromState: null });
        next = Math.min(next, now + this.settings.windowMs);
      } else windows.delete(id);
      this.dirty.add(id);
    }
    this.persist(now);
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
