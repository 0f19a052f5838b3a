// The VM's last-known log (issue 7): every successful logs answer is kept (newest 256 KiB) to be
// shown, with its capture time, while the node is away (the node's session writes it, see
// NodeSession.keepForD1); and the short log excerpt a reset event
// keeps when the reset's own answer did not bring it: read after answering, or taken from that snapshot.
import { eq, sql } from "drizzle-orm";
import type { LastKnownLogResponse, LogsResponse } from "../protocol/api.ts";
import type { LogsResult } from "../protocol/wire.ts";
import type { Database } from "./db/client.ts";
import { database } from "./db/client.ts";
import { nodes, vmEvents, vmLogSnapshots } from "./db/schema.ts";
import { sessionSettings } from "./config.ts";
import { readVmLog } from "./session-calls.ts";
import type { VmRow } from "./vm-state.ts";
import { EXCERPT_LINES, lastLines, newestBytes } from "../protocol/log-excerpt.ts";
import { nodeView } from "./views.ts";

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
    // An agent from before issue 7 does not say which files it read: then it read the one.
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
    .onConflictDoUpdate({ target: vmLogSnapshots.vmId, set: row, setWhere: sql`${vmLogSnapshots.capturedAt} <= ${row.capturedAt}` });
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

/** Runs after a reset has answered (ctx.waitUntil) when its answer did not carry the excerpt: reads
 *  the VM's last lines from its node, or takes them from the last-known log, and stores them on the
 *  reset's event. Never throws. `from`:
 *  - "node": ask the node if D1 says it is online (a forced reset), else the last-known log;
 *  - "answered-node": its agent answered this reset just now but said nothing of the log (an agent
 *    from before the excerpt rode on vm.state): ask it without asking D1 first;
 *  - "snapshot": the node has no log to read now; the last-known log is what there is. */
export async function attachLogExcerpt(env: Env, vm: VmRow, eventId: number, actor: string, from: "node" | "answered-node" | "snapshot"): Promise<void> {
  try {
    const db = database(env.DB);
    let excerpt: string | null = null;
    if (vm.nodeId && from !== "snapshot") {
      const node = from === "answered-node" ? null : await db.select().from(nodes).where(eq(nodes.id, vm.nodeId)).get();
      if (from === "answered-node" || (node && nodeView(node, 0, sessionSettings(env).nodeStaleAfterMs).connected)) {
        const outcome = await readVmLog(env, { ...vm, nodeId: vm.nodeId }, EXCERPT_LINES, actor);
        if (outcome.status === "done") excerpt = lastLines(outcome.text ?? "");
      }
    }
    if (excerpt === null) {
      const snapshot = await loadSnapshot(db, vm.id);
      if (snapshot) excerpt = lastLines(snapshot.qemuLog);
    }
    if (excerpt !== null) await db.update(vmEvents).set({ logExcerpt: excerpt }).where(eq(vmEvents.id, eventId));
  } catch (err) {
    console.error("could not attach a log excerpt to reset event", eventId, err);
  }
}
