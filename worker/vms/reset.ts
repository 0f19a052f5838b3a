// reset_state, the use case: ask the hypervisor for a stuck VM's real state and adopt it, or set
// STOPPED when forced or when the node can't answer; one guarded write (state, generation, event);
// the event's log excerpt rides on the state answer, or is attached after answering.
import { eq } from "drizzle-orm";
import type { ResetStateResponse } from "../../protocol/rest.ts";
import { EXCERPT_LINES, lastLines } from "../../protocol/log-excerpt.ts";
import { mapLibvirtState, type VmState } from "../../protocol/wire.ts";
import { sessionSettings } from "../config.ts";
import { database, type Database } from "../db/client.ts";
import { nodes, vmEvents, type VmRecord } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { loadSnapshot } from "../last-known-log.ts";
import { askVmState, readLogThroughNode } from "../session/calls.ts";
import type { StateOutcome } from "../session/dispatch.ts";
import { AS_STORED, writeVmState, type StateWritten } from "../vm-state.ts";
import { nodeView } from "../views.ts";
import { homeOf, loadVmOnNode, rememberHome } from "./lookup.ts";

export type ResetRequest = { id: string; force: boolean; reason: string | null; actor: string };
/** Work that goes on after the answer (the Worker's ctx.waitUntil). */
export type Background = (work: Promise<void>) => void;

type Change =
  | { source: "hypervisor"; to: VmState; libvirtState: string; message: string; logExcerpt?: string | null }
  | { source: "forced"; to: "STOPPED"; message: string };

const forced = (why: string): Change => ({ source: "forced", to: "STOPPED", message: `state set to STOPPED: ${why}` });

type Answered = Extract<StateOutcome, { status: "done" }>;
type Unanswered = Exclude<StateOutcome, { status: "done" }>;

/** The state the hypervisor reported, as a reset's change. */
function hypervisorChange(outcome: Answered): Change {
  const { libvirtState, logExcerpt } = outcome.result;
  const to = mapLibvirtState(libvirtState);
  return { source: "hypervisor", to, libvirtState, message: `state read from the hypervisor: libvirt ${libvirtState} -> ${to}`, logExcerpt };
}

/** Why the node could not say: the forced change that stands in for its answer. */
function unanswered(outcome: Unanswered, queryMs: number): Change {
  const { code, message } = outcome.error;
  if (code === "node_offline" || code === "agent_disconnected") return forced(`node offline (${message})`);
  if (code === "agent_timeout" || code === "session_lost") return forced(`node did not answer within ${Math.round(queryMs / 100) / 10} s`);
  return forced(`the agent could not read the state (${code}: ${message})`);
}

/** The one write of a reset. The hypervisor's answer took time: it is written against the VM as it
 *  is now (on `onNode` when given); a forced change only against the VM as it was read. */
function write(db: Database, vm: Pick<VmRecord, "id" | "generation"> | { id: string }, change: Change, r: ResetRequest, onNode?: string) {
  const event = { actor: r.actor, action: "reset_state", toState: change.to, source: change.source, message: change.message, reason: r.reason, expectedState: AS_STORED };
  if (change.source === "hypervisor") {
    const guard = { vmId: vm.id, ...(onNode ? { nodeId: onNode } : {}) };
    const observed = { ...event, observedState: change.to, logExcerpt: change.logExcerpt ?? null };
    return writeVmState(db, guard, { state: change.to, libvirtState: change.libvirtState, forcedResetAt: null }, observed);
  }
  const generation = "generation" in vm ? vm.generation : undefined;
  return writeVmState(db, { vmId: vm.id, generation }, { state: "STOPPED", forcedResetAt: Date.now() }, { ...event, observedState: null });
}

export async function resetVmState(env: Env, background: Background, r: ResetRequest): Promise<ResetStateResponse> {
  const db = database(env.DB);
  const settings = sessionSettings(env);
  const id = r.id.toLowerCase();
  const askState = (vm: Pick<VmRecord, "id" | "name">, nodeId: string) => askVmState(env, { ...vm, nodeId }, r.actor, EXCERPT_LINES);
  const answer = (change: Change, done: StateWritten): ResetStateResponse => {
    // Without the excerpt in the answer it comes after answering: a reset never waits for a log read.
    const excerpt = change.source === "hypervisor" ? change.logExcerpt : undefined;
    if (typeof excerpt !== "string") {
      const from = change.source === "forced" ? "node" : excerpt === null ? "snapshot" : "answered-node";
      background(attachLogExcerpt(env, done.vm, done.eventId, r.actor, from));
    }
    rememberHome(done.vm);
    const vm = { id: done.vm.id, name: done.vm.name, state: done.vm.state as VmState, node_id: done.vm.nodeId };
    return { success: true, message: change.message, vm, previousState: done.previousState as VmState, source: change.source };
  };

  // The common case, when this isolate has seen the VM lately: ask its node at once, and write
  // only if the VM is still on that node. Anything else goes on below, reading D1 first.
  let asked: { nodeId: string; outcome: StateOutcome } | null = null;
  const home = r.force ? null : homeOf(id);
  if (home) {
    const outcome = await askState({ id, name: home.name }, home.nodeId);
    const change = outcome.status === "done" ? hypervisorChange(outcome) : null;
    const done = change && (await write(db, { id }, change, r, home.nodeId));
    if (change && done) return answer(change, done);
    asked = { nodeId: home.nodeId, outcome };
  }

  const { vm, online } = await loadVmOnNode(settings, db, id);
  let change: Change;
  if (r.force) change = forced("forced by request");
  else if (!vm.nodeId) change = forced("the VM is on no node");
  else if (!online) change = forced("node offline");
  else {
    // Its node was asked just now (above): that answer stands, the node is not asked twice.
    const outcome = asked?.nodeId === vm.nodeId ? asked.outcome : await askState(vm, vm.nodeId);
    change = outcome.status === "done" ? hypervisorChange(outcome) : unanswered(outcome, settings.queryMs);
  }
  const done = await write(db, change.source === "hypervisor" ? { id: vm.id } : vm, change, r);
  if (done) return answer(change, done);
  if (change.source === "hypervisor") throw new ApiError(404, "not_found", `VM ${vm.name} is gone`);
  throw new ApiError(409, "conflict", `VM ${vm.name} changed during reset_state; try again`);
}

/** Runs after a reset has answered when its answer did not carry the excerpt: reads the VM's last
 *  lines from its node, or takes them from the last-known log, and stores them on the reset's event.
 *  Never throws. `from`:
 *  - "node": ask the node if D1 says it is online (a forced reset), else the last-known log;
 *  - "answered-node": its agent answered this reset just now but said nothing of the log (an agent
 *    from before the excerpt rode on vm.state): ask it without asking D1 first;
 *  - "snapshot": the node has no log to read now; the last-known log is what there is. */
async function attachLogExcerpt(env: Env, vm: VmRecord, eventId: number, actor: string, from: "node" | "answered-node" | "snapshot"): Promise<void> {
  try {
    const db = database(env.DB);
    let excerpt: string | null = null;
    if (vm.nodeId && from !== "snapshot") {
      const node = from === "answered-node" ? null : await db.select().from(nodes).where(eq(nodes.id, vm.nodeId)).get();
      if (from === "answered-node" || (node && nodeView(node, 0, sessionSettings(env).nodeStaleAfterMs).connected)) {
        const outcome = await readLogThroughNode(env, { ...vm, nodeId: vm.nodeId }, EXCERPT_LINES, actor);
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
