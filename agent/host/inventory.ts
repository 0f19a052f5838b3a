// The host's domains as the control plane knows them: a full inventory after every (re)connect
// (chunked), then polling (the safety net beside libvirt's lifecycle events, which ask for a look at
// once) and sending only the differences; every digest interval a digest of all it reported
// (anti-entropy), and a scoped inventory of the VMs or digest buckets the control plane asks about.
import { randomUUID } from "node:crypto";
import { digestBucket, inventoryDigest } from "../../protocol/digest.ts";
import type { AgentMessage, InventoryScope, VmInfo, WireFeature } from "../../protocol/wire.ts";
import { INVENTORY_CHUNK } from "../../protocol/wire-constants.ts";
import type { Libvirt } from "./libvirt.ts";
import type { Logger } from "../logger.ts";

export type Send = (msg: AgentMessage) => boolean;

const sameVm = (a: VmInfo, b: VmInfo) =>
  a.name === b.name &&
  a.libvirtState === b.libvirtState &&
  a.state === b.state &&
  a.vcpus === b.vcpus &&
  a.memoryMiB === b.memoryMiB;

/** What changed between two reports: new or different VMs, and the UUIDs that are gone. */
export function diffInventory(before: Map<string, VmInfo>, now: VmInfo[]): { vms: VmInfo[]; removed: string[] } {
  const seen = new Set<string>();
  const vms: VmInfo[] = [];
  for (const vm of now) {
    seen.add(vm.uuid);
    const old = before.get(vm.uuid);
    if (!old || !sameVm(old, vm)) vms.push(vm);
  }
  const removed = [...before.keys()].filter((uuid) => !seen.has(uuid));
  return { vms, removed };
}

const chunk = <T>(items: T[], size: number): T[][] => {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
};

/** Whether a VM falls in a scoped resync's scope. */
export function inScope(scope: InventoryScope, uuid: string): boolean {
  return !!(scope.vmIds?.some((id) => id.toLowerCase() === uuid) || scope.buckets?.includes(digestBucket(uuid)));
}

export type InventoryReporterOptions = {
  libvirt: Libvirt;
  send: Send;
  log: Logger;
  pollMs: number;
  /** how often the digest is sent while polling (default 60 s) */
  digestIntervalMs?: number;
  /** the features the control plane announced: the digest goes only to one that announced `digest` */
  peerFeatures?: () => ReadonlySet<string>;
};

export class InventoryReporter {
  private readonly libvirt: Libvirt;
  private readonly send: Send;
  private readonly log: Logger;
  private readonly pollMs: number;
  private readonly digestIntervalMs: number;
  private readonly peerFeatures: () => ReadonlySet<string>;
  // What the control plane was last told: one entry per domain libvirt lists, replaced each poll.
  private reported = new Map<string, VmInfo>();

  /** Domains held as reported (the soak bench's debug counts). */
  get reportedCount(): number {
    return this.reported.size;
  }
  private timer: NodeJS.Timeout | null = null;
  private digestTimer: NodeJS.Timeout | null = null;
  private busy: Promise<void> | null = null;
  private again = false;
  private fullSyncDue = false;
  private digestDue = false;
  /** scoped resyncs to answer at the next pass, with the id of the frame that asked */
  private scopes: { id: string; scope: InventoryScope }[] = [];

  constructor(opts: InventoryReporterOptions) {
    this.libvirt = opts.libvirt;
    this.send = opts.send;
    this.log = opts.log;
    this.pollMs = opts.pollMs;
    this.digestIntervalMs = opts.digestIntervalMs ?? 60_000;
    this.peerFeatures = opts.peerFeatures ?? (() => new Set());
  }

  /** After a (re)connect or a resync command: everything, whatever was sent before. */
  fullSync(): Promise<void> {
    this.fullSyncDue = true;
    return this.runOnce();
  }

  /** Look now (e.g. right after a power action) instead of at the next tick. */
  pollNow(): Promise<void> {
    return this.runOnce();
  }

  /** A `resync` frame: the whole inventory, or (with vmIds / buckets) only that scope. */
  resync(id: string, scope: InventoryScope): Promise<void> {
    if (!scope.vmIds?.length && !scope.buckets?.length) return this.fullSync();
    this.scopes.push({ id, scope });
    return this.runOnce();
  }

  /** Look at libvirt, send what changed, then the digest of everything reported. */
  digestNow(): Promise<void> {
    this.digestDue = true;
    return this.runOnce();
  }

