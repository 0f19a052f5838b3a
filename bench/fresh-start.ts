// A newcomer's first run, timed: `git clone` of this repository into a temporary directory,
// `npm install`, then `npm start` until the dashboard answers and the demo VMs are listed, with the
// phases in between; then Ctrl-C (SIGINT to its process group) and a check that nothing it started
// is left. Where this machine runs a libvirt daemon, `npm start` runs in a private mount namespace
// whose /run/libvirt is an empty tmpfs (root only), so it sees none and starts its own private one,
// as on a machine without libvirt; the machine's daemon keeps running, unseen.
// `node bench/fresh-start.ts` alone, or `BENCH_ONLY=fresh-start npm run bench` (only when named: it
// installs every package again). It clones what is committed (BENCH_FRESH_REF=<commit>: that one). The figures hold for npm's cache as it
// is here (warm after the first install on a machine); the CPU seconds, beside the wall-clock ones,
// hold however busy the machine is.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { bindable, freePort } from "../test/support/control-plane.ts";
import { descendants, stillRunning, type ProcessEntry } from "../test/support/process-tree.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

const ROOT = resolve(import.meta.dirname, "..");
const DEADLINE_MS = 10 * 60_000;
/** Another commit to time (a before/after comparison); by default what is checked out. */
const REF = process.env.BENCH_FRESH_REF;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seconds = (ms: number) => Math.round(ms / 100) / 10;

/** `npm start`'s lines that end a phase, in the order a fresh clone prints them. */
const PHASES: [string, RegExp][] = [
  ["dashboard + install assets built", /\[start\] built the dashboard/],
  ["local D1 migrated", /\[start\] local D1:/],
  ["private libvirtd answering", /\[start\] demo host:/],
  ["wrangler dev ready", /\[start\] control plane ready/],
  ["demo agent connected", /\[start\] demo agent connected/],
  ["ready (summary printed)", /\[start\] ready in/],
];

