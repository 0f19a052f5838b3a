// Stopping a child started in its own process group (wrangler dev and its workerd): the signal goes
// to the whole group, and a group still there after 5 s is killed.
import type { ChildProcess } from "node:child_process";
import { stopOwned } from "../../scripts/child-processes.ts";

export function stopProcessGroup(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  return stopOwned(child, signal, 5_000);
}
