// Anti-entropy on the agent's side, on libvirt's test driver: the digest of everything reported,
// after the changes of the same look at libvirt; a scoped resync (VM ids, digest buckets) answered by
// an inventory complete for that scope. Then the real agent process against a loopback stand-in for
// the control plane (a `ws` server, not the Worker): hello announces the agent's features, digests
// come every --digest-interval to a control plane that announced `digest`, and none to one that
// announced nothing, which is what an older control plane does (progress frames likewise: see
// qemu-power.test.ts, where a power action lasts long enough to have them).
import { afterEach, describe, expect, it } from "vitest";
import { InventoryReporter, inScope } from "../../agent/host/inventory.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { differingBuckets, digestBucket, inventoryDigest } from "../../protocol/digest.ts";
import { WIRE_FEATURES, type AgentMessage, type VmInfo } from "../../protocol/wire.ts";
import {
  LoopbackControlPlane,
  TEST_URI,
  VMS,
  recorder,
  silentLog,
  spawnAgentProcess,
  tempDir,
  until,
} from "./helpers.ts";

type Digest = Extract<AgentMessage, { type: "inventory.digest" }>;
type Inventory = Extract<AgentMessage, { type: "inventory" }>;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function reporter(features: string[] = ["digest"]) {
  const libvirt = new Libvirt(TEST_URI, silentLog);
  cleanups.push(() => libvirt.close());
  const rec = recorder();
  const inv = new InventoryReporter({
    libvirt,
    send: rec.send,
    log: silentLog,
    pollMs: 3_600_000,
    digestIntervalMs: 3_600_000,
    peerFeatures: () => new Set(features),
  });
  cleanups.push(() => inv.stopPolling());
  return { libvirt, rec, inv };
}
const vmsOf = (frames: AgentMessage[]) =>
  frames.filter((m): m is Inventory => m.type === "inventory").flatMap((m) => m.payload.vms);

describe("digest", () => {
  it("is the digest of what was reported, sent after the changes seen in the same look", async () => {
    const { libvirt, rec, inv } = reporter();
    await inv.fullSync();
    const reported = new Map<string, VmInfo>(vmsOf(rec.sent).map((v) => [v.uuid, v]));
    await inv.digestNow();
    const first = rec.sent.at(-1) as Digest;
    expect(first.type).toBe("inventory.digest");
    expect(first.payload).toEqual(inventoryDigest([...reported.values()]));

    // Out-of-band change: the next digest comes after the vm.changed that reports it, and differs in that bucket only.
    await libvirt.destroy(VMS.running.uuid);
    await inv.digestNow();
    const [changed, second] = rec.sent.slice(-2) as [Extract<AgentMessage, { type: "vm.changed" }>, Digest];
    expect(changed.type).toBe("vm.changed");
    expect(changed.payload.vms.map((v) => v.uuid)).toEqual([VMS.running.uuid]);
    expect(second.type).toBe("inventory.digest");
    for (const v of changed.payload.vms) reported.set(v.uuid, v);
    expect(second.payload).toEqual(inventoryDigest([...reported.values()]));
    expect(differingBuckets(first.payload, second.payload)).toEqual([digestBucket(VMS.running.uuid)]);
  });

  it("is not sent to a control plane that did not announce `digest`", async () => {
    const { rec, inv } = reporter([]);
    await inv.fullSync();
    await inv.digestNow();
    expect(rec.sent.filter((m) => m.type === "inventory.digest")).toEqual([]);
  });
});

describe("scoped resync", () => {
  it("answers VM ids and buckets with an inventory complete for that scope, syncId the asking frame's id", async () => {
    const { libvirt, rec, inv } = reporter();
    await inv.fullSync();
    const ghost = "99999999-0000-4000-8000-000000000000";
    const scope = { vmIds: [VMS.paused.uuid.toUpperCase(), ghost] };
    await inv.resync("resync-1", scope);
    const answer = rec.of("resync-1-0")[0] as Inventory;
    expect(answer.payload).toEqual({
      syncId: "resync-1",
      seq: 0,
      done: true,
      scope,
      vms: [expect.objectContaining({ uuid: VMS.paused.uuid, state: "PAUSED" })],
    });

    // Buckets: every VM whose UUID starts with that hex digit (the whole fixture starts with 1), none for another.
    const all = (await libvirt.listDomains()).map((v) => v.uuid).sort();
    await inv.resync("resync-2", { buckets: ["1"] });
    expect(
      vmsOf(rec.of("resync-2-0"))
        .map((v) => v.uuid)
        .sort(),
    ).toEqual(all);
    await inv.resync("resync-3", { buckets: ["a", "b"] });
    expect(rec.of("resync-3-0")[0].payload).toMatchObject({ syncId: "resync-3", done: true, vms: [] });
    expect(inScope({ buckets: ["1"] }, VMS.paused.uuid)).toBe(true);

    // Without a scope it is the full inventory, as before.
    const before = rec.sent.length;
    await inv.resync("resync-4", {});
    const full = rec.sent.slice(before).filter((m): m is Inventory => m.type === "inventory");
    expect(full).toHaveLength(1);
    expect(full[0].payload.scope).toBeUndefined();
    expect(full[0].payload.vms).toHaveLength(8);
  });
});

describe("the agent process and what the control plane announced", () => {
  async function run(features: string[] | undefined) {
    const cp = await LoopbackControlPlane.start();
    cleanups.push(() => cp.close());
    cp.features = features;
    cp.joinTokens.set("join", "cred");
    const agent = spawnAgentProcess([
      "--server",
      cp.url,
      "--token",
      "join",
      "--state-dir",
      tempDir(),
      "--libvirt-uri",
      TEST_URI,
      "--log-dir",
      tempDir(),
      "--poll-interval",
      "200",
      "--digest-interval",
      "1000",
      "--progress-interval",
      "100",
      "--log-level",
      "warn",
    ]);
    cleanups.push(agent.kill);
    return { cp, agent };
  }

  it("hello announces the agent's features; digests every --digest-interval match the inventory; a scoped resync is answered", async () => {
    const { cp } = await run([...WIRE_FEATURES]);
    const hello = await cp.waitFor((m) => m.type === "hello");
    expect(hello.payload).toMatchObject({ features: [...WIRE_FEATURES] });
    const inv = await cp.waitFor((m): m is Inventory => m.type === "inventory");
    await until(() => cp.received.filter((m) => m.type === "inventory.digest").length >= 2, 15_000);
    const digests = cp.received.filter((m): m is Digest => m.type === "inventory.digest");
    for (const d of digests) expect(d.payload).toEqual(inventoryDigest(inv.payload.vms));

    cp.send({ type: "resync", id: "rs-1", payload: { vmIds: [VMS.shutoff.uuid] } });
    const scoped = (await cp.waitFor((m) => m.type === "inventory" && m.payload.syncId === "rs-1")) as Inventory;
    expect(scoped.payload).toMatchObject({
      done: true,
      scope: { vmIds: [VMS.shutoff.uuid] },
      vms: [expect.objectContaining({ uuid: VMS.shutoff.uuid })],
    });
  });

  it("a control plane that announced nothing gets no digest, and its old-style resync still works", async () => {
    const { cp } = await run(undefined);
    await cp.waitFor((m) => m.type === "inventory");
    await new Promise((r) => setTimeout(r, 2_500)); // two digest intervals
    expect(cp.received.filter((m) => m.type === "inventory.digest")).toEqual([]);
    cp.send({ type: "resync", id: "rs-old", payload: {} });
    await until(() => cp.received.filter((m) => m.type === "inventory").length === 2);
  });
});
