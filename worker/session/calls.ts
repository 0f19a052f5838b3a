// Calls from the Worker into a node's NodeSession (power actions, state queries, log reads), with a
// broken RPC reported as a lost answer.
import type { VmRecord } from "../db/schema.ts";
import { countedCalls } from "../cost-meter.ts";
import { database } from "../db/client.ts";
import { debugCountsEnabled } from "../debug-counts.ts";
import { runBatch, type Statement } from "../db/batch.ts";
import { finishedQueryRow, insertFinishedRow, type AgentFailure, type RequestRow } from "../request-rows.ts";
import {
  failed,
  type LogsOutcome,
  type PowerDispatch,
  type PowerOutcome,
  type QueryDispatch,
  type StateOutcome,
} from "./dispatch.ts";
import type { LocationHint } from "./placement.ts";

/** The node's NodeSession stub (one Durable Object per node id); `near` places a new object (the
 *  agent's own requests pass it: see placement.ts). A local bench with debug counts on counts its calls. */
export const nodeSession = (env: Env, nodeId: string, near?: LocationHint) => {
  const stub = env.NODE_SESSION.get(env.NODE_SESSION.idFromName(nodeId), near ? { locationHint: near } : undefined);
  return debugCountsEnabled(env) ? countedCalls(stub, nodeId) : stub;
};

type Stub = ReturnType<typeof nodeSession>;
type VmOnNode = Pick<VmRecord, "id" | "name"> & { nodeId: string };

/** Calls the node's session; an RPC that breaks (object evicted or reset mid-wait) is reported as
 *  a lost answer: a power action's row is closed by the object's alarm; `lost` closes the row of a
 *  route's query, which the object held in memory only. */
async function callSession<O>(
  env: Env,
  nodeId: string,
  run: (s: Stub) => Promise<O>,
  lost?: (f: AgentFailure) => Promise<void>,
): Promise<O | ReturnType<typeof failed>> {
  try {
    return await run(nodeSession(env, nodeId));
  } catch (err) {
    console.error("node session call failed", err);
    const outcome = failed("session_lost", "lost contact with the node's session before it answered");
    await lost?.(outcome.error).catch((e) =>
      console.error("could not write the row of a query whose session was lost", e),
    );
    return outcome;
  }
}

/** Writes the final row of a route's query that its session lost with its memory. */
const writeLostQuery = (env: Env, d: QueryDispatch) => async (error: AgentFailure) => {
  const now = Date.now();
  const row = finishedQueryRow(
    { ...d.newRequest, id: d.id, kind: d.kind, vmId: d.vmId, deadlineAt: now, sentAt: null },
    { status: "failed", error },
    now,
  );
  await runBatch(database(env.DB), [insertFinishedRow(row)]);
};

const newRequest = (vm: VmOnNode, params: Record<string, unknown>, actor: string) => ({
  nodeId: vm.nodeId,
  params,
  requestedBy: actor,
  createdAt: Date.now(),
});

/** Sends a power action whose request row and VM transition are written already. */
export function sendPowerAction(env: Env, nodeId: string, d: PowerDispatch): Promise<PowerOutcome> {
  return callSession<PowerOutcome>(env, nodeId, (s) => s.power(d));
}

/** The features the node's connected agent announced (none when offline or unreachable). */
export async function agentFeaturesOf(env: Env, nodeId: string): Promise<string[]> {
  try {
    return await nodeSession(env, nodeId).agentFeatures();
  } catch (err) {
    console.error("node session call failed", err);
    return [];
  }
}

/** Has a state the control plane wrote on its own checked with the hypervisor: at once when the
 *  node's agent is connected, else by its next full inventory. Never throws. */
export async function verifyWrittenState(env: Env, nodeId: string, vmId: string): Promise<void> {
  try {
    await nodeSession(env, nodeId).verifyState(vmId);
  } catch (err) {
    console.error("could not have a written state verified", vmId, err);
  }
}

/** The D1 statement that writes a route query's row, final, as its outcome brought it back (none
 *  when the session kept it, or when the call broke and the row of the lost query was written then). */
export const queryRowStatements = (outcome: { row?: RequestRow }): Statement[] =>
  outcome.row ? [insertFinishedRow(outcome.row)] : [];

/** Writes a route query's row, final; for a caller with no D1 write of its own to carry it (often
 *  after answering). Never throws. */
export async function writeQueryRow(env: Env, outcome: { row?: RequestRow }): Promise<void> {
  const statements = queryRowStatements(outcome);
  if (statements.length === 0) return;
  try {
    await runBatch(database(env.DB), statements);
  } catch (err) {
    console.error("could not write a query's request row", outcome.row?.id, err);
  }
}

/** Asks the VM's node for its state and waits for the answer. The request row comes back with the
 *  outcome, final, for the caller to write (queryRowStatements, writeQueryRow): one D1 write, never
 *  two, and none made by the node's session as it answers. With `excerptLines` the answer also
 *  carries the log's last lines. */
export function askVmState(env: Env, vm: VmOnNode, actor: string, excerptLines?: number): Promise<StateOutcome> {
  const d = {
    id: crypto.randomUUID(),
    kind: "vm.state" as const,
    vmId: vm.id,
    name: vm.name,
    newRequest: newRequest(vm, {}, actor),
    ...(excerptLines ? { excerptLines } : {}),
  };
  return callSession<StateOutcome>(env, vm.nodeId, (s) => s.askState(d), writeLostQuery(env, d));
}

/** Reads the last `lines` of the VM's log through its node; with `keepAsLastKnown` the answer is also
 *  kept as the VM's last-known log. The node's session keeps the read's request row with that log;
 *  only a read that never left brings its row back, for the caller to write (writeQueryRow). */
export function readLogThroughNode(
  env: Env,
  vm: VmOnNode,
  lines: number,
  actor: string,
  keepAsLastKnown = false,
): Promise<LogsOutcome> {
  const d = {
    id: crypto.randomUUID(),
    kind: "vm.logs" as const,
    vmId: vm.id,
    name: vm.name,
    lines,
    keepAsLastKnown,
    newRequest: newRequest(vm, { lines }, actor),
  };
  return callSession<LogsOutcome>(env, vm.nodeId, (s) => s.readLog(d), writeLostQuery(env, d));
}
