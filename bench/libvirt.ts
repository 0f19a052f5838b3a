// Bench: the libvirt access layer. The agent's client of libvirt's RPC protocol next to libvirt's
// own C client doing the same calls in one long-lived `virsh` process (commands on its stdin, so no
// process start is counted), on the same daemon (libvirt's test driver served by libvirtd) in the
// same run: one state call, and the bulk statistics of every active domain (also next to a `virsh
// domstats` process per call, which is how the agent sampled before). Then a `virsh destroy` from
// another connection to the control plane's record, on a real QEMU guest (the test driver keeps its
// state per connection, so another client's destroy never reaches the agent's): the agent's poll is
// set to a minute, so only libvirt's lifecycle event can explain a record that follows within
// milliseconds. `node bench/libvirt.ts`.
import { randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { LibvirtClient, StatsFlags, StatsGroup } from "../agent/libvirt/index.ts";
import { runOwned, spawnOwned } from "../scripts/child-processes.ts";
import { createNode, eventually, getVm, waitConnected } from "../test/e2e/journey.ts";
import { AgentProcess } from "../test/support/agent.ts";
import { ControlPlane } from "../test/support/control-plane.ts";
import { disklessQemuDomain } from "../test/support/qemu-domain.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

const ROOT = resolve(import.meta.dirname, "..");
const XML = join(ROOT, "test/agent/fixtures/node.xml");
const RUNNING = "11111111-0000-4000-8000-000000000001";
const RUNS = 200;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)] * 1000) / 1000;
};

async function timed(n: number, fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < Math.min(20, n); i++) await fn(); // warm up both sides alike
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return median(times);
}

/** One `virsh` kept running; each command is followed by an `echo` of a marker that ends its answer. */
function longLivedVirsh(uri: string) {
  const child = spawnOwned("virsh", ["-q", "-c", uri], { stdio: ["pipe", "pipe", "ignore"] });
  const { stdin, stdout } = child;
  if (!stdin || !stdout) throw new Error("virsh started without its pipes");
  let out = "";
  let waiting: { marker: string; resolve: (text: string) => void } | null = null;
  stdout.setEncoding("utf8");
  stdout.on("data", (d: string) => {
    out += d;
    const at = waiting ? out.indexOf(waiting.marker) : -1;
    if (waiting && at >= 0) {
      const w = waiting;
      waiting = null;
      const text = out.slice(0, at);
      out = out.slice(at + w.marker.length);
      w.resolve(text);
    }
  });
  let n = 0;
  return {
    /** Runs `command`, resolves with what virsh printed for it. */
    call(command: string): Promise<string> {
      const id = ++n;
      // `"qx""-end-N"` prints as qx-end-N, which the echoed command line does not contain.
      return new Promise((resolve) => {
        waiting = { marker: `qx-end-${id}`, resolve };
        stdin.write(`${command}\necho "qx""-end-${id}"\n`);
      });
    },
    close: () => {
      stdin.end();
      child.kill();
    },
  };
}

const QEMU_URI = "qemu:///system";
const DESTROYS = 7;

/** `virsh destroy` of a running guest (another client) → the VM's record, as `GET /api/vms/:id`
 *  answers it, says STOPPED; the agent polls libvirt once a minute. */
