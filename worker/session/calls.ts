// Calls from the Worker into a node's NodeSession for queries (vm.state, vm.logs), with a broken RPC
// reported as a lost answer; the reconciler's queued request rows.
import type { Database } from "./db/client.ts";
import { newId } from "./auth.ts";
import { sessionSettings } from "./config.ts";
import { requests } from "./db/schema.ts";
import type { Dispatch, Outcome } from "./node-session.ts";
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

/** Asks the VM's node a query (vm.state / vm.logs) and waits for the outcome. The node's session
 *  writes the request row as it sends the command: one D1 write on the way out instead of two. */
export function askNode(
  env: Env,
  vm: Pick<VmRow, "id" | "name"> & { nodeId: string },
  kind: "vm.state" | "vm.logs",
  params: Record<string, unknown>,
  actor: string,
  opts: Pick<Dispatch, "excerptLines" | "keepAsLastKnown"> = {},
): Promise<Outcome> {
  const newRequest = { nodeId: vm.nodeId, params, requestedBy: actor, createdAt: Date.now() };
  const lines = kind === "vm.logs" ? (params.lines as number) : undefined;
  return callSession(env, vm.nodeId, (s) => s.dispatch({ id: newId(), kind, vmId: vm.id, name: vm.name, lines, wait: true, newRequest, ...opts }));
}

/** Reads the last `lines` of the VM's log through its node (the VM must be on a node); with
 *  `keepAsLastKnown` the answer is also kept as the VM's last-known log. */
export function readVmLog(env: Env, vm: VmRow & { nodeId: string }, lines: number, actor: string, keepAsLastKnown = false): Promise<Outcome> {
  return askNode(env, vm, "vm.logs", { lines }, actor, { keepAsLastKnown });
}
