// A log answer on the control plane's side: the agent's result as the REST answer, and the VM's
// last-known log (every successful logs answer is kept, newest 256 KiB, to be shown with its capture
// time while the node is away; the node's session writes it, see session/kept-writes.ts).
import { eq, sql } from "drizzle-orm";
import type { LastKnownLogResponse, LogsResponse } from "../protocol/rest.ts";
import type { LogsResult } from "../protocol/wire.ts";
import type { Database } from "./db/client.ts";
import { vmLogSnapshots } from "./db/schema.ts";
import { newestBytes } from "../protocol/log-excerpt.ts";

/** Text kept per VM: enough for the dashboard's largest usual view, well under D1's 2 MB row limit. */
export const LAST_KNOWN_LOG_BYTES = 256 * 1024;

const countLines = (text: string) => (text === "" ? 0 : text.split("\n").length - (text.endsWith("\n") ? 1 : 0));

/** A logs answer as the route gives it, from the agent's result and text. */
export type LogsAnswer = LogsResponse & { files: string[]; capturedAt: string };

export function logsAnswer(meta: LogsResult, text: string, capturedAt: number): LogsAnswer {
  return {
    qemuLog: text,
    logPath: meta.logPath,
    logSizeBytes: meta.logSizeBytes,
    linesReturned: meta.linesReturned,
    truncated: meta.truncated,
    lastModified: meta.lastModified,
    // An agent from before rotated-file reading does not say which files it read: then it read the one.
    files: meta.files ?? [meta.logPath.slice(meta.logPath.lastIndexOf("/") + 1)],
    // rotated files the agent would not read (compressed, outside the log dir, unreadable)
    ...(meta.skipped?.length ? { skipped: meta.skipped } : {}),
    capturedAt: new Date(capturedAt).toISOString(),
  };
}

export type SnapshotRow = typeof vmLogSnapshots.$inferInsert;

/** A logs answer as the VM's last-known log: its newest LAST_KNOWN_LOG_BYTES, saying what it holds. */
export function snapshotRow(vmId: string, answer: LogsAnswer): SnapshotRow {
  const kept = newestBytes(answer.qemuLog, LAST_KNOWN_LOG_BYTES);
  return {
    vmId,
    capturedAt: Date.parse(answer.capturedAt),
    logPath: answer.logPath,
    logSizeBytes: answer.logSizeBytes,
    // Cut to fit: the snapshot says what it really holds.
    linesReturned: kept.cut ? countLines(kept.text) : answer.linesReturned,
    truncated: answer.truncated || kept.cut,
    lastModified: answer.lastModified,
    files: JSON.stringify(answer.files),
    text: kept.text,
  };
}

/** Replaces the VM's last-known log, unless a newer one is there already. */
export function upsertSnapshot(db: Database, row: SnapshotRow) {
  return db
    .insert(vmLogSnapshots)
    .values(row)
    .onConflictDoUpdate({
      target: vmLogSnapshots.vmId,
      set: row,
      setWhere: sql`${vmLogSnapshots.capturedAt} <= ${row.capturedAt}`,
    });
}

export async function loadSnapshot(db: Database, vmId: string): Promise<LastKnownLogResponse | null> {
  const s = await db.select().from(vmLogSnapshots).where(eq(vmLogSnapshots.vmId, vmId)).get();
  if (!s) return null;
  return {
    qemuLog: s.text,
    logPath: s.logPath,
    logSizeBytes: s.logSizeBytes,
    linesReturned: s.linesReturned,
    truncated: s.truncated,
    lastModified: s.lastModified,
    files: JSON.parse(s.files) as string[],
    capturedAt: new Date(s.capturedAt).toISOString(),
  };
}
