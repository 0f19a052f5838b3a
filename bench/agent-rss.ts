// Bench: idle memory of a running agent (target: bench/targets.ts), connected to a tiny loopback
// control plane and reporting the shipped demo host (libvirt's test driver, served by the machine's
// libvirt daemon). Measured for the bundle as a host runs it (shebang V8 flags + the systemd unit's
// environment), the bundle without them, and `node agent/main.ts`; RSS beside PSS and USS (from /proc/<pid>/smaps_rollup), because most of an
// idle agent's RSS is shared file pages of the node binary.
// `node bench/agent-rss.ts` prints the rows.
import type { ChildProcess } from "node:child_process";
import { spawnOwned } from "../scripts/child-processes.ts";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { WebSocketServer } from "ws";
import { resolveUri } from "../agent/libvirt/index.ts";
import { PING_FRAME, PONG_FRAME } from "../protocol/wire.ts";
import type { BenchRow } from "./tail.ts";
import { goal } from "./targets.ts";

const ROOT = resolve(import.meta.dirname, "..");
const IDLE_MS = 6_000;
const DEMO_URI = `test://${join(ROOT, "agent/demo/node.xml")}`;

/** Enough of the control plane for an agent to enroll, connect and idle: not the real Worker. */
async function tinyControlPlane() {
  let inventories = 0;
  const wss = new WebSocketServer({ noServer: true });
  const server = createServer((req, res) => {
    if (req.method === "POST" && req.url === "/agent/enroll") {
      req.resume();
      req.on("end", () =>
        res
          .writeHead(201, { "content-type": "application/json" })
          .end(JSON.stringify({ nodeId: "bench", credential: "bench-credential" })),
      );
      return;
    }
    res.writeHead(404).end();
  });
  server.on("upgrade", (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(
        JSON.stringify({
          type: "welcome",
          id: "w",
          payload: { nodeId: "bench", serverTime: Date.now(), heartbeatMs: 20_000 },
        }),
      );
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
    close: () =>
      new Promise<void>(
        (r) => (wss.clients.forEach((c) => c.terminate()), server.closeAllConnections(), server.close(() => r())),
      ),
  };
}

/** Memory of a process, MiB. RSS counts every resident page, shared ones (the node binary, libc,
 *  libvirt) in full; PSS splits shared pages between the processes mapping them; USS is what only
 *  this process holds (private pages: what stopping it would give back). */
export type Rss = { total: number; anon: number; file: number; pss: number; uss: number };
export function rssOf(pid: number): Rss {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kib = (text: string, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(text)![1]) / 1024;
  return {
    total: kib(status, "VmRSS"),
    anon: kib(status, "RssAnon"),
    file: kib(status, "RssFile"),
    pss: kib(rollup, "Pss"),
    uss: kib(rollup, "Private_Clean") + kib(rollup, "Private_Dirty"),
  };
}

/** User + system CPU time of a process so far (clock ticks of /proc/<pid>/stat, 100 per second). */
function cpuMsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8")
    .replace(/^.*\) /s, "")
    .split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime (fields 14 and 15)
}

/** SIGTERM and wait for the exit (at once if it already exited: a crash must not hang the bench). */
async function stopChild(child: ChildProcess) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

/** The floor: an idle `node` holding the libvirt daemon's socket open (the agent's one libvirt
 *  connection, without any of its code), same binary, measured the same way. */
async function bareNodeRss(): Promise<Rss> {
  const socket = resolveUri(DEMO_URI).sockets.find((path) => existsSync(path));
  if (!socket) throw new Error(`no libvirt daemon socket for ${DEMO_URI}`);
  const hold = `const s = require("node:net").connect(process.argv[1]);
s.on("error", (e) => { console.error(e.message); process.exit(1); });
setInterval(() => {}, 1000);`;
  const child = spawnOwned(process.execPath, ["-e", hold, socket], { stdio: ["ignore", "ignore", "inherit"] });
  try {
    await new Promise((r) => setTimeout(r, 2_000));
    if (child.exitCode !== null) throw new Error("the floor process could not hold the libvirt socket open");
    return rssOf(child.pid!);
  } finally {
    await stopChild(child);
  }
}

/** Idle memory of the agent at `entry`, started as `node [nodeFlags] entry …` with `env` added,
 *  and the CPU time it used from its start to the end of the idle window. */