export async function benchDestroyToRecord(): Promise<BenchRow[]> {
  if (!existsSync("/usr/bin/qemu-system-x86_64") || process.getuid?.() !== 0)
    throw new Error("needs QEMU (/usr/bin/qemu-system-x86_64) and root for qemu:///system");
  const { name, uuid, xml } = disklessQemuDomain(`libvirt-bench-${randomBytes(2).toString("hex")}`);
  const admin = await LibvirtClient.connect(QEMU_URI);
  const cp = await ControlPlane.start({ rateLimits: false });
  let agent: AgentProcess | undefined;
  const virsh = (...args: string[]) => runOwned("virsh", ["-q", "-c", QEMU_URI, ...args]);
  const stateOf = async () => (await getVm(cp, uuid)).state;
  try {
    await admin.defineXml(xml);
    const { node, joinToken } = await createNode(cp, `bench-libvirt-${Date.now()}`);
    agent = AgentProcess.start({
      server: cp.url,
      token: joinToken,
      libvirtUri: QEMU_URI,
      logDir: "/var/log/libvirt/qemu",
      args: ["--poll-interval", "60000", "--log-level", "warn"],
    });
    await waitConnected(cp, node.id);
    await eventually("the bench guest listed", async () => (await cp.api(`/api/vms/${uuid}`)).ok, 30_000);
    const times: number[] = [];
    for (let i = 0; i < DESTROYS; i++) {
      await virsh("start", uuid);
      await eventually("the bench guest RUNNING in the record", async () => (await stateOf()) === "RUNNING", 30_000);
      await virsh("destroy", uuid);
      const t0 = performance.now();
      // Back-to-back reads: the figure includes up to one GET's round trip of sampling.
      while ((await stateOf()) !== "STOPPED") {
        if (performance.now() - t0 > 30_000) throw new Error("the record never said STOPPED");
      }
      times.push(performance.now() - t0);
    }
    const sorted = [...times].sort((a, b) => a - b);
    const r = (x: number) => Math.round(x * 10) / 10;
    const p50 = r(sorted[Math.floor(sorted.length / 2)]);
    const reads = await timed(50, stateOf); // one read of the record: the sampling step above
    return [
      {
        name: `libvirt: out-of-band \`virsh destroy\` → the record says STOPPED (GET /api/vms/:id), p50 of ${DESTROYS}`,
        value: p50,
        unit: "ms",
        baseline: reads,
        ...goal("libvirtDestroyToRecord", { value: p50 }),
        note: `max ${r(sorted.at(-1)!)} ms; counted from virsh's exit; agent poll 60 s, so a lifecycle event carried it; real QEMU guest on qemu:///system; baseline: one GET of the record (median), the loop's sampling step`,
      },
      { name: "libvirt: out-of-band `virsh destroy` → the record, slowest", value: r(sorted.at(-1)!), unit: "ms" },
    ];
  } finally {
    await agent?.dispose();
    const dom = await admin.lookupByUuid(uuid).catch(() => null);
    if (dom) {
      await admin.destroy(dom).catch(() => {});
      await admin.undefine(dom).catch(() => {});
    }
    await admin.close();
    rmSync(`/var/log/libvirt/qemu/${name}.log`, { force: true });
    await cp.dispose();
  }
}

export async function benchLibvirt(): Promise<BenchRow[]> {
  return [...(await benchCalls()), ...(await benchDestroyToRecord())];
}

async function benchCalls(): Promise<BenchRow[]> {
  const client = await LibvirtClient.connect(`test://${XML}`);
  const virsh = longLivedVirsh(`test+unix://${XML}`);
  try {
    const check = await virsh.call(`domstate ${RUNNING}`);
    if (!check.includes("running")) throw new Error(`virsh domstate answered ${JSON.stringify(check.slice(-200))}`);
    const getState = await timed(RUNS, () => client.domainState(RUNNING));
    // What `virsh domstate <uuid>` does: look the domain up, then ask its state.
    const lookupAndState = await timed(RUNS, async () => client.domainState(await client.lookupByUuid(RUNNING)));
    const virshState = await timed(RUNS, () => virsh.call(`domstate ${RUNNING}`));

    const groups = StatsGroup.cpuTotal | StatsGroup.balloon | StatsGroup.block | StatsGroup.interface;
    const ours = await timed(RUNS, () =>
      client.allDomainStats({ stats: groups, flags: StatsFlags.active | StatsFlags.nowait }),
    );
    const domstatsArgs = "domstats --raw --list-active --nowait --cpu-total --balloon --block --interface";
    const virshStats = await timed(RUNS, () => virsh.call(domstatsArgs));
    const virshProcess = await timed(20, () =>
      runOwned("virsh", ["-q", "-c", `test+unix://${XML}`, ...domstatsArgs.split(" ")]),
    );
    const r = (x: number) => Math.round(x * 100) / 100;
    return [
      {
        name: `libvirt: state call, lookup + DOMAIN_GET_STATE (as virsh domstate does), median of ${RUNS}`,
        value: lookupAndState,
        unit: "ms",
        baseline: virshState,
        ratio: r(lookupAndState / virshState),
        ...goal("libvirtStateCall", { value: lookupAndState, baseline: virshState }),
        note: `virsh domstate in one long-lived virsh (stdin): ${virshState} ms`,
      },
      {
        name: `libvirt: one DOMAIN_GET_STATE round trip (the agent's client), median of ${RUNS}`,
        value: getState,
        unit: "ms",
        baseline: virshState,
        ratio: r(getState / virshState),
      },
      {
        name: `libvirt: statistics of every active domain (CONNECT_GET_ALL_DOMAIN_STATS), median of ${RUNS}`,
        value: ours,
        unit: "ms",
        baseline: virshStats,
        ratio: r(ours / virshStats),
        ...goal("libvirtAllStats", { value: ours, baseline: virshStats }),
        note: `virsh domstats: ${virshStats} ms in a long-lived virsh, ${virshProcess} ms as a process per call (the old sampler)`,
      },
    ];
  } finally {
    virsh.close();
    await client.close();
  }
}

if (import.meta.main) console.table(await benchLibvirt());
