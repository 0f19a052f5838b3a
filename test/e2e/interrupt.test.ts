// Interrupting `npm start` (Ctrl-C: SIGINT to its terminal's process group) or `npm run bench`
// (SIGTERM to its own process) stops everything they started, also what runs in process groups of
// its own that the terminal's signal never reaches: the control plane's wrangler and workerd, the
// demo agent, the bench's floor probe and its agent. Nothing is left and their ports are free again.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { bindable, freePort } from "../support/control-plane.ts";
import { descendants, listeningPorts, stillRunning, type ProcessEntry } from "../support/process-tree.ts";

const ROOT = resolve(import.meta.dirname, "../..");

let run: ChildProcess | null = null;
let seen: ProcessEntry[] = [];
/** Directories and files this file made, removed after each test. */
const dirs: string[] = [];

afterEach(() => {
  // A failed test must not leave its run behind either.
  for (const p of seen.filter(stillRunning)) process.kill(p.pid, "SIGKILL");
  if (run?.pid && run.exitCode === null && run.signalCode === null) process.kill(-run.pid, "SIGKILL");
  run = null;
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  seen = [];
});

/** Starts a command as a terminal starts a job: in a process group of its own. */
function startJob(command: string, args: string[], env: Record<string, string> = {}) {
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  run = child;
  return { child, output: () => output, exited };
}

/** Waits until the run's process tree holds a process of each kind. */
async function waitForTree(root: number, kinds: RegExp[], output: () => string): Promise<ProcessEntry[]> {
  let tree: ProcessEntry[] = [];
  await expect
    .poll(
      () => {
        tree = descendants(root);
        return kinds.filter((k) => !tree.some((p) => k.test(p.command))).map(String);
      },
      { timeout: 240_000, interval: 500, message: `processes not all started; output so far:\n${output()}` },
    )
    .toEqual([]);
  return tree;
}

async function expectAllGone(tree: ProcessEntry[], ports: number[]) {
  await expect
    .poll(() => tree.filter(stillRunning).map((p) => `${p.pid} ${p.command}`), { timeout: 30_000, interval: 200 })
    .toEqual([]);
  for (const port of ports) expect(await bindable(port), `port ${port} free again`).toBe(true);
}

const WRANGLER_DEV = /wrangler\.js dev\b/;
const WORKERD = /workerd/;
const AGENT = /agent\/main\.ts/;

describe("interrupting what starts processes", () => {
  it("Ctrl-C on npm start stops the control plane and the demo agent; nothing left, ports free", async () => {
    let port = await freePort();
    while (!(await bindable(port + 1))) port = await freePort(); // the host view takes the next one
    const dataDir = mkdtempSync(join(tmpdir(), "qx-start-"));
    dirs.push(dataDir);
    // npm start writes .dev.vars when there is none: this checkout is left as it was found.
    const devVars = join(ROOT, ".dev.vars");
    if (!existsSync(devVars)) dirs.push(devVars);
    const job = startJob("npm", ["start", "--", "--port", String(port), "--data-dir", dataDir]);
    await expect
      .poll(() => job.output(), { timeout: 240_000, interval: 500 })
      .toMatch(/\[start\] ready in|\[start\] .*(failed|exited)/);
    expect(job.output()).toContain("[start] ready in");
    expect(job.output()).toMatch(/Demo agent: {3}PID \d+/);

    seen = await waitForTree(job.child.pid!, [WRANGLER_DEV, WORKERD, AGENT], job.output);
    const ports = listeningPorts(seen);
    expect(ports).toEqual(expect.arrayContaining([port, port + 1]));

    process.kill(-job.child.pid!, "SIGINT"); // what a terminal's Ctrl-C does: its foreground group
    await job.exited;
    expect(job.output()).toContain("[start] stopping…");
    await expectAllGone(seen, ports);
  }, 360_000);

  it("SIGTERM to a running bench stops its control plane, floor probe and agent; nothing left, ports free", async () => {
    const job = startJob(process.execPath, [join(ROOT, "bench/run.ts")], { BENCH_ONLY: "rest,floor" });
    // The control plane and the floor probe are up once the rest section's agent has started.
    seen = await waitForTree(job.child.pid!, [WRANGLER_DEV, WORKERD, AGENT], job.output);
    expect(seen.filter((p) => WRANGLER_DEV.test(p.command))).toHaveLength(2);
    const ports = listeningPorts(seen);
    expect(ports.length).toBeGreaterThanOrEqual(2);

    process.kill(job.child.pid!, "SIGTERM"); // the bench's own process only
    await job.exited;
    expect(job.child.signalCode ?? job.child.exitCode).toBe(143);
    await expectAllGone(seen, ports);
  }, 360_000);
});
