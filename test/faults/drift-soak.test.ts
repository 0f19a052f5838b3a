// Drift soak on the real libvirtd + QEMU: rounds of random operator actions (start, stop, force
// stop, reset, force reset), random faults (agent SIGKILL and SIGSTOP, link cut and blackhole,
// control-plane restart) and out-of-band changes made on the hypervisor from another libvirt
// connection (start, destroy, define, undefine of diskless guests), each round followed by
// quiescence: nobody touches anything, and every VM record must come to equal the hypervisor by
// itself (change reports, verified writes, the reconciler and the anti-entropy digest, sent every
// DIGEST_MS here). Prints the divergences left (must be 0) and the longest time to converge.
// `QX_SOAK_MS` makes it longer (default 60 s of rounds).
import { rmSync } from "node:fs";
import { LibvirtClient } from "../../agent/libvirt/index.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VmView } from "../../protocol/rest.ts";
import { LIBVIRT_STATES, mapLibvirtState, type VmState } from "../../protocol/wire.ts";
import { AgentProcess } from "../support/agent.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { disklessQemuDomain } from "../support/qemu-domain.ts";
import { FAST_AGENT_ARGS, createNode, eventually, json, startControlPlane, waitConnected } from "../e2e/journey.ts";
import { LinkProxy } from "./link-proxy.ts";

const URI = "qemu:///system";
const LOG_DIR = "/var/log/libvirt/qemu";
const SOAK_MS = Number(process.env.QX_SOAK_MS ?? 60_000);
const DIGEST_MS = 2_000;
const CHAOS_MS = 10_000;
/** The most a round may take to converge before what still differs counts as a divergence: a
 *  generous multiple of the digest interval (every way back to the truth runs within one or two). */
const CONVERGE_BOUND_MS = 10 * DIGEST_MS;

let cp: ControlPlane;
let admin: LibvirtClient; // the other libvirt connection: out-of-band changes, and the truth to compare with
let proxy: LinkProxy;
let agent: AgentProcess;
let nodeId: string;
/** Every guest this test defined (name by UUID), whether still defined or not. */
const guests = new Map<string, string>();
const defined = new Set<string>();

