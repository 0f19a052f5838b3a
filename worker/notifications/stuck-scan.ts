// The once-a-minute look for VMs stuck in a transition, on any node: the reconciler only runs while
// a node's agent is connected, but a VM whose host vanished mid-stop is stuck all the same.
import { sql } from "drizzle-orm";
import { TRANSITIONAL_STATES } from "../../protocol/wire.ts";
import { sessionSettings } from "../config.ts";
import { database } from "../db/client.ts";
import { notifyStuckVm } from "./notify.ts";

/** Stuck VMs reported per run; the rest on the next minute's run. */
const SCAN_LIMIT = 100;

type StuckRow = {
  id: string;
  name: string;
  state: string;
  nodeId: string | null;
  stateUpdatedAt: number;
  transitionRequestId: string | null;
  connected: number | null;
};

/** `vm.stuck` for every VM in a transition past STUCK_AFTER_MS whose request is no longer in flight
 *  (once per transition: the reconciler's own notice for it counts). Returns how many it saw. */
export async function reportStuckVms(env: Env, now = Date.now()): Promise<number> {
  const subscribed = await env.DB.prepare(
    `SELECT 1 FROM notification_targets WHERE deleted_at IS NULL AND events LIKE '%"vm.stuck"%' LIMIT 1`,
  ).first();
  if (!subscribed) return 0;
  const before = now - sessionSettings(env).stuckAfterMs;
  const transitional = TRANSITIONAL_STATES.map((t) => sql`${t}`);
  const rows = await database(env.DB).all<StuckRow>(sql`
    SELECT v.id, v.name, v.state, v.node_id AS nodeId, v.state_updated_at AS stateUpdatedAt,
      v.transition_request_id AS transitionRequestId, n.connected
    FROM vms v LEFT JOIN nodes n ON n.id = v.node_id
    WHERE v.state IN (${sql.join(transitional, sql`, `)}) AND v.transition_request_id IS NOT NULL AND v.missing = 0
      AND v.state_updated_at < ${before}
      AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.id = v.transition_request_id AND r.status IN ('queued', 'sent'))
    ORDER BY v.state_updated_at LIMIT ${SCAN_LIMIT}`);
  for (const vm of rows) {
    const why = vm.connected
      ? "the reconciler will ask the hypervisor"
      : "its node is offline, so nobody can ask the hypervisor: Reset State, or Force Reset State";
    await notifyStuckVm(env, vm.nodeId, vm, now, why);
  }
  return rows.length;
}
