// reset_state, the use case: ask the hypervisor for a stuck VM's real state and adopt it (unless the
// VM changed meanwhile), say what the hypervisor said when it answered with an error, or set STOPPED
// when forced or when the node can't answer (then checked with the hypervisor); one guarded write
// (state, generation, event); the event's log excerpt rides on the state answer, or comes after.
import { eq } from "drizzle-orm";
import type { ResetStateResponse } from "../../protocol/rest.ts";
import { EXCERPT_LINES, lastLines } from "../../protocol/log-excerpt.ts";
import { mapLibvirtState, type VmState } from "../../protocol/wire.ts";
import { sessionSettings } from "../config.ts";
import type { Statement } from "../db/batch.ts";
import { database, type Database } from "../db/client.ts";
import { nodes, vmEvents, type VmRecord } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { loadSnapshot } from "../last-known-log.ts";
import {
  askVmState,
  queryRowStatements,
  readLogThroughNode,
  verifyWrittenState,
  writeQueryRow,
} from "../session/calls.ts";
import type { StateOutcome } from "../session/dispatch.ts";
import { markRemoved } from "../inventory.ts";
import { AS_STORED, writeVmState, type StateWritten } from "../vm-state.ts";
import { nodeColumns, nodeView } from "../views.ts";
import { homeOf, loadVmOnNode, rememberHome } from "./lookup.ts";

export type ResetRequest = { id: string; force: boolean; reason: string | null; actor: string };
/** Work that goes on after the answer (the Worker's ctx.waitUntil). */
export type Background = (work: Promise<void>) => void;

type Observed = {
  source: "hypervisor";
  to: VmState;
  libvirtState: string;
  message: string;
  logExcerpt?: string | null;
};
type Change = Observed | { source: "forced"; to: "STOPPED"; message: string };

const forced = (why: string): Change => ({ source: "forced", to: "STOPPED", message: `state set to STOPPED: ${why}` });

type Answered = Extract<StateOutcome, { status: "done" }>;
type Unanswered = Exclude<StateOutcome, { status: "done" }>;

/** The state the hypervisor reported, as a reset's change. */
function hypervisorChange(outcome: Answered): Observed {
  const { libvirtState, logExcerpt } = outcome.result;
  const to = mapLibvirtState(libvirtState);
  return {
    source: "hypervisor",
    to,
    libvirtState,
    message: `state read from the hypervisor: libvirt ${libvirtState} -> ${to}`,
    logExcerpt,
  };
}

/** Failures that mean the node gave no answer (gone, silent, too late): only these force STOPPED. */
const NO_ANSWER = new Set(["node_offline", "agent_disconnected", "agent_timeout", "session_lost", "expired"]);

/** Why the node could not say: the forced change that stands in for its answer. */
function unanswered(outcome: Unanswered, queryMs: number): Change {
  const { code, message } = outcome.error;
  if (code === "node_offline" || code === "agent_disconnected") return forced(`node offline (${message})`);
  return forced(`node did not answer within ${Math.round(queryMs / 100) / 10} s (${code}: ${message})`);
}

/** The node answered, but with an error: what the hypervisor (or the agent) said is the answer,
 *  nothing is forced. A domain the host no longer has marks the VM missing. */
async function agentSaidNo(
  db: Database,
  vm: { id: string; name: string },
  nodeId: string,
  outcome: Unanswered,
  actor: string,
): Promise<never> {
  const { code, message } = outcome.error;
  if (code === "vm_not_found") {
    await markRemoved(db, nodeId, [vm.id], actor);
    throw new ApiError(
      404,
      "vm_not_found",
      `the hypervisor has no domain ${vm.name} (${message}); the VM is marked missing, nothing was forced`,
    );
  }
  if (code === "libvirt_error")
    throw new ApiError(
      502,
      "hypervisor_error",
      `libvirt could not read the state of ${vm.name}: ${message}; nothing was forced`,
    );
  throw new ApiError(
    502,
    "agent_error",
    `the node's agent could not read the state of ${vm.name} (${code}: ${message}); nothing was forced`,
  );
}

type ResetEvent = {
  actor: string;
  action: string;
  toState: string;
  source: string;
  message: string;
  reason: string | null;
  expectedState: string;
};

/** The hypervisor's answer, written only if nobody changed the VM's state since it was asked
 *  (`askedAt`) and it is still on that node. */
function writeAnswer(
  db: Database,
  vmId: string,
  nodeId: string,
  askedAt: number,
  change: Observed,
  event: ResetEvent,
  query: Statement[],
) {
  const observed = { ...event, observedState: change.to, logExcerpt: change.logExcerpt ?? null };
  return writeVmState(
    db,
    { vmId, nodeId, unchangedSince: askedAt },
    { state: change.to, libvirtState: change.libvirtState, forcedResetAt: null },
    observed,
    query,
  );
}

const eventOf = (change: Change, r: ResetRequest): ResetEvent => ({
  actor: r.actor,
  action: "reset_state",
  toState: change.to,
  source: change.source,
  message: change.message,
  reason: r.reason,
  expectedState: AS_STORED,
});

