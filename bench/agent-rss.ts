// Bench: idle RSS of a running agent (target ≤ 50 MiB), connected to a tiny loopback control plane
// and reporting the shipped demo host (libvirt test driver). Measured for `node agent/main.ts` and,
// when built (`npm run build:agent`), for the bundle. `node bench/agent-rss.ts` prints the rows.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { WebSocketServer } from "ws";
import { PING_FRAME, PONG_FRAME } from "../protocol/wire.ts";
import type { BenchRow } from "./tail.ts";

const ROOT = resolve(import.meta.dirname, "..");
const IDLE_MS = 6_000;

/** Enough of the control plane for an agent to enroll, connect and idle: not the real Worker. */
async function tinyControlPlane() {
  let inventories = 0;
  const wss = new WebSocketServer({ noServer: true });
  const server = createServer((req, res) => {
    if (req.method === "POST" && req.url === "/agent/enroll") {
      req.resume();
      req.on("end", () => res.writeHead(201, { "content-type": "application/json" }).end(JSON.stringify({ nodeId: "bench", credential: "bench-credential" })));
      return;
    }
    res.writeHead(404).end();
  });
  server.on("upgrade", (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify({ type: "welcome", id: "w", payload: { nodeId: "bench", serverTime: Date.now(), heartbeatMs: 20_000 } }));
      ws.on("message", (d) => {
        const text = d.toString();
        if (text === PING_FRAME) ws.send(PONG_FRAME);
        else if (text.startsWith('{"type":"inventory"')) inventories++;
      });
    }),
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    inventories: () => inventories,
    close: () => new Promise<void>((r) => (wss.clients.forEach((c) => c.terminate()), server.closeAllConnections(), server.close(() => r()))),
  };
}

type Rss = { total: number; anon: number; file: number };
function rssOf(pid: number): Rss {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)![1]) / 1024;
  return { total: kib("VmRSS"), anon: kib("RssAnon"), file: kib("RssFile") };
}

/** The floor: an idle `node` doing nothing, same binary, measured the same way. */
async function bareNodeRss(): Promise<Rss> {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  try {
    await new Promise((r) => setTimeout(r, 2_000));
    return rssOf(child.pid!);
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
}

async function idleRss(entry: string): Promise<Rss> {
  const cp = await tinyControlPlane();
  const stateDir = mkdtempSync(join(tmpdir(), "qx-bench-agent-"));
  const child = spawn(
    process.execPath,
    [entry, "--server", cp.url, "--token", "bench-join", "--state-dir", stateDir, "--libvirt-uri", `test://${join(ROOT, "agent/demo/node.xml")}`,
      "--log-dir", join(ROOT, "agent/demo/logs"), "--log-level", "warn"],
    { stdio: "ignore" },
  );
  try {
    const t0 = Date.now();
    while (cp.inventories() === 0) {
      if (Date.now() - t0 > 20_000 || child.exitCode !== null) throw new Error(`agent ${entry} did not report its inventory`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, IDLE_MS)); // a couple of inventory polls, then idle
    const samples: Rss[] = [];
    for (let i = 0; i < 5; i++, await new Promise((r) => setTimeout(r, 200))) samples.push(rssOf(child.pid!));
    return samples.reduce((a, b) => (b.total > a.total ? b : a));
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
    await cp.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

export async function benchAgentRss(): Promise<BenchRow[]> {
  const round = (x: number) => Math.round(x * 10) / 10;
  const bare = await bareNodeRss();
  const rows: BenchRow[] = [
    { name: "idle RSS of a bare `node` process (floor: the binary's own pages)", value: round(bare.total), unit: "MiB" },
  ];
  const bundle = join(ROOT, "dist/agent/quantix-agent.mjs");
  const entries: [string, string][] = [["node agent/main.ts", join(ROOT, "agent/main.ts")]];
  if (existsSync(bundle)) entries.unshift(["bundle", bundle]);
  for (const [label, entry] of entries) {
    const r = await idleRss(entry);
    rows.push({ name: `agent idle RSS (${label})`, value: round(r.total), unit: "MiB", baseline: round(bare.total), ratio: round(r.total / bare.total), target: "≤ 50" });
    rows.push({ name: `agent idle private RSS, anonymous (${label})`, value: round(r.anon), unit: "MiB", baseline: round(bare.anon), target: "≤ 50" });
  }
  return rows;
}

if (import.meta.main) console.table(await benchAgentRss());
