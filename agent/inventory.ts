// The host's domains as the control plane knows them: a full inventory after every (re)connect
// (chunked), then polling (the binding has no events) and sending only the differences.
import { randomUUID } from "node:crypto";
import { INVENTORY_CHUNK, type AgentMessage, type VmInfo } from "../protocol/wire.ts";
import type { Libvirt } from "./libvirt.ts";
import type { Logger } from "./logger.ts";

export type Send = (msg: AgentMessage) => boolean;

const sameVm = (a: VmInfo, b: VmInfo) =>
  a.name === b.name && a.libvirtState === b.libvirtState && a.state === b.state && a.vcpus === b.vcpus && a.memoryMiB === b.memoryMiB;

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

export class InventoryReporter {
  private readonly libvirt: Libvirt;
  private readonly send: Send;
  private readonly log: Logger;
  private readonly pollMs: number;
  private reported = new Map<string, VmInfo>();
  private timer: NodeJS.Timeout | null = null;
  private busy: Promise<void> | null = null;
  private again = false;
  private fullSyncDue = false;

  constructor(opts: { libvirt: Libvirt; send: Send; log: Logger; pollMs: number }) {
    this.libvirt = opts.libvirt;
    this.send = opts.send;
    this.log = opts.log;
    this.pollMs = opts.pollMs;
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

  startPolling() {
    if (this.timer) return;
    const tick = () => {
      this.runOnce().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, this.pollMs);
      });
    };
    this.timer = setTimeout(tick, this.pollMs);
  }

  stopPolling() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
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
    if (this.fullSyncDue) {
      const syncId = randomUUID();
      const parts = vms.length ? chunk(vms, INVENTORY_CHUNK) : [[]];
      let delivered = true;
      parts.forEach((part, seq) => {
        delivered &&= this.send({ type: "inventory", id: `${syncId.slice(0, 8)}-${seq}`, payload: { syncId, seq, done: seq === parts.length - 1, vms: part } });
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
      const part = { vms: changed.slice(i * INVENTORY_CHUNK, (i + 1) * INVENTORY_CHUNK), removed: removed.slice(i * INVENTORY_CHUNK, (i + 1) * INVENTORY_CHUNK) };
      if (!this.send({ type: "vm.changed", id: randomUUID().slice(0, 18), payload: part })) return; // resent after the next full sync
      for (const vm of part.vms) this.reported.set(vm.uuid, vm);
      for (const uuid of part.removed) this.reported.delete(uuid);
    }
    this.log.debug({ changed: changed.length, removed: removed.length }, "vm changes sent");
  }
}