export async function resetVmState(env: Env, background: Background, r: ResetRequest): Promise<ResetStateResponse> {
  const db = database(env.DB);
  const settings = sessionSettings(env);
  const id = r.id.toLowerCase();
  const askState = (vm: Pick<VmRecord, "id" | "name">, nodeId: string) =>
    askVmState(env, { ...vm, nodeId }, r.actor, EXCERPT_LINES);
  const answer = (change: Change, done: StateWritten): ResetStateResponse => {
    // Without the excerpt in the answer it comes after answering: a reset never waits for a log read.
    const excerpt = change.source === "hypervisor" ? change.logExcerpt : undefined;
    if (typeof excerpt !== "string") {
      const from = change.source === "forced" ? "node" : excerpt === null ? "snapshot" : "answered-node";
      background(attachLogExcerpt(env, done.vm, done.eventId, r.actor, from));
    }
    // A forced STOPPED is the control plane's word, not the hypervisor's: checked with it at once
    // when the node is connected (else its next inventory settles it); never acted on.
    if (change.source === "forced" && done.vm.nodeId) background(verifyWrittenState(env, done.vm.nodeId, done.vm.id));
    rememberHome(done.vm);
    const vm = { id: done.vm.id, name: done.vm.name, state: done.vm.state as VmState, node_id: done.vm.nodeId };
    return {
      success: true,
      message: change.message,
      vm,
      previousState: done.previousState as VmState,
      source: change.source,
    };
  };
  /** Asks the node and writes its answer, with the query's request row in the same batch (the row
   *  alone when the node gave no answer, or when the VM changed meanwhile: then done is null). */
  const askAndWrite = async (vm: { id: string; name: string }, nodeId: string) => {
    const askedAt = Date.now();
    const outcome = await askState(vm, nodeId);
    if (outcome.status !== "done") {
      background(writeQueryRow(env, outcome));
      return { outcome, done: null };
    }
    const change = hypervisorChange(outcome);
    const query = queryRowStatements(outcome);
    return { outcome, change, done: await writeAnswer(db, vm.id, nodeId, askedAt, change, eventOf(change, r), query) };
  };

  // The common case, when this isolate has seen the VM lately: ask its node at once, and write only
  // if the VM is still on that node and unchanged since. Anything else goes on below, reading D1 first.
  let asked: { nodeId: string; outcome: Unanswered } | null = null;
  const home = r.force ? null : homeOf(id);
  if (home) {
    const first = await askAndWrite({ id, name: home.name }, home.nodeId);
    if (first.change && first.done) return answer(first.change, first.done);
    if (first.outcome.status !== "done") {
      if (!NO_ANSWER.has(first.outcome.error.code))
        return agentSaidNo(db, { id, name: home.name }, home.nodeId, first.outcome, r.actor);
      asked = { nodeId: home.nodeId, outcome: first.outcome };
    }
  }

  const { vm, online } = await loadVmOnNode(settings, db, id);
  let change: Change;
  if (r.force) change = forced("forced by request");
  else if (!vm.nodeId) change = forced("the VM is on no node");
  else if (!online) change = forced("node offline");
  else {
    // Its node was asked just now (above) and gave no answer: that stands, it is not asked twice.
    // An answer that lost to a change made meanwhile is asked for again, once.
    if (asked?.nodeId === vm.nodeId) change = unanswered(asked.outcome, settings.queryMs);
    else {
      const again = await askAndWrite(vm, vm.nodeId);
      if (again.change && again.done) return answer(again.change, again.done);
      if (again.outcome.status !== "done") {
        if (!NO_ANSWER.has(again.outcome.error.code)) return agentSaidNo(db, vm, vm.nodeId, again.outcome, r.actor);
        change = unanswered(again.outcome, settings.queryMs);
      } else {
        const now = await loadVmOnNode(settings, db, id);
        throw new ApiError(
          409,
          "conflict",
          `VM ${vm.name} changed while the hypervisor was being asked (it was ${vm.state}, it is now ${now.vm.state}` +
            `${now.vm.nodeId !== vm.nodeId ? ", on another node" : ""}); the hypervisor's older answer was not written: read it again and retry`,
        );
      }
    }
  }
  // A forced change is written only against the VM as it was read.
  const done = await writeVmState(
    db,
    { vmId: vm.id, generation: vm.generation },
    { state: "STOPPED", forcedResetAt: Date.now() },
    { ...eventOf(change, r), observedState: null },
  );
  if (done) return answer(change, done);
  throw new ApiError(
    409,
    "conflict",
    `VM ${vm.name} changed during reset_state (it was ${vm.state}); read it again and retry`,
  );
}

/** Runs after a reset has answered when its answer did not carry the excerpt: reads the VM's last
 *  lines from its node, or takes them from the last-known log, and stores them on the reset's event.
 *  Never throws. `from`:
 *  - "node": ask the node if D1 says it is online (a forced reset), else the last-known log;
 *  - "answered-node": its agent answered this reset just now but said nothing of the log (an agent
 *    from before the excerpt rode on vm.state): ask it without asking D1 first;
 *  - "snapshot": the node has no log to read now; the last-known log is what there is. */
async function attachLogExcerpt(
  env: Env,
  vm: VmRecord,
  eventId: number,
  actor: string,
  from: "node" | "answered-node" | "snapshot",
): Promise<void> {
  try {
    const db = database(env.DB);
    let excerpt: string | null = null;
    if (vm.nodeId && from !== "snapshot") {
      const node =
        from === "answered-node" ? null : await db.select(nodeColumns).from(nodes).where(eq(nodes.id, vm.nodeId)).get();
      if (from === "answered-node" || (node && nodeView(node, 0, sessionSettings(env).nodeStaleAfterMs).connected)) {
        const outcome = await readLogThroughNode(env, { ...vm, nodeId: vm.nodeId }, EXCERPT_LINES, actor);
        await writeQueryRow(env, outcome);
        if (outcome.status === "done") excerpt = lastLines(outcome.text);
      }
    }
    if (excerpt === null) {
      const snapshot = await loadSnapshot(db, vm.id);
      if (snapshot) excerpt = lastLines(snapshot.qemuLog);
    }
    if (excerpt !== null) await db.update(vmEvents).set({ logExcerpt: excerpt }).where(eq(vmEvents.id, eventId));
  } catch (err) {
    console.error("could not attach a log excerpt to reset event", eventId, err);
  }
}
