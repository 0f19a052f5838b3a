// What the N-API binding cannot give, through libvirt's own client `virsh` (libvirt-clients, installed
// with the daemon): domain lifecycle events from one long-lived `virsh event --loop` child, and bulk
// statistics (virConnectGetAllDomainStats: CPU, balloon, block, network) from `virsh domstats --raw`.
// virsh prints domain names, never UUIDs: a name is mapped to its UUID through libvirt's own list.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import type { Logger } from "./logger.ts";

/** One domain's raw statistics as virsh printed them (`cpu.time`, `block.0.rd.bytes`, ...). */
export type DomainStats = Map<string, string>;

/** Parses `virsh domstats --raw`: blocks of `Domain: 'NAME'` followed by indented `key=value` lines.
 *  The name is everything between the first `'` and the line's last `'` (names may hold quotes). */
export function parseDomstats(text: string): Map<string, DomainStats> {
  const out = new Map<string, DomainStats>();
  let current: DomainStats | null = null;
  for (const line of text.split("\n")) {
    if (line.startsWith("Domain: '") && line.endsWith("'") && line.length > 10) {
      current = new Map();
      out.set(line.slice("Domain: '".length, -1), current);
      continue;
    }
    const m = /^\s+([A-Za-z0-9_.]+)=(.*)$/.exec(line);
    if (m && current) current.set(m[1], m[2]);
  }
  return out;
}

/** The domain name of a `virsh event` line, when it is a lifecycle event:
 *  `2026-11-30 09:27:46.273+0000: event 'lifecycle' for domain 'NAME': Stopped Destroyed`. */
export function lifecycleEventDomain(line: string): string | null {
  const marker = "event 'lifecycle' for domain '";
  const at = line.indexOf(marker);
  if (at < 0) return null;
  const rest = line.slice(at + marker.length);
  const end = rest.lastIndexOf("': ");
  return end >= 0 ? rest.slice(0, end) : null;
}

/** Whether a URI is served by a daemon another client can also reach: `test:///` opens the test
 *  driver inside the process (each connection its own copy), so a second connection sees nothing. */
export const eventsReachable = (uri: string) => !/^test:\/\/\//.test(uri);

/** Bulk statistics of the active domains; null when virsh is missing or the call failed. */
export function domstats(uri: string, timeoutMs = 5_000): Promise<Map<string, DomainStats> | null> {
  return new Promise((resolve) => {
    execFile(
      "virsh",
      [
        "-q",
        "-c",
        uri,
        "domstats",
        "--raw",
        "--list-active",
        "--nowait",
        "--cpu-total",
        "--balloon",
        "--block",
        "--interface",
      ],
      { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: "C" } },
      (err, stdout) => resolve(err ? null : parseDomstats(stdout)),
    );
  });
}

export type LifecycleEventsOptions = {
  uri: string;
  log: Logger;
  /** a domain started, stopped, paused, ... (its name as virsh printed it) */
  onLifecycle: (name: string) => void;
  /** the stream (re)started: events may have been missed meanwhile */
  onStart?: () => void;
  restartMinMs?: number;
  restartMaxMs?: number;
};

/** `virsh event --all --loop` kept running: restarted with backoff when it ends (libvirtd restarted,
 *  connection lost); stopped for good when virsh is not installed. */
export class LifecycleEvents {
  private readonly opts: Required<LifecycleEventsOptions>;
  private child: ChildProcess | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private stopped = false;
  /** true once the stream has printed its first line or stayed up a while */
  private live = false;

  constructor(opts: LifecycleEventsOptions) {
    this.opts = { onStart: () => {}, restartMinMs: 1_000, restartMaxMs: 30_000, ...opts };
  }

  /** Whether events are flowing now (the poll is then only a safety net). */
  get running(): boolean {
    return this.child !== null && this.live;
  }

  start(): void {
    if (this.stopped || this.child) return;
    const child = spawn("virsh", ["-c", this.opts.uri, "event", "--all", "--loop", "--timestamp"], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LC_ALL: "C" },
    });
    this.child = child;
    const startedAt = Date.now();
    // virsh opens the connection before it waits: still running after a moment means it is listening.
    const settled = setTimeout(() => {
      if (this.child !== child) return;
      this.live = true;
      this.opts.log.info({ uri: this.opts.uri }, "libvirt lifecycle events: listening (virsh event)");
      this.opts.onStart();
    }, 500);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const name = lifecycleEventDomain(line);
      if (name !== null) this.opts.onLifecycle(name);
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-500)));
    child.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(settled);
      if (err.code === "ENOENT") {
        this.opts.log.warn("virsh not found (package libvirt-clients): no lifecycle events, polling only");
        this.stopped = true;
      }
      this.ended(child, err.message);
    });
    child.on("exit", (code) => {
      clearTimeout(settled);
      this.ended(child, stderr.trim() || `exit ${code}`, Date.now() - startedAt);
    });
  }

  private ended(child: ChildProcess, why: string, ranMs = 0) {
    if (this.child !== child) return;
    this.child = null;
    this.live = false;
    if (this.stopped) return;
    this.failures = ranMs > 30_000 ? 0 : this.failures + 1;
    const delay = Math.min(this.opts.restartMaxMs, this.opts.restartMinMs * 2 ** Math.min(this.failures, 10));
    this.opts.log.warn(
      { why: why.slice(0, 200), retryInMs: delay },
      "libvirt lifecycle events stopped; polling meanwhile",
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.start();
    }, delay);
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    this.child = null;
    this.live = false;
    child?.kill("SIGTERM");
  }
}
