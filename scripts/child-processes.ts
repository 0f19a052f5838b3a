// The child processes this process starts, stopped on every way out: SIGINT, SIGTERM or SIGHUP, an
// error, the normal end. Each runs in a process group of its own, stopped as a whole (wrangler's
// workerd goes with wrangler). A group is outside the terminal's, so Ctrl-C does not reach it: only
// this module does, which is why a signal here is caught rather than left to kill us at once.
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";

/** How long a child has after SIGTERM before its group is killed. */
export const STOP_GRACE_MS = 8_000;
const EXIT_CODE = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;

const running: ChildProcess[] = [];
/** Process groups started here that may still hold a process (a leader can exit before its group). */
const groups = new Set<number>();
const beforeStop: ((signal: NodeJS.Signals | null) => void)[] = [];
/** What must be undone once the children are stopped (e.g. a guest defined in libvirt). */
const afterStop: (() => Promise<void>)[] = [];
/** How long the undoing may take before we exit anyway. */
const AFTER_STOP_MS = 15_000;
let installed = false;
let stoppingAll: Promise<void> | null = null;
/** The signal that is stopping us: a child started after it is killed at once. */
let caught: NodeJS.Signals | null = null;

const alive = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

/** Signal 0 only asks whether the group still has a process. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false; // the group is gone
  }
}

/** Starts a child in a process group of its own, stopped with this process whichever way it ends. */
export function spawnOwned(command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(command, args, { ...options, detached: true });
  if (child.pid === undefined) return child; // failed to start: its 'error' event says why
  const pgid = child.pid;
  running.push(child);
  groups.add(pgid);
  child.once("exit", () => {
    running.splice(running.indexOf(child), 1);
    if (!signalGroup(pgid, 0)) groups.delete(pgid); // nothing left of it: forget it before its pid is reused
  });
  installHandlers();
  if (caught) signalGroup(pgid, "SIGKILL");
  return child;
}

/** Runs a command to its end as an owned child: its output, or an error carrying it. */
export function runOwned(
  command: string,
  args: string[],
  options: SpawnOptions = {},
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((ok, fail) => {
    const child = spawnOwned(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    child.once("error", fail);
    child.once("close", (code, signal) => {
      if (code === 0) return ok({ stdout, stderr });
      fail(Object.assign(new Error(`${command} ${args.join(" ")} exited ${signal ?? code}`), { code, stdout, stderr }));
    });
  });
}

/** SIGTERM to the child's group (after a SIGCONT, in case it was frozen), SIGKILL after `graceMs`;
 *  resolves once the child has exited and nothing of its group is left. */
export async function stopOwned(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM", graceMs = STOP_GRACE_MS) {
  const pgid = child.pid;
  if (pgid === undefined) return;
  if (alive(child)) {
    const exited = new Promise((r) => child.once("exit", r));
    signalGroup(pgid, "SIGCONT");
    if (!signalGroup(pgid, signal)) child.kill(signal);
    const timer = setTimeout(() => signalGroup(pgid, "SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }
  // Whatever the leader left behind in its group goes too.
  if (signalGroup(pgid, "SIGKILL")) await groupGone(pgid);
  groups.delete(pgid);
}

async function groupGone(pgid: number): Promise<void> {
  for (let i = 0; i < 100 && signalGroup(pgid, 0); i++) await new Promise((r) => setTimeout(r, 20));
}

/** Stops every owned child, the newest first (an agent before the control plane it talks to), then
 *  runs what was registered with `afterChildrenStop`, the newest first, within AFTER_STOP_MS. */
export function stopAllOwned(): Promise<void> {
  stoppingAll ??= (async () => {
    for (const child of [...running].reverse()) await stopOwned(child);
    for (const pgid of groups) signalGroup(pgid, "SIGKILL");
    const undo = (async () => {
      for (const fn of afterStop.splice(0).reverse())
        await fn().catch((err: unknown) => console.error(`[stop] ${err instanceof Error ? err.message : String(err)}`));
    })();
    await Promise.race([undo, new Promise((r) => setTimeout(r, AFTER_STOP_MS).unref())]);
  })().finally(() => (stoppingAll = null));
  return stoppingAll;
}

/** Something to undo once the children have stopped, on every way out but SIGKILL. */
export function afterChildrenStop(fn: () => Promise<void>): void {
  afterStop.push(fn);
  installHandlers();
}

/** Called once when a signal (or null: an error) starts the stop, e.g. to say "stopping…". */
export function onStop(fn: (signal: NodeJS.Signals | null) => void): void {
  beforeStop.push(fn);
}

/** Stops everything and exits with `code` (the error path of a script). */
export async function exitAfterStopping(code: number): Promise<never> {
  if (running.some(alive)) for (const fn of beforeStop) fn(null);
  await stopAllOwned();
  process.exit(code);
}

function installHandlers(): void {
  if (installed) return;
  installed = true;
  // Last resort (an uncaught error, process.exit anywhere): nothing may outlive us.
  process.on("exit", () => {
    for (const pgid of groups) if (signalGroup(pgid, "SIGCONT")) signalGroup(pgid, "SIGKILL");
  });
  for (const signal of Object.keys(EXIT_CODE) as (keyof typeof EXIT_CODE)[]) {
    process.on(signal, () => {
      // A terminal's Ctrl-C can reach us more than once (directly and through npm): one stop.
      if (caught) return;
      caught = signal;
      if (running.some(alive)) for (const fn of beforeStop) fn(signal);
      void stopAllOwned().finally(() => process.exit(EXIT_CODE[signal]));
    });
  }
}