function run(command: string, args: string[], cwd: string): number {
  const t0 = Date.now();
  const r = spawnSync(command, args, { cwd, stdio: ["ignore", "inherit", "inherit"] });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} exited ${r.status ?? r.signal}`);
  return Date.now() - t0;
}

const load = () => loadavg()[0].toFixed(1);

/** CPU seconds (user + system) of the children this process has waited for, and theirs: on a busy
 *  machine the figure that does not depend on how much of the CPU the others leave. */
function childrenCpu(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[13]) + Number(fields[14])) / 100; // cutime, cstime in clock ticks (USER_HZ)
}

/** Whether a libvirt daemon socket is there for `npm start` to find. */
const systemDaemon = () => ["/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock"].some((p) => existsSync(p));

async function get(url: string, token?: string): Promise<{ status: number; text: string }> {
  try {
    const res = await fetch(url, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(2_000),
    });
    return { status: res.status, text: await res.text() };
  } catch {
    return { status: 0, text: "" };
  }
}

export async function freshStart(): Promise<{
  phases: [string, number][];
  total: number;
  cpu: { install: number; start: number };
}> {
  const dir = mkdtempSync(join(tmpdir(), "qx-fresh-"));
  const clone = join(dir, "quantix-edge");
  const phases: [string, number][] = [];
  const mark = (name: string, ms: number) => {
    phases.push([name, ms]);
    console.log(`  ${name.padEnd(36)} ${seconds(ms).toFixed(1).padStart(6)} s   (load ${load()})`);
  };
  let job: ReturnType<typeof spawn> | null = null;
  let tree: ProcessEntry[] = [];
  try {
    const t0 = Date.now();
    console.log(
      `fresh start: load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}, clone in ${clone}`,
    );
    mark("git clone", run("git", ["clone", "--quiet", ROOT, clone], dir));
    if (REF) run("git", ["checkout", "--quiet", REF], clone);
    let cpu = childrenCpu();
    mark("npm install", run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], clone));
    const installCpu = childrenCpu() - cpu;
    console.log(`  npm install CPU: ${installCpu.toFixed(1)} s`);

    let port = await freePort();
    while (!(await bindable(port + 1)) || !(await bindable(port + 2))) port = await freePort();
    const start = ["npm", "start", "--", "--port", String(port)];
    const hide = systemDaemon();
    if (hide && process.getuid?.() !== 0)
      throw new Error("a libvirt daemon runs here: hiding it (a mount namespace) needs root");
    const [cmd, args] = hide
      ? ["unshare", ["-m", "--", "sh", "-c", 'mount -t tmpfs tmpfs /run/libvirt && exec "$@"', "sh", ...start]]
      : [start[0], start.slice(1)];
    const ts = Date.now();
    // A job of its own, as a terminal starts it: Ctrl-C is SIGINT to this group.
    job = spawn(cmd, args, { cwd: clone, stdio: ["ignore", "pipe", "pipe"], detached: true });
    const exited = new Promise<void>((r) => job!.once("exit", () => r()));
    const pending = [...PHASES];
    let output = "";
    for (const stream of [job.stdout!, job.stderr!])
      createInterface({ input: stream }).on("line", (line) => {
        output += `${line}\n`;
        const i = pending.findIndex(([, re]) => re.test(line));
        if (i >= 0) mark(`npm start: ${pending.splice(i, 1)[0][0]}`, Date.now() - ts);
      });

    const base = `http://127.0.0.1:${port}`;
    const expected = (readFileSync(join(clone, "agent/demo/node.xml"), "utf8").match(/<domain\b/g) ?? []).length;
    const until = Date.now() + DEADLINE_MS;
    const waitFor = async (what: string, ok: () => Promise<boolean>) => {
      while (!(await ok())) {
        if (job!.exitCode !== null || Date.now() > until)
          throw new Error(`npm start: ${what} did not happen; its output:\n${output}`);
        await sleep(200);
      }
      mark(`npm start: ${what} (seen by the bench)`, Date.now() - ts);
    };
    await waitFor("dashboard answers", async () => {
      const r = await get(`${base}/`);
      return r.status === 200 && /<html/i.test(r.text);
    });
    const token = () => readFileSync(join(clone, ".dev.vars"), "utf8").match(/^ADMIN_TOKEN\s*=\s*"?([^"\r\n]+)"?/m)![1];
    let vms = 0;
    await waitFor(`${expected} demo VMs listed`, async () => {
      const nodes = await get(`${base}/api/nodes`, token());
      if (nodes.status !== 200) return false;
      const demo = (JSON.parse(nodes.text) as { nodes: { id: string; name: string }[] }).nodes.find(
        (n) => n.name === "demo",
      );
      if (!demo) return false;
      const list = await get(`${base}/api/vms?node_id=${demo.id}&limit=100`, token());
      vms = list.status === 200 ? (JSON.parse(list.text) as { vms: unknown[] }).vms.length : 0;
      return vms >= expected;
    });
    const total = Date.now() - t0;
    mark("clone → demo VMs listed", total);
    // Let it finish what a first start does (the stuck VM), then Ctrl-C.
    while (!/\[start\] ready in/.test(output) && job.exitCode === null && Date.now() < until) await sleep(200);
    tree = descendants(job.pid!);
    const ts2 = Date.now();
    if (job.exitCode !== null)
      throw new Error(`npm start exited (${job.exitCode}) before Ctrl-C; its output:\n${output}`);
    process.kill(-job.pid!, "SIGINT");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 60_000).unref())]);
    for (let i = 0; i < 100 && tree.some(stillRunning); i++) await sleep(100);
    const left = tree.filter(stillRunning);
    if (left.length)
      throw new Error(`left running after Ctrl-C: ${left.map((p) => `${p.pid} ${p.command}`).join("; ")}`);
    for (const p of [port, port + 1]) if (!(await bindable(p))) throw new Error(`port ${p} still taken after Ctrl-C`);
    const kinds = ["libvirtd", "wrangler", "workerd", "agent/main.ts"].filter((k) =>
      tree.some((p) => p.command.includes(k)),
    );
    mark(`Ctrl-C → all stopped (${kinds.join(", ")})`, Date.now() - ts2);
    cpu = childrenCpu() - cpu - installCpu;
    console.log(`  npm start CPU, first start to the end of Ctrl-C: ${cpu.toFixed(1)} s`);
    return { phases, total, cpu: { install: installCpu, start: cpu } };
  } finally {
    if (job?.pid && job.exitCode === null) {
      try {
        process.kill(-job.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    for (const p of tree.filter(stillRunning)) process.kill(p.pid, "SIGKILL");
    const t = Date.now();
    rmSync(dir, { recursive: true, force: true });
    console.log(`  (clone removed in ${seconds(Date.now() - t)} s)`);
  }
}

/** The bench section: the whole run and its phases, with the load it ran under. */
export async function benchFreshStart(): Promise<BenchRow[]> {
  const { phases, total, cpu } = await freshStart();
  return [
    {
      name: "fresh clone → demo VMs listed (npm install + npm start, npm cache warm)",
      value: seconds(total),
      unit: "s",
      ...goal("freshStart", { value: seconds(total) }),
      note: `${phases.map(([n, ms]) => `${n} ${seconds(ms)} s`).join(", ")}; CPU: npm install ${cpu.install.toFixed(1)} s, npm start ${cpu.start.toFixed(1)} s`,
    },
  ];
}

if (import.meta.main) await freshStart();
