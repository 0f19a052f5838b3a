// Queues notifications: one delivery row per subscribed target, then a nudge to that target's
// outbox. The functions here are what the rest of the control plane calls; none of them throws
// (a notification must never break the work that raised it).
import { eq, isNull, sql } from "drizzle-orm";
import { database } from "../db/client.ts";
import { nodes, notificationDeliveries, notificationTargets, vms } from "../db/schema.ts";
import { renderBody, type Named, type NotificationEvent, type NotificationFormat } from "./payload.ts";

export type Notice = {
  event: NotificationEvent;
  nodeId?: string | null;
  vmId?: string | null;
  message: string;
  /** once per target for this key (e.g. one stuck transition), however often it is raised */
  dedupeKey?: string;
};

/** Starts delivery of the target's due rows (its outbox is one Durable Object per target). */
export async function wakeOutbox(env: Env, targetId: string): Promise<void> {
  await env.NOTIFICATION_OUTBOX.get(env.NOTIFICATION_OUTBOX.idFromName(targetId)).wake(targetId);
}

async function names(
  env: Env,
  nodeId: string | null | undefined,
  vmId: string | null | undefined,
): Promise<{ node: Named; vm: Named }> {
  const db = database(env.DB);
  const vm = vmId
    ? ((await db.select({ id: vms.id, name: vms.name, nodeId: vms.nodeId }).from(vms).where(eq(vms.id, vmId)).get()) ??
      null)
    : null;
  const nid = nodeId ?? vm?.nodeId ?? null;
  const node = nid
    ? ((await db.select({ id: nodes.id, name: nodes.name }).from(nodes).where(eq(nodes.id, nid)).get()) ?? {
        id: nid,
        name: nid,
      })
    : null;
  return { node, vm: vm ? { id: vm.id, name: vm.name } : vmId ? { id: vmId, name: vmId } : null };
}

/** Queues `notice` for every target subscribed to its event. */
export async function notify(env: Env, notice: Notice): Promise<void> {
  try {
    const db = database(env.DB);
    const targets = (await db.select().from(notificationTargets).where(isNull(notificationTargets.deletedAt))).filter(
      (t) => (JSON.parse(t.events) as string[]).includes(notice.event),
    );
    if (targets.length === 0) return;
    const { node, vm } = await names(env, notice.nodeId, notice.vmId);
    const now = Date.now();
    const at = new Date(now).toISOString();
    const queued: string[] = [];
    for (const t of targets) {
      const id = crypto.randomUUID();
      const body = renderBody(t.format as NotificationFormat, {
        id,
        event: notice.event,
        at,
        node,
        vm,
        message: notice.message,
      });
      const inserted = await db
        .insert(notificationDeliveries)
        .values({
          id,
          targetId: t.id,
          event: notice.event,
          body,
          dedupeKey: notice.dedupeKey ?? null,
          status: "pending",
          nextAttemptAt: now,
          createdAt: now,
        })
        .onConflictDoNothing()
        .returning({ id: notificationDeliveries.id });
      if (inserted.length) queued.push(t.id);
    }
    await Promise.all(queued.map((targetId) => wakeOutbox(env, targetId)));
  } catch (err) {
    console.error(`notification ${notice.event} not queued`, err);
  }
}

// A node's liveness changes are told in the order they happened: a link that drops and comes back
// within milliseconds must not end as "offline" because the two writes crossed. One chain per node,
// in the isolate that runs the node's session.
// Bound: one entry per node with a liveness notice still being told; deleted when its chain ends.
const livenessChains = new Map<string, Promise<void>>();

/** Nodes with a liveness notice still being told (the debug counts of a local soak run). */
export const livenessChainsSize = (): number => livenessChains.size;

/** `node.online` / `node.offline`, only when that differs from what targets were last told (a
 *  connection replacing a live one is no news). */
export function notifyNodeLiveness(
  env: Env,
  nodeId: string | null | undefined,
  online: boolean,
  message: string,
): Promise<void> {
  if (!nodeId) return Promise.resolve();
  const at = Date.now();
  const next = (livenessChains.get(nodeId) ?? Promise.resolve()).then(() =>
    tellLiveness(env, nodeId, online, message, at),
  );
  livenessChains.set(nodeId, next);
  void next.then(() => {
    if (livenessChains.get(nodeId) === next) livenessChains.delete(nodeId);
  });
  return next;
}

async function tellLiveness(env: Env, nodeId: string, online: boolean, message: string, at: number): Promise<void> {
  try {
    const changed = await env.DB.prepare(
      `INSERT INTO notification_node_status (node_id, online, at) VALUES (?1, ?2, ?3)
       ON CONFLICT (node_id) DO UPDATE SET online = excluded.online, at = excluded.at WHERE notification_node_status.online != excluded.online
       RETURNING node_id`,
    )
      .bind(nodeId, online ? 1 : 0, at)
      .all();
    if (changed.results.length) await notify(env, { event: online ? "node.online" : "node.offline", nodeId, message });
  } catch (err) {
    console.error("node liveness notification not queued", err);
  }
}

/** `vm.stuck`: the reconciler found `vm` in a transition too long, with nothing in flight (once per
 *  transition, however many passes find it). */
export function notifyStuckVm(
  env: Env,
  nodeId: string | null,
  vm: { id: string; name: string; state: string; stateUpdatedAt: number; transitionRequestId: string | null },
  now = Date.now(),
  next = "asking the hypervisor",
) {
  const seconds = Math.round((now - vm.stateUpdatedAt) / 1000);
  const message = `${vm.name} has been ${vm.state} for ${seconds} s with no request in flight; ${next}`;
  return notify(env, {
    event: "vm.stuck",
    nodeId,
    vmId: vm.id,
    message,
    dedupeKey: `stuck:${vm.id}:${vm.transitionRequestId}`,
  });
}

/** `vm.repaired`: the reconciler adopted the hypervisor's state for a stuck VM. */
export function notifyRepairedVm(
  env: Env,
  stuck: { vmId: string; expectedState: string },
  observed: { state: string; libvirtState: string },
) {
  const message = `repaired by the reconciler: stuck in ${stuck.expectedState}, the hypervisor reports ${observed.state} (libvirt ${observed.libvirtState})`;
  return notify(env, { event: "vm.repaired", vmId: stuck.vmId, message });
}

/** `vm.flagged` for what an inventory report raised: VMs flagged by the upsert, and UUIDs another
 *  node holds (once per VM and reporting node). */
export async function notifyInventoryFlags(
  env: Env,
  nodeId: string,
  found: { flagged?: { vmId: string; message: string }[]; foreign?: string[] },
): Promise<void> {
  for (const f of found.flagged ?? [])
    await notify(env, { event: "vm.flagged", nodeId, vmId: f.vmId, message: f.message });
  for (const vmId of found.foreign ?? []) {
    await notify(env, {
      event: "vm.flagged",
      nodeId,
      vmId,
      message: `UUID conflict: this node reports a domain whose UUID belongs to a VM of another node; the report was ignored`,
      dedupeKey: `uuid_conflict:${vmId}:${nodeId}`,
    });
  }
}

/** Rows still waiting for a target that is gone are cancelled, so nothing more is sent to it. */
export function cancelPending(env: Env, targetId: string) {
  return database(env.DB)
    .update(notificationDeliveries)
    .set({ status: "cancelled", nextAttemptAt: null })
    .where(sql`${notificationDeliveries.targetId} = ${targetId} AND ${notificationDeliveries.status} = 'pending'`);
}
