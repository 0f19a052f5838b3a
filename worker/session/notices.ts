// What a node's session tells the notification outbox (node online/offline, stuck and repaired VMs,
// flags raised by a report). Each call returns at once: the queueing runs after the work that raised
// it, and a notification can never fail that work.
import { notifyInventoryFlags, notifyNodeLiveness, notifyRepairedVm, notifyStuckVm } from "../notifications/notify.ts";

export type SessionNotices = ReturnType<typeof sessionNotices>;

export function sessionNotices(env: Env, waitUntil: (work: Promise<unknown>) => void) {
  return {
    nodeLiveness(nodeId: string, online: boolean, message: string): void {
      waitUntil(notifyNodeLiveness(env, nodeId, online, message));
    },
    stuck(nodeId: string, vm: Parameters<typeof notifyStuckVm>[2], now: number): void {
      waitUntil(notifyStuckVm(env, nodeId, vm, now));
    },
    repaired(stuck: Parameters<typeof notifyRepairedVm>[1], observed: Parameters<typeof notifyRepairedVm>[2]): void {
      waitUntil(notifyRepairedVm(env, stuck, observed));
    },
    inventoryFlags(nodeId: string, found: Parameters<typeof notifyInventoryFlags>[2]): void {
      waitUntil(notifyInventoryFlags(env, nodeId, found));
    },
  };
}
