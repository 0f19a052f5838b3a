// Starts the floor probe (bench/floor/worker.ts) the way the product is started for the bench:
// `wrangler dev` from this repo's wrangler, a free loopback port, its own --persist-to directory,
// local D1 migrated, then 10,000 rows seeded through the Worker; and starts the Node `ws` client
// (bench/floor/echo-client.ts, its own process) that answers the probe's Durable Object, as an
// agent answers its node's session.
import { stopProcessGroup } from "../../test/support/process-group.ts";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { runOwned, spawnOwned } from "../../scripts/child-processes.ts";
import { freePort } from "../../test/support/control-plane.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const WRANGLER = join(ROOT, "node_modules/wrangler/bin/wrangler.js");
const CONFIG = join(import.meta.dirname, "wrangler.toml");
// No fetch of the real Request.cf from the network: the placeholder will do, and the bench stays on loopback.
const WRANGLER_ENV = {
  ...process.env,
  CI: "true",
  WRANGLER_SEND_METRICS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};

export const FLOOR_ITEMS = 10_000;
const SEED_PER_REQUEST = 1_000;
/** Seed row read by the D1 point-read route (the same id format as bench/floor/worker.ts's itemId). */
export const FLOOR_READ_ID = `00000000-0000-4000-8000-${String(FLOOR_ITEMS / 2).padStart(12, "0")}`;

export class FloorProbe {
  readonly url: string;
  readonly port: number;
  private readonly persistDir: string;
  private child: ChildProcess | null = null;
  private echoClient: ChildProcess | null = null;
  private output = "";

  readonly inspectorPort: number;

  private constructor(port: number, persistDir: string, inspectorPort: number) {
    this.inspectorPort = inspectorPort;
    this.port = port;
    this.persistDir = persistDir;
    this.url = `http://127.0.0.1:${port}`;
  }

  /** `inspectorPort`: wrangler dev's inspector (CDP) port; by default any free one. */
  static async start(inspectorPort = 0): Promise<FloorProbe> {
    const probe = new FloorProbe(await freePort(), mkdtempSync(join(tmpdir(), "qx-floor-")), inspectorPort);
    try {
      await runOwned(
        process.execPath,
        [WRANGLER, "d1", "migrations", "apply", "DB", "--local", "--persist-to", probe.persistDir, "--config", CONFIG],
        { cwd: ROOT, env: WRANGLER_ENV },
      );
      await probe.boot();
      for (let from = 0; from < FLOOR_ITEMS; from += SEED_PER_REQUEST) {
        const res = await fetch(`${probe.url}/seed?from=${from}&count=${SEED_PER_REQUEST}`, { method: "POST" });
        if (!res.ok) throw new Error(`floor seed: ${res.status} ${await res.text()}`);
      }
      await probe.connectEchoClient();
      return probe;
    } catch (err) {
      await probe.dispose();
      throw err;
    }
  }

  private async boot(): Promise<void> {
    const child = spawnOwned(
      process.execPath,
      [
        WRANGLER,
        "dev",
        "--config",
        CONFIG,
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
      ],
      { cwd: ROOT, env: WRANGLER_ENV, stdio: ["ignore", "pipe", "pipe"] },
    );
    this.child = child;
    child.stdout!.on("data", (d) => (this.output += d));
    child.stderr!.on("data", (d) => (this.output += d));
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null)
        throw new Error(`floor probe: wrangler dev exited ${child.exitCode}:\n${this.output}`);
      try {
        if ((await fetch(`${this.url}/trivial`)).ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`floor probe did not answer in 60 s:\n${this.output}`);
  }

  /** Starts the echoing client and waits until one echo has come back through it. */
  private async connectEchoClient(): Promise<void> {
    const client = spawnOwned(
      process.execPath,
      [join(import.meta.dirname, "echo-client.ts"), `ws://127.0.0.1:${this.port}/connect`],
      {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe", "ipc"],
      },
    );
    this.echoClient = client;
    client.stderr!.on("data", (d) => (this.output += d));
    await new Promise<void>((ok, fail) => {
      client.stdout!.on("data", (d) => String(d).includes("ready") && ok());
      client.once("exit", (code) => fail(new Error(`floor probe: echo client exited ${code}`)));
    });
    const res = await fetch(`${this.url}/echo?bytes=10`, { method: "POST" });
    const body = await res.text();
    if (!res.ok || body.length !== 10)
      throw new Error(`floor probe: echo answered ${res.status} ${body.slice(0, 200)}`);
  }

  /** wrangler dev's output so far (for a failure's message). */
  get logs(): string {
    return this.output;
  }

  async dispose(): Promise<void> {
    const echoClient = this.echoClient;
    this.echoClient = null;
    if (echoClient) await stopProcessGroup(echoClient);
    const child = this.child;
    this.child = null;
    if (child) await stopProcessGroup(child);
    rmSync(this.persistDir, { recursive: true, force: true });
  }
}