  startPolling() {
    if (this.timer) return;
    const tick = () => {
      // runOnce does not reject: a failed pass is logged inside it.
      void this.runOnce().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, this.pollMs);
      });
    };
    this.timer = setTimeout(tick, this.pollMs);
    const digestTick = () => {
      void this.digestNow().finally(() => {
        if (this.digestTimer) this.digestTimer = setTimeout(digestTick, this.digestIntervalMs);
      });
    };
    this.digestTimer = setTimeout(digestTick, this.digestIntervalMs);
  }

  stopPolling() {
    if (this.timer) clearTimeout(this.timer);
    if (this.digestTimer) clearTimeout(this.digestTimer);
    this.timer = this.digestTimer = null;
  }

  /** One pass at a time; a request during a pass runs one more pass after it. */
  private runOnce(): Promise<void> {
    if (this.busy) {
      this.again = true;
      return this.busy;
    }
    this.busy = (async () => {
      do {
        this.again = false;
        await this.pass().catch((err) => this.log.warn({ err: (err as Error).message }, "inventory poll failed"));
      } while (this.again);
    })().finally(() => (this.busy = null));
    return this.busy;
  }

  private async pass() {
    const vms = await this.libvirt.listDomains();
    this.sendChanges(vms);
    this.answerScopes(vms);
    if (this.digestDue && !this.fullSyncDue) {
      this.digestDue = false;
      this.sendDigest();
    }
  }

  private sendChanges(vms: VmInfo[]) {
    if (this.fullSyncDue) {
      const syncId = randomUUID();
      const parts = vms.length ? chunk(vms, INVENTORY_CHUNK) : [[]];
      let delivered = true;
      parts.forEach((part, seq) => {
        delivered &&= this.send({
          type: "inventory",
          id: `${syncId.slice(0, 8)}-${seq}`,
          payload: { syncId, seq, done: seq === parts.length - 1, vms: part },
        });
      });
      if (!delivered) return; // link went down: the next connect sends it all again
      this.fullSyncDue = false;
      this.reported = new Map(vms.map((v) => [v.uuid, v]));
      this.log.info({ vms: vms.length, frames: parts.length }, "inventory sent");
      return;
    }
    const { vms: changed, removed } = diffInventory(this.reported, vms);
    if (!changed.length && !removed.length) return;
    const rounds = Math.max(Math.ceil(changed.length / INVENTORY_CHUNK), Math.ceil(removed.length / INVENTORY_CHUNK));
    for (let i = 0; i < rounds; i++) {
      const part = {
        vms: changed.slice(i * INVENTORY_CHUNK, (i + 1) * INVENTORY_CHUNK),
        removed: removed.slice(i * INVENTORY_CHUNK, (i + 1) * INVENTORY_CHUNK),
      };
      if (!this.send({ type: "vm.changed", id: randomUUID().slice(0, 18), payload: part })) return; // resent after the next full sync
      for (const vm of part.vms) this.reported.set(vm.uuid, vm);
      for (const uuid of part.removed) this.reported.delete(uuid);
    }
    this.log.debug({ changed: changed.length, removed: removed.length }, "vm changes sent");
  }

  /** Each scoped resync: an inventory complete for its scope, `syncId` the asking frame's id. */
  private answerScopes(vms: VmInfo[]) {
    for (const { id, scope } of this.scopes.splice(0)) {
      const part = vms.filter((v) => inScope(scope, v.uuid));
      const parts = part.length ? chunk(part, INVENTORY_CHUNK) : [[]];
      let delivered = true;
      parts.forEach((p, seq) => {
        delivered &&= this.send({
          type: "inventory",
          id: `${id.slice(0, 40)}-${seq}`,
          payload: { syncId: id, seq, done: seq === parts.length - 1, vms: p, scope },
        });
      });
      if (!delivered) return; // link down: the next connect's full sync covers it
      for (const uuid of [...this.reported.keys()]) if (inScope(scope, uuid)) this.reported.delete(uuid);
      for (const vm of part) this.reported.set(vm.uuid, vm);
      this.log.info({ resyncId: id, vms: part.length }, "scoped inventory sent");
    }
  }

  /** The digest of what was reported (so far as the link took it), to a control plane that asked for digests. */
  private sendDigest() {
    if (!this.peerFeatures().has("digest" satisfies WireFeature)) return;
    const digest = inventoryDigest([...this.reported.values()]);
    this.send({ type: "inventory.digest", id: `digest-${randomUUID().slice(0, 12)}`, payload: digest });
  }
}
