// A fake systemd for one service (systemd cannot run as PID 1 on this test machine): reads the
// shipped unit's ExecStartPre, ExecStart, Environment and restart rules and acts on them as systemd
// would for Type=simple: run each ExecStartPre ('-' prefix: its failure is ignored), then ExecStart,
// and start again after an exit that Restart=on-failure or RestartForceExitStatus= restarts, unless
// RestartPreventExitStatus= names it. Paths in the unit are mapped to the test's directories; it
// runs as the test's user (User= is not applied) and waits `restartDelayMs` instead of RestartSec=.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";

export type UnitRun = { code: number | null; signal: NodeJS.Signals | null };

const values = (unit: string, key: string) =>
  [...unit.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].map((m) => m[1].trim());

export class UnitRunner {
  readonly runs: UnitRun[] = [];
  output = "";
  private readonly unit: string;
  private readonly env: Record<string, string>;
  private readonly restartDelayMs: number;
  private child: ChildProcess | null = null;
  private stopped = false;

  /** `paths`: unit path -> test path, applied to the command lines (e.g. /opt/quantix-agent). */
  constructor(
    unitFile: string,
    opts: { paths: Record<string, string>; env: Record<string, string>; restartDelayMs?: number },
  ) {
    let unit = readFileSync(unitFile, "utf8");
    for (const [from, to] of Object.entries(opts.paths)) unit = unit.replaceAll(from, to);
    this.unit = unit;
    const own = Object.fromEntries(values(unit, "Environment").map((kv) => kv.split(/=(.*)/s).slice(0, 2)));
    this.env = { PATH: process.env.PATH ?? "/usr/bin:/bin", ...own, ...opts.env };
    this.restartDelayMs = opts.restartDelayMs ?? 200;
  }

  private argv(line: string): string[] {
    return line.replace(/^[-+@!]+/, "").split(/\s+/);
  }

  private restarts(code: number | null): boolean {
    const list = (key: string) => values(this.unit, key).flatMap((v) => v.split(/\s+/).map(Number));
    if (code !== null && list("RestartPreventExitStatus").includes(code)) return false;
    if (code !== null && list("RestartForceExitStatus").includes(code)) return true;
    return values(this.unit, "Restart")[0] === "on-failure" && code !== 0;
  }

  start() {
    if (this.stopped) return;
    for (const pre of values(this.unit, "ExecStartPre")) {
      const [cmd, ...args] = this.argv(pre);
      const r = spawnSync(cmd, args, { env: this.env, encoding: "utf8", timeout: 30_000 });
      this.output += `[ExecStartPre] ${r.stdout ?? ""}${r.stderr ?? ""}`;
      if (r.status !== 0 && !pre.startsWith("-")) {
        this.runs.push({ code: r.status, signal: null });
        return;
      }
    }
    const [cmd, ...args] = this.argv(values(this.unit, "ExecStart")[0]);
    const child = spawn(cmd, args, { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    child.stdout.on("data", (d) => (this.output += d));
    child.stderr.on("data", (d) => (this.output += d));
    child.once("exit", (code, signal) => {
      this.runs.push({ code, signal });
      this.child = null;
      if (!this.stopped && this.restarts(code)) setTimeout(() => this.start(), this.restartDelayMs);
    });
  }

  /** Stops the service as `systemctl stop` would (SIGTERM, then SIGKILL after 10 s). */
  async stop(): Promise<void> {
    this.stopped = true;
    const child = this.child;
    if (!child) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(kill);
  }
}
