// The soak bench's window into a running agent: its memory and the size of every in-memory
// collection, answered over the IPC channel of a parent that started it with QX_DEBUG_COUNTS=1.
// A host's agent has no IPC channel (systemd starts it), so this never exists in production.
import { memoryUsage } from "node:process";

export const DEBUG_COUNTS_REQUEST = "qx:debug-counts";

export type AgentDebugCounts = {
  type: typeof DEBUG_COUNTS_REQUEST;
  rssBytes: number;
  /** V8 heap in use, after a full collection when the agent runs with --expose-gc */
  heapUsedBytes: number;
  counts: Record<string, number>;
};

/** Answers `DEBUG_COUNTS_REQUEST` messages on the IPC channel; false (and nothing listens) unless
 *  QX_DEBUG_COUNTS=1 and the parent opened a channel. */
export function serveDebugCounts(counts: () => Record<string, number>, env = process.env): boolean {
  const send = process.send?.bind(process);
  if (env.QX_DEBUG_COUNTS !== "1" || !send) return false;
  process.on("message", (msg) => {
    if (msg !== DEBUG_COUNTS_REQUEST) return;
    (globalThis as { gc?: () => void }).gc?.();
    const mem = memoryUsage();
    const answer: AgentDebugCounts = {
      type: DEBUG_COUNTS_REQUEST,
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      counts: counts(),
    };
    send(answer);
  });
  process.channel?.unref(); // the channel alone must not keep a stopping agent alive
  return true;
}
