// Starts the real control plane (`wrangler dev`: workerd, local D1, Durable Objects) on a free
// loopback port with its own persistence directory, for end-to-end, browser and bench runs.
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { spawnOwned } from "../../scripts/child-processes.ts";
import { migrateLocalD1 } from "../../scripts/local-d1.ts";
import { stopProcessGroup } from "./process-group.ts";

const ROOT = resolve(import.meta.dirname, "../..");
// Run wrangler with this Node (22 from node_modules), not whatever `node` is first on PATH.
const WRANGLER = join(ROOT, "node_modules/wrangler/bin/wrangler.js");

/** Ports below the kernel's ephemeral range, where nothing is handed out by chance. */
const FIRST_PORT = 10_000;
const handedOut = new Set<number>();

function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    if (low && high) return [low, high];
  } catch {
    // not Linux: its usual range
  }
  return [32768, 60999];
}

/** Whether a listener could take this loopback port now. */
export function bindable(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const srv = createServer();
    srv.once("error", () => ok(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => ok(true)));
  });
}

/**
 * A loopback port that is free now, for a child process to listen on. The port is closed again
 * before the child binds it, so it is taken below the kernel's ephemeral range: in that gap no
 * socket another process opens (a connect, a listen on port 0) can be given it by chance, as one
 * in the range can (wrangler and workerd open many while they start). Never the same port twice
 * from this process.
 */