export async function idleRss(
  entry: string,
  nodeFlags: string[] = [],
  env: Record<string, string> = {},
): Promise<Rss & { cpuMs: number }> {
  const cp = await tinyControlPlane();
  const stateDir = mkdtempSync(join(tmpdir(), "qx-bench-agent-"));
  const child = spawnOwned(
    process.execPath,
    [
      ...nodeFlags,
      entry,
      "--server",
      cp.url,
      "--token",
      "bench-join",
      "--state-dir",
      stateDir,
      "--libvirt-uri",
      DEMO_URI,
      "--log-dir",
      join(ROOT, "agent/demo/logs"),
      "--log-level",
      "warn",
    ],
    { stdio: "ignore", env: { ...process.env, ...env } },
  );
  try {
    const t0 = Date.now();
    while (cp.inventories() === 0) {
      if (Date.now() - t0 > 20_000 || child.exitCode !== null)
        throw new Error(`agent ${entry} did not report its inventory`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, IDLE_MS)); // a couple of inventory polls, then idle
    const samples: Rss[] = [];
    for (let i = 0; i < 5; i++, await new Promise((r) => setTimeout(r, 200))) samples.push(rssOf(child.pid!));
    return { ...samples.reduce((a, b) => (b.total > a.total ? b : a)), cpuMs: cpuMsOf(child.pid!) };
  } finally {
    await stopChild(child);
    await cp.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/** The V8 flags in the bundle's shebang (`#!/usr/bin/env -S node <flags>`): what a host runs it with. */
function shebangFlags(bundle: string): string[] {
  const first = readFileSync(bundle, "utf8").slice(0, 200).split("\n")[0];
  return first
    .replace(/^#!\S*env -S node\s*|^#!.*$/, "")
    .split(/\s+/)
    .filter(Boolean);
}
/** What agent/quantix-agent.service adds to the environment for memory. */
const UNIT_ENV = { MALLOC_ARENA_MAX: "2" };

export async function benchAgentRss(): Promise<BenchRow[]> {
  const round = (x: number) => Math.round(x * 10) / 10;
  const bare = await bareNodeRss();
  const rows: BenchRow[] = [
    {
      name: "idle RSS of a bare `node` holding the libvirt socket open (floor: the binary's own pages)",
      value: round(bare.total),
      unit: "MiB",
    },
    { name: "idle PSS / USS of a bare `node` process", value: round(bare.pss), unit: `MiB (USS ${round(bare.uss)})` },
  ];
  const bundle = join(ROOT, "dist/agent/quantix-agent.mjs");
  // [label, entry, node flags, env]: the bundle as a host runs it, the bundle without the flags
  // (what they are worth), and the dev entry.
  const entries: [string, string, string[], Record<string, string>][] = [];
  if (existsSync(bundle)) {
    entries.push([
      "bundle as shipped: " + [...shebangFlags(bundle), "MALLOC_ARENA_MAX=2"].join(" "),
      bundle,
      shebangFlags(bundle),
      UNIT_ENV,
    ]);
    entries.push(["bundle, no flags", bundle, [], {}]);
  }
  entries.push(["node agent/main.ts", join(ROOT, "agent/main.ts"), [], {}]);
  for (const [label, entry, flags, env] of entries) {
    const r = await idleRss(entry, flags, env);
    rows.push({
      name: `agent idle RSS (${label})`,
      value: round(r.total),
      unit: "MiB",
      floor: round(bare.total),
      overFloor: round(r.total - bare.total),
      ratio: round(r.total / bare.total),
      ...goal("agentIdleRss", { value: r.total, floor: bare.total }),
    });
    rows.push({
      name: `agent idle PSS, shared pages split (${label})`,
      value: round(r.pss),
      unit: "MiB",
      baseline: round(bare.pss),
    });
    rows.push({
      name: `agent idle USS, private pages only (${label})`,
      value: round(r.uss),
      unit: "MiB",
      baseline: round(bare.uss),
    });
    rows.push({
      name: `agent idle anonymous RSS (${label})`,
      value: round(r.anon),
      unit: "MiB",
      baseline: round(bare.anon),
    });
    rows.push({ name: `agent CPU, start + ${IDLE_MS / 1000} s idle (${label})`, value: r.cpuMs, unit: "ms" });
  }
  return rows;
}

if (import.meta.main) console.table(await benchAgentRss());
