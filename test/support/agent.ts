// Spawns the real agent (`node agent/main.ts`) as its own process, for end-to-end tests and benches:
// freeze/thaw it with SIGSTOP/SIGCONT, restart it on the same state directory, wait for its exit.
import type { ChildProcess } from "node:child_process";
import { DEBUG_COUNTS_REQUEST, type AgentDebugCounts } from "../../agent/debug-counts.ts";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { spawnOwned, stopOwned } from "../../scripts/child-processes.ts";

const ROOT = resolve(import.meta.dirname, "../..");
export const AGENT_MAIN = join(ROOT, "agent/main.ts");
/** The shipped demo host (8 domains, see the file) and its QEMU logs. */
export const DEMO_NODE_XML = join(ROOT, "agent/demo/node.xml");
export const DEMO_LOG_DIR = join(ROOT, "agent/demo/logs");
export const demoLibvirtUri = (xml = DEMO_NODE_XML) => `test://${xml}`;

export type AgentOptions = {
  server: string;
  /** join token: first run only */
  token?: string;
  /** default: a fresh temporary directory, removed by dispose() */
  stateDir?: string;
  libvirtUri?: string;
  logDir?: string;
  listen?: string;
  /** extra command-line arguments (the agent's own knobs) */
  args?: string[];
  env?: Record<string, string>;
  /** V8/Node flags before the entry (e.g. --expose-gc) */
  nodeFlags?: string[];
  /** open an IPC channel, with QX_DEBUG_COUNTS=1: debugCounts() then asks the agent for its figures */
  debugCounts?: boolean;
};

export type Exit = { code: number | null; signal: NodeJS.Signals | null };

export class AgentProcess {
  readonly stateDir: string;
  private readonly ownsStateDir: boolean;
  private readonly opts: AgentOptions;
  private child: ChildProcess | null = null;
  private exitPromise: Promise<Exit> | null = null;
  private out = "";

  private constructor(opts: AgentOptions) {
    this.opts = opts;
    this.ownsStateDir = !opts.stateDir;
    this.stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), "qx-agent-"));
  }

  /** Starts an agent; `token` is passed on this first start only (restarts use the kept credential). */
  static start(opts: AgentOptions): AgentProcess {
    const agent = new AgentProcess(opts);
    agent.spawn(opts.token);
    return agent;
  }

  private spawn(token: string | undefined) {
    const o = this.opts;
    const args = [
      ...(o.nodeFlags ?? []),
      AGENT_MAIN,
      "--server",
      o.server,
      "--state-dir",
      this.stateDir,
      "--libvirt-uri",
      o.libvirtUri ?? demoLibvirtUri(),
      "--log-dir",
      o.logDir ?? DEMO_LOG_DIR,
      ...(token ? ["--token", token] : []),
      ...(o.listen ? ["--listen", o.listen] : []),
      ...(o.args ?? []),
    ];
    this.out = "";
    const child = spawnOwned(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, ...o.env, ...(o.debugCounts ? { QX_DEBUG_COUNTS: "1" } : {}) },
      stdio: ["ignore", "pipe", "pipe", ...(o.debugCounts ? (["ipc"] as const) : [])],
    });
    child.stdout!.on("data", (d) => (this.out += d));
    child.stderr!.on("data", (d) => (this.out += d));
    this.exitPromise = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
    this.child = child;
  }

  get pid(): number {
    return this.child!.pid!;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Everything the agent wrote to stdout and stderr since its last (re)start. */
  get output(): string {
    return this.out;
  }

  /** Resolves with the exit status, or rejects after `timeoutMs` (the agent is left running). */
  async waitForExit(timeoutMs = 15_000): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, fail) => {
      timer = setTimeout(() => fail(new Error(`agent still running after ${timeoutMs} ms:\n${this.out}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exitPromise!, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The agent's memory and in-memory collection sizes, over the IPC channel (needs `debugCounts`). */
  debugCounts(timeoutMs = 10_000): Promise<AgentDebugCounts> {
    const child = this.child;
    if (!child?.send) return Promise.reject(new Error("the agent was started without debugCounts"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.off("message", onMessage);
        reject(new Error(`the agent did not answer its debug counts in ${timeoutMs} ms`));
      }, timeoutMs);
      const onMessage = (msg: unknown) => {
        if ((msg as { type?: string } | null)?.type !== DEBUG_COUNTS_REQUEST) return;
        clearTimeout(timer);
        child.off("message", onMessage);
        resolve(msg as AgentDebugCounts);
      };
      child.on("message", onMessage);
      child.send(DEBUG_COUNTS_REQUEST);
    });
  }

  /** Freezes the process: its socket stays open but nothing is read or answered. */
  freeze(): void {
    process.kill(this.pid, "SIGSTOP");
  }

  thaw(): void {
    process.kill(this.pid, "SIGCONT");
  }

  /** SIGTERM (after a thaw, in case it was frozen); SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 8_000): Promise<Exit | null> {
    if (!this.child || !this.running) return this.exitPromise ? await this.exitPromise : null;
    this.thaw();
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child?.kill("SIGKILL"), graceMs);
    const exit = await this.exitPromise!;
    clearTimeout(timer);
    return exit;
  }

  /** Stops and starts again on the same state directory (the kept credential, no join token). */
  async restart(): Promise<void> {
    await this.stop();
    this.spawn(undefined);
  }

  async dispose(): Promise<void> {
    if (this.child && this.running) {
      this.thaw();
      this.child.kill("SIGKILL");
      await this.exitPromise;
    }
    if (this.child) await stopOwned(this.child); // anything the agent started (a virsh) goes too
    if (this.ownsStateDir) rmSync(this.stateDir, { recursive: true, force: true });
  }
}

export type TestDomain = {
  name: string;
  uuid: string;
  runstate: "running" | "paused" | "shutoff" | "crashed";
  vcpus?: number;
  memoryMiB?: number;
};
const RUNSTATE = { running: 1, paused: 3, shutoff: 5, crashed: 6 } as const;

/** Writes a libvirt test-driver host with these domains to `<dir>/node.xml`; returns its test:/// URI. */
export function writeNodeXml(dir: string, domains: TestDomain[]): string {
  const body = domains
    .map(
      (d) => `  <domain type="test">
    <name>${d.name}</name>
    <uuid>${d.uuid}</uuid>
    <memory unit="MiB">${d.memoryMiB ?? 1024}</memory>
    <vcpu>${d.vcpus ?? 1}</vcpu>
    <os><type arch="x86_64">hvm</type></os>
    <test:runstate>${RUNSTATE[d.runstate]}</test:runstate>
  </domain>`,
    )
    .join("\n");
  const path = join(dir, "node.xml");
  writeFileSync(path, `<node xmlns:test="http://libvirt.org/schemas/domain/test/1.0">\n${body}\n</node>\n`);
  return demoLibvirtUri(path);
}