export async function freePort(): Promise<number> {
  const [low] = ephemeralRange();
  if (low - FIRST_PORT < 1_000)
    throw new Error(`the kernel's ephemeral ports start at ${low}: too few below it to choose from`);
  for (let tries = 0; tries < 500; tries++) {
    const port = FIRST_PORT + Math.floor(Math.random() * (low - FIRST_PORT));
    if (handedOut.has(port) || !(await bindable(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free loopback port between ${FIRST_PORT} and ${low}`);
}

export type ControlPlaneOptions = {
  port?: number;
  /** keep data across restart(): pass the same directory */
  persistDir?: string;
  adminToken?: string;
  vars?: Record<string, string>;
  /** wrangler dev's inspector (CDP) port; by default any free one */
  inspectorPort?: number;
  /** false: run without the [[ratelimits]] bindings (benches and fuzzing; the Worker then applies no
   *  limit). Done with a generated copy of wrangler.toml, so the shipped config stays as it is. */
  rateLimits?: boolean;
  /** serve these static assets instead of web/dist (e.g. another agent build to update to); a
   *  generated copy of wrangler.toml points at them */
  assetsDir?: string;
};

/** wrangler.toml, optionally minus its [[ratelimits]] blocks or with another assets directory,
 *  written under .wrangler/ with paths re-rooted. */
function generatedConfig({ rateLimits = true, assetsDir }: { rateLimits?: boolean; assetsDir?: string }): string {
  const src = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  const stripped = src
    .split(/\n(?=\[)/)
    .filter((block) => rateLimits || !block.startsWith("[[ratelimits]]"))
    .join("\n")
    .replace(/^main = "/m, 'main = "../')
    .replace(
      /^directory = "[^"]*"/m,
      assetsDir ? `directory = ${JSON.stringify(assetsDir)}` : 'directory = "../web/dist"',
    )
    .replace(/^migrations_dir = "/m, 'migrations_dir = "../');
  mkdirSync(join(ROOT, ".wrangler"), { recursive: true });
  const name = assetsDir ? `wrangler.assets-${process.pid}-${++configs}.toml` : "wrangler.no-rate-limits.toml";
  const path = join(ROOT, ".wrangler", name);
  writeFileSync(path, stripped);
  return path;
}
let configs = 0;

export class ControlPlane {
  readonly port: number;
  readonly persistDir: string;
  readonly adminToken: string;
  readonly url: string;
  private child: ChildProcess | null = null;
  private output = "";
  private readonly ownsDir: boolean;
  private vars: Record<string, string>;
  private readonly configArgs: string[];
  readonly inspectorPort: number;

  private constructor(
    opts: Required<Omit<ControlPlaneOptions, "persistDir" | "vars" | "rateLimits" | "assetsDir" | "inspectorPort">> & {
      inspectorPort?: number;
      persistDir?: string;
      vars?: Record<string, string>;
      rateLimits?: boolean;
      assetsDir?: string;
    },
  ) {
    this.port = opts.port;
    this.ownsDir = !opts.persistDir;
    this.persistDir = opts.persistDir ?? mkdtempSync(join(tmpdir(), "qx-cp-"));
    this.adminToken = opts.adminToken;
    this.url = `http://127.0.0.1:${this.port}`;
    this.vars = opts.vars ?? {};
    this.inspectorPort = opts.inspectorPort ?? 0;
    this.configArgs =
      opts.rateLimits === false || opts.assetsDir
        ? ["--config", generatedConfig({ rateLimits: opts.rateLimits !== false, assetsDir: opts.assetsDir })]
        : [];
  }

  static async start(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
    const cp = new ControlPlane({
      port: opts.port ?? (await freePort()),
      adminToken: opts.adminToken ?? `test-admin-${Math.random().toString(36).slice(2)}`,
      persistDir: opts.persistDir,
      vars: opts.vars,
      rateLimits: opts.rateLimits,
      assetsDir: opts.assetsDir,
      inspectorPort: opts.inspectorPort,
    });
    await cp.migrate();
    await cp.boot();
    return cp;
  }

  private async migrate(): Promise<void> {
    await migrateLocalD1(this.persistDir, {
      ...process.env,
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
    });
  }

  private emptyEnvFile(): string {
    const file = join(this.persistDir, "empty.env");
    if (!existsSync(file)) writeFileSync(file, "");
    return file;
  }

  /** (Re)starts wrangler dev on the same port and data directory and waits for /api/health. */
  async boot(): Promise<void> {
    const vars = Object.entries({ ADMIN_TOKEN: this.adminToken, ...this.vars }).flatMap(([k, v]) => [
      "--var",
      `${k}:${v}`,
    ]);
    this.output = "";
    const child = spawnOwned(
      process.execPath,
      [
        WRANGLER,
        "dev",
        "--ip",
        "127.0.0.1",
        "--port",
        String(this.port),
        "--inspector-port",
        String(this.inspectorPort),
        "--persist-to",
        this.persistDir,
        "--show-interactive-dev-session=false",
        "--log-level",
        "warn",
        // An env file of its own, so the checkout's .dev.vars (which `npm start` writes, perhaps while
        // this suite runs) never reaches a test's control plane: its vars are exactly the ones given.
        "--env-file",
        this.emptyEnvFile(),
        ...this.configArgs,
        ...vars,
      ],
      {
        cwd: ROOT,
        env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    this.child = child;
    child.stdout!.on("data", (d) => (this.output += d));
    child.stderr!.on("data", (d) => (this.output += d));
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`wrangler dev exited ${child.exitCode}:\n${this.output}`);
      try {
        const res = await fetch(`${this.url}/api/health`);
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`control plane did not become healthy in 60 s:\n${this.output}`);
  }

  /** Stops workerd (the whole process group) and waits for it to exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child) await stopProcessGroup(child, signal);
  }

  /** Stops and boots again on the same data; `vars` changes some of its vars from now on. */
  async restart(vars: Record<string, string> = {}): Promise<void> {
    await this.stop();
    this.vars = { ...this.vars, ...vars };
    await this.boot();
  }

  async dispose(): Promise<void> {
    await this.stop();
    if (this.ownsDir) rmSync(this.persistDir, { recursive: true, force: true });
  }

  /** wrangler's pid, also its process group's id (workerd runs in that group). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  get logs(): string {
    return this.output;
  }

  /** fetch against the API with the admin token (or another one) and JSON in/out. */
  async api(path: string, init: RequestInit & { token?: string; json?: unknown } = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${init.token ?? this.adminToken}`);
    let body = init.body;
    if (init.json !== undefined) {
      headers.set("content-type", "application/json");
      body = JSON.stringify(init.json);
    }
    return fetch(`${this.url}${path}`, { ...init, headers, body });
  }
}