const pick = <T>(xs: readonly T[]) => xs[Math.floor(Math.random() * xs.length)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function defineGuest(prefix: string): Promise<string> {
  const g = disklessQemuDomain(prefix);
  await admin.defineXml(g.xml);
  guests.set(g.uuid, g.name);
  defined.add(g.uuid);
  return g.uuid;
}

/** The hypervisor's state of each guest of this test (undefined: no such domain). */
async function truth(): Promise<Map<string, VmState | undefined>> {
  const out = new Map<string, VmState | undefined>();
  for (const uuid of guests.keys()) {
    try {
      const info = await admin.domainInfo(await admin.lookupByUuid(uuid));
      out.set(uuid, mapLibvirtState(LIBVIRT_STATES[info.state] ?? "nostate"));
    } catch {
      out.set(uuid, undefined);
    }
  }
  return out;
}

/** The guests whose record differs from the hypervisor, with both sides. */
async function divergences(): Promise<{ uuid: string; record: string; hypervisor: string }[]> {
  const hv = await truth();
  const out: { uuid: string; record: string; hypervisor: string }[] = [];
  for (const [uuid, state] of hv) {
    const res = await cp.api(`/api/vms/${uuid}`);
    const vm = res.status === 200 ? (await json<{ vm: VmView & { missing: boolean } }>(res)).vm : null;
    const record = !vm || vm.missing ? "absent" : vm.state;
    const hypervisor = state ?? "absent";
    if (record !== hypervisor) out.push({ uuid, record, hypervisor });
  }
  return out;
}

beforeAll(async () => {
  admin = await LibvirtClient.connect(URI);
  // Defining a domain can take libvirtd most of a minute on a busy host: two guests to begin with.
  await Promise.all([defineGuest("qx-drift"), defineGuest("qx-drift")]);
  cp = await startControlPlane({ OFFLINE_AFTER_MS: "6000" });
  proxy = await LinkProxy.start(cp.port);
  const { node, joinToken } = await createNode(cp, `drift-${Date.now()}`);
  nodeId = node.id;
  agent = AgentProcess.start({
    server: proxy.url,
    token: joinToken,
    libvirtUri: URI,
    logDir: LOG_DIR,
    args: [...FAST_AGENT_ARGS, "--digest-interval", String(DIGEST_MS), "--progress-interval", "1000"],
  });
  try {
    await waitConnected(cp, nodeId);
    for (const uuid of guests.keys())
      await eventually("guest listed", async () => (await cp.api(`/api/vms/${uuid}`)).ok, 30_000);
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\n--- agent output ---\n${agent.output.slice(-4000)}\n--- control plane ---\n${cp.logs.slice(-4000)}`,
    );
  }
}, 400_000);

afterAll(async () => {
  await agent?.dispose();
  await proxy?.close();
  for (const [uuid, name] of guests) {
    const dom = await admin.lookupByUuid(uuid).catch(() => null);
    if (dom) {
      await admin.destroy(dom).catch(() => {});
      await admin.undefine(dom).catch(() => {});
    }
    rmSync(`${LOG_DIR}/${name}.log`, { force: true });
  }
  await admin?.close();
  await cp?.dispose();
}, 60_000);

describe("drift soak", () => {
  it(
    `rounds of actions, faults and out-of-band changes for ${SOAK_MS / 1000} s: every record comes back to the hypervisor's truth by itself`,
    async () => {
      const statuses: Record<number, number> = {};
      const faults: Record<string, number> = { sigkill: 0, sigstop: 0, cut: 0, blackhole: 0, restart: 0 };
      const outOfBand = { start: 0, destroy: 0, define: 0, undefine: 0 };
      const rounds: { convergedMs: number; left: number }[] = [];
      const until = Date.now() + SOAK_MS;
      let restarted = false;

      while (Date.now() < until || rounds.length < 3) {
        const roundEnd = Date.now() + CHAOS_MS;
        // A round's actions and faults go on while its slow out-of-band change (a define) is pending.
        let structuralPending = true;
        const going = () => Date.now() < roundEnd || structuralPending;
        const traffic = (async () => {
          while (going()) {
            const vm = pick([...guests.keys()]);
            const action = pick(["start", "stop", "stop?force=true", "reset_state", "reset_state?force=true"]);
            try {
              const res = await cp.api(`/api/vms/${vm}/${action}`, { method: "POST" });
              statuses[res.status] = (statuses[res.status] ?? 0) + 1;
              await res.text();
            } catch {
              statuses[0] = (statuses[0] ?? 0) + 1; // the control plane is restarting
            }
            await sleep(150 + Math.random() * 600);
          }
        })();
        // Out-of-band: starts and destroys all along; a define in the first round and an undefine (of
        // that guest) in a later one, as defining takes libvirtd long on a busy host.
        const hypervisor = (async () => {
          let structural = rounds.length === 0 ? "define" : outOfBand.define && !outOfBand.undefine ? "undefine" : null;
          while (Date.now() < roundEnd || structural) {
            await sleep(500 + Math.random() * 1_500);
            const change = structural ?? pick(["start", "destroy"] as const);
            structural = null;
            const uuid = change === "undefine" ? [...defined].at(-1) : pick([...defined]);
            const dom = uuid ? await admin.lookupByUuid(uuid).catch(() => null) : null;
            try {
              if (change === "define") await defineGuest("qx-drift-new");
              else if (change === "undefine" && uuid && dom) {
                await admin.destroy(dom).catch(() => {});
                await admin.undefine(dom);
                defined.delete(uuid);
              } else if (change === "start" && dom) await admin.start(dom);
              else if (change === "destroy" && dom) await admin.destroy(dom);
              else continue;
              outOfBand[change]++;
            } catch {
              // e.g. start of a running domain: libvirt refuses, nothing changed
            } finally {
              if (change === "define" || change === "undefine") structuralPending = false;
            }
          }
          structuralPending = false;
        })();
        const chaos = (async () => {
          do {
            await sleep(1_000 + Math.random() * 3_000);
            const fault =
              !restarted && rounds.length === 1 ? "restart" : pick(["sigkill", "sigstop", "cut", "blackhole"] as const);
            faults[fault]++;
            if (fault === "restart") {
              restarted = true;
              await cp.restart();
            } else if (fault === "sigkill") {
              process.kill(agent.pid, "SIGKILL");
              await agent.waitForExit(5_000);
              await agent.restart();
            } else if (fault === "sigstop") {
              agent.freeze();
              await sleep(1_000 + Math.random() * 3_000);
              agent.thaw();
            } else if (fault === "cut") {
              proxy.cut();
              await sleep(300 + Math.random() * 2_000);
              proxy.restore();
            } else {
              proxy.blackhole();
              await sleep(500 + Math.random() * 2_500);
              proxy.restore();
            }
          } while (going());
        })();
        await Promise.all([traffic, hypervisor, chaos]);

        // Quiescence: the link is up and the agent runs; nobody touches anything from here.
        proxy.restore();
        if (agent.running) agent.thaw();
        const quiet = Date.now();
        let left: { uuid: string; record: string; hypervisor: string }[] = [];
        for (;;) {
          left = await divergences();
          if (left.length === 0 || Date.now() - quiet > CONVERGE_BOUND_MS) break;
          await sleep(200);
        }
        const convergedMs = Date.now() - quiet;
        rounds.push({ convergedMs, left: left.length });
        if (left.length)
          console.log(
            `drift soak: round ${rounds.length} still differs after ${convergedMs} ms: ${JSON.stringify(left)}`,
          );
      }

      const divergent = rounds.reduce((n, r) => n + r.left, 0);
      const longest = Math.max(...rounds.map((r) => r.convergedMs));
      console.log(
        `drift soak: ${rounds.length} rounds, divergences ${divergent}, longest convergence ${longest} ms (digest every ${DIGEST_MS} ms), ` +
          `statuses ${JSON.stringify(statuses)}, faults ${JSON.stringify(faults)}, out-of-band ${JSON.stringify(outOfBand)}`,
      );
      expect(statuses[500] ?? 0).toBe(0);
      expect(divergent).toBe(0);
    },
    SOAK_MS + 400_000,
  );
});
