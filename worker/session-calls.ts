// Calls from the Worker into a node's NodeSession for queries (vm.state, vm.logs): the queued
// request row first, then the RPC, with a broken RPC reported as a lost answer.
import type { Database } from "./db/client.ts";
import { newId } from "./auth.ts";
import { sessionSettings } from "./config.ts";
import { requests } from "./db/schema.ts";
import type { Outcome } from "./node-session.ts";
import type { VmRow } from "./vm-state.ts";

/** The node's NodeSession stub (one Durable Object per node id). */
export const nodeSession = (env: Env, nodeId: string) => env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId));

/** Inserts the queued request row for a query command (vm.state / vm.logs). */
export async function queueQuery(env: Env, db: Database, vm: VmRow, kind: "vm.state" | "vm.logs", params: Record<string, unknown>, actor: string) {
  const id = newId();
  const now = Date.now();
  await db.insert(requests).values({
    id,
    kind,
    vmId: vm.id,
    nodeId: vm.nodeId,
    params: JSON.stringify(params),
    status: "queued",
    deadlineAt: now + sessionSettings(env).queryMs,
    requestedBy: actor,
    createdAt: now,
  });
  return id;
}

/** Calls the node's session; an RPC that breaks (object evicted or reset mid-wait) is reported as
 *  a lost answer: the object's alarm still closes the request row truthfully. */
export async function callSession(env: Env, nodeId: string, run: (s: ReturnType<typeof nodeSession>) => Promise<Outcome>): Promise<Outcome> {
  try {
    return await run(nodeSession(env, nodeId));
  } catch (err) {
    console.error("node session call failed", err);
    return { status: "failed", error: { code: "session_lost", message: "lost contact with the node's session before it answered" } };
  }
}

/** Reads the last `lines` of the VM's log through its node (the VM must be on a node). */
export async function readVmLog(env: Env, db: Database, vm: VmRow & { nodeId: string }, lines: number, actor: string): Promise<Outcome> {
  const requestId = await queueQuery(env, db, vm, "vm.logs", { lines }, actor);
  return callSession(env, vm.nodeId, (s) => s.dispatch({ id: requestId, kind: "vm.logs", vmId: vm.id, name: vm.name, lines, wait: true }));
}
