// The VM's last-known log (issue 7): every successful logs answer is kept (newest 256 KiB) to be
// shown, with its capture time, while the node is away; and the short log excerpt a reset event
// keeps, fetched after the reset has answered or taken from that snapshot.
import { eq } from "drizzle-orm";
import type { LastKnownLogResponse, LogsResponse } from "../protocol/api.ts";
import type { Database } from "./db/client.ts";
import { database } from "./db/client.ts";
import { nodes, vmEvents, vmLogSnapshots } from "./db/schema.ts";
import { sessionSettings } from "./config.ts";
import { readVmLog } from "./session-calls.ts";
import type { VmRow } from "./vm-state.ts";
import { nodeView } from "./views.ts";

/** Text kept per VM: enough for the dashboard's largest usual view, well under D1's 2 MB row limit. */
export const LAST_KNOWN_LOG_BYTES = 256 * 1024;
/** A reset event's excerpt: the last lines of the log, at most this many bytes. */
export const EXCERPT_LINES = 20;
export const EXCERPT_BYTES = 4 * 1024;

const countLines = (text: string) => (text === "" ? 0 : text.split("\n").length - (text.endsWith("\n") ? 1 : 0));

/** The newest part of `text` within `maxBytes` of UTF-8, starting at a line when it can. */
export function newestBytes(text: string, maxBytes: number): { text: string; cut: boolean } {
  const bytes = new TextEncoder().encode(text);
  if (bytes.byteLength <= maxBytes) return { text, cut: false };
  let start = bytes.byteLength - maxBytes;
  const newline = bytes.indexOf(0x0a, start - 1);
  if (newline >= 0 && newline < bytes.byteLength - 1) start = newline + 1;
  else while (start < bytes.byteLength && (bytes[start]! & 0xc0) === 0x80) start++; // one huge line: whole characters only
  return { text: new TextDecoder().decode(bytes.subarray(start)), cut: true };
}

/** The last `lines` lines of `text`, within `maxBytes`. */
export function lastLines(text: string, lines = EXCERPT_LINES, maxBytes = EXCERPT_BYTES): string {
  const body = text.endsWith("\n") ? text.slice(0, -1) : text;
  const tail = body.split("\n").slice(-lines).join("\n");
  return newestBytes(tail, maxBytes).text;
}

/** Keeps a successful logs answer as the VM's last-known log (replacing the previous one). */
export async function saveSnapshot(db: Database, vmId: string, answer: LogsResponse & { capturedAt: string; files: string[] }): Promise<void> {
  const kept = newestBytes(answer.qemuLog, LAST_KNOWN_LOG_BYTES);
  const row = {
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
  await db.insert(vmLogSnapshots).values(row).onConflictDoUpdate({ target: vmLogSnapshots.vmId, set: row });
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

/** Runs after a reset has answered (ctx.waitUntil): reads the VM's last lines from its node when it
 *  is online, else from the last-known log, and stores them on the reset's event. Never throws.
 *  `nodeAnswered`: the node's agent answered this reset just now, so D1 need not be asked whether
 *  it is online (the read still falls back to the snapshot if the node has gone meanwhile). */
export async function attachLogExcerpt(env: Env, vm: VmRow, eventId: number, actor: string, nodeAnswered = false): Promise<void> {
  try {
    const db = database(env.DB);
    let excerpt: string | null = null;
    if (vm.nodeId) {
      const node = nodeAnswered ? null : await db.select().from(nodes).where(eq(nodes.id, vm.nodeId)).get();
      if (nodeAnswered || (node && nodeView(node, 0, sessionSettings(env).offlineAfterMs).connected)) {
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
