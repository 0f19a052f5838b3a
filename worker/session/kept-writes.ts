// Writes the session keeps for D1 and makes together on the next alarm, at most KEPT_DELAY_MS later:
// each VM's newest last-known log (a dashboard refreshing a 1,000-line log wrote it on every read),
// the rows of finished log reads, and of state queries whose caller no longer waits (a waiting
// caller takes its row and writes it itself).
import type { Database } from "../db/client.ts";
import { runBatch, type Statement } from "../db/batch.ts";
import { upsertSnapshot, type SnapshotRow } from "../last-known-log.ts";
import { insertFinishedRows, type RequestRow } from "../request-rows.ts";
import type { SessionStore } from "./store.ts";

const KEPT_DELAY_MS = 1_000;
const ROWS_AT_ONCE = 100;
/** Snapshots are large (≤ 256 KiB each): a few per batch. */
const SNAPSHOTS_AT_ONCE = 8;

export class KeptWrites {
  private readonly store: SessionStore;
  private readonly db: Database;
  private readonly armAlarm: () => Promise<void>;

  constructor(store: SessionStore, db: Database, armAlarm: () => Promise<void>) {
    this.store = store;
    this.db = db;
    this.armAlarm = armAlarm;
  }

  /** When the kept writes are due, if any are kept. */
  dueAt(): number | undefined {
    return this.store.get("keptAt");
  }

  /** A finished query's row that no caller took: kept as its caller is answered, and the answer does
   *  not wait for it. */
  keepRow(requestId: string, row: RequestRow): Promise<void> {
    this.store.putEntryUnconfirmed("queryRow", requestId, row);
    return this.scheduled();
  }

  /** The VM's newest last-known log; written with the next batch. */
  keepSnapshot(vmId: string, row: SnapshotRow): Promise<void> {
    this.store.putEntryUnconfirmed("snapshot", vmId, row);
    return this.scheduled();
  }

  /** Keeps the batch due KEPT_DELAY_MS from the first write kept. */
  private async scheduled(): Promise<void> {
    if (this.store.get("keptAt") === undefined) {
      this.store.put("keptAt", Date.now() + KEPT_DELAY_MS);
      await this.armAlarm();
    }
  }

  /** Writes the kept rows and last-known logs in one D1 batch; on failure they stay for a later alarm. */
  async write(): Promise<void> {
    const rows = this.store.entries("queryRow", ROWS_AT_ONCE);
    const snapshots = this.store.entries("snapshot", SNAPSHOTS_AT_ONCE);
    if (rows.length === 0 && snapshots.length === 0) {
      this.store.delete("keptAt");
      return;
    }
    try {
      const statements: Statement[] = [
        ...insertFinishedRows(rows.map(([, row]) => row)),
        ...snapshots.map(([, row]) => upsertSnapshot(this.db, row)),
      ];
      await runBatch(this.db, statements);
      for (const [id] of rows) this.store.deleteEntry("queryRow", id);
      for (const [id] of snapshots) this.store.deleteEntry("snapshot", id);
      const more = this.store.entries("queryRow", 1).length + this.store.entries("snapshot", 1).length > 0;
      if (more) this.store.put("keptAt", Date.now());
      else this.store.delete("keptAt");
    } catch (err) {
      console.error("node session: could not write kept request rows / last-known logs; retrying", err);
      this.store.put("keptAt", Date.now() + 5 * KEPT_DELAY_MS);
    }
  }
}
