// /api/vms: list (keyset pages) and show VMs, power actions, reset_state, QEMU logs (live, last-known,
// followed over a WebSocket), flags, events.
import { Hono, type Context } from "hono";
import { and, asc, desc, eq, sql, type SQL } from "drizzle-orm";
import { z } from "zod";
import { FOLLOW_SUBPROTOCOL, LogLinesQuery, type ResetStateResponse } from "../../protocol/api.ts";
import { mapLibvirtState, StateResult, VmState, type LogsResult } from "../../protocol/wire.ts";
import type { AppEnv } from "../app-env.ts";
import { requireRole } from "../auth.ts";
import { sessionSettings } from "../config.ts";
import { database, type Database } from "../db/client.ts";
import { nodes, vmEvents, vms } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { EXCERPT_LINES } from "../../protocol/log-excerpt.ts";
import { attachLogExcerpt, loadSnapshot, logsAnswer } from "../last-known-log.ts";
import { FOLLOW_HEADERS, type Outcome } from "../node-session.ts";
import { flag, IdParam } from "../params.ts";
import { limitPerToken } from "../rate-limit.ts";
import { askNode, callSession, nodeSession, readVmLog } from "../session-calls.ts";
import { assertPowerAllowed, beginPowerAction, clearVmFlag, finishRequest, resetVmState, resetVmStateNow, undoPowerAction, type PowerKind, type VmRow } from "../vm-state.ts";
import { eventView, nodeView, vmView } from "../views.ts";
import { OWNERSHIP_FLAGS } from "../vm-ownership.ts";

// ---- list -----------------------------------------------------------------------------------------

const encodeCursor = (name: string, id: string) => btoa(JSON.stringify([name, id])).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const Cursor = z
  .string()
  .max(1024, "too long")
  .transform((v, ctx) => {
    try {
      const [name, id] = JSON.parse(atob(v.replaceAll("-", "+").replaceAll("_", "/"))) as unknown[];
      if (typeof name === "string" && typeof id === "string") return { name, id };
    } catch {
      // fall through
    }
    ctx.addIssue({ code: "custom", message: "not a cursor this API handed out (use nextCursor as given)" });
    return z.NEVER;
  });

/** An empty query parameter (`?state=`) means "no filter", as a form with a blank field sends it. */
const blankIsAbsent = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === "" ? undefined : v), schema.optional());

export const ListQuery = z.object({
  node_id: blankIsAbsent(z.string().max(128, "at most 128 characters")),
  state: blankIsAbsent(VmState),
  q: blankIsAbsent(z.string().max(200, "at most 200 characters")),
  limit: z
    .string()
    .regex(/^\d{1,4}$/, "must be an integer from 1 to 500")
    .transform(Number)
    .pipe(z.number().int().min(1, "must be an integer from 1 to 500").max(500, "must be an integer from 1 to 500"))
    .optional(),
  cursor: blankIsAbsent(Cursor),
});

// ---- helpers --------------------------------------------------------------------------------------

// Which node a VM was on when this isolate last read it: lets reset_state ask that node's agent
// before reading D1 (one D1 round trip less on the common path). Only a hint: the reset's write is
// guarded by the node, and anything unexpected takes the path that reads D1 first.
const VM_HOME_MS = 60_000;
const VM_HOME_MAX = 10_000;
const vmHomes = new Map<string, { nodeId: string; name: string; until: number }>();

function rememberHome(vm: Pick<VmRow, "id" | "name" | "nodeId">): void {
  if (!vm.nodeId) return void vmHomes.delete(vm.id);
  if (vmHomes.size >= VM_HOME_MAX) vmHomes.clear();
  vmHomes.set(vm.id, { nodeId: vm.nodeId, name: vm.name, until: Date.now() + VM_HOME_MS });
}

function homeOf(id: string): { nodeId: string; name: string } | null {
  const home = vmHomes.get(id);
  return home && home.until > Date.now() ? home : null;
}

async function loadVm(db: Database, id: string): Promise<VmRow> {
  const vm = await db.select().from(vms).where(eq(vms.id, id.toLowerCase())).get();
  if (!vm) throw new ApiError(404, "not_found", `no VM ${id}`);
  rememberHome(vm);
  return vm;
}

/** The VM with its node and whether that node is connected now, in one D1 read (a join): the
 *  command routes would otherwise pay two round trips before doing anything. */
async function loadVmOnNode(c: Context<AppEnv>, db: Database, id: string) {
  const row = await db.select({ vm: vms, node: nodes }).from(vms).leftJoin(nodes, eq(nodes.id, vms.nodeId)).where(eq(vms.id, id.toLowerCase())).get();
  if (!row) throw new ApiError(404, "not_found", `no VM ${id}`);
  const { vm, node } = row;
  rememberHome(vm);
  return { vm, node, online: node ? nodeView(node, 0, sessionSettings(c.env).nodeStaleAfterMs).connected : false };
}

/** The VM's node when it has one and is connected now (D1 view, liveness-checked). */
async function nodeState(c: Context<AppEnv>, db: Database, vm: VmRow) {
  if (!vm.nodeId) return { node: null, online: false };
  const node = await db.select().from(nodes).where(eq(nodes.id, vm.nodeId)).get();
  if (!node) return { node: null, online: false };
  return { node, online: nodeView(node, 0, sessionSettings(c.env).nodeStaleAfterMs).connected };
}

/** The state the hypervisor reported in a vm.state outcome, as a reset's change; null if it did not. */
function hypervisorChange(outcome: Outcome) {
  const answer = outcome.status === "done" ? StateResult.safeParse(outcome.result) : null;
  if (!answer?.success) return null;
  const to = mapLibvirtState(answer.data.libvirtState);
  return {
    to,
    libvirtState: answer.data.libvirtState,
    source: "hypervisor" as const,
    observedState: to,
    message: `state read from the hypervisor: libvirt ${answer.data.libvirtState} -> ${to}`,
    logExcerpt: answer.data.logExcerpt,
  };
}

/** Agent-side failures as HTTP answers. */
function outcomeError(o: Exclude<Outcome, { status: "sent" | "done" }>): ApiError {
  const { code, message } = o.error;
  if (code === "node_offline" || code === "agent_disconnected") return new ApiError(503, "node_offline", message);
  if (code === "agent_timeout" || code === "session_lost" || o.status === "expired") return new ApiError(504, "agent_timeout", message);
  if (code === "log_not_found") return new ApiError(404, "log_not_found", message);
  if (code === "vm_not_found") return new ApiError(404, "vm_not_found", `the hypervisor does not know this domain: ${message}`);
  if (code === "not_allowed") return new ApiError(409, "invalid_state", message);
  return new ApiError(502, "agent_error", `${code}: ${message}`);
}

export const PowerQuery = z.object({ force: flag, wait: flag });

async function powerAction(c: Context<AppEnv>, id: string, kind: PowerKind, wait: boolean) {
  const db = database(c.env.DB);
  const t = sessionSettings(c.env);
  const { vm, node, online } = await loadVmOnNode(c, db, id);
  // State first: a 409 says what is wrong with the VM even when its node is away.
  assertPowerAllowed(vm, kind);
  if (!vm.nodeId) throw new ApiError(409, "vm_not_on_node", `VM ${vm.name} is on no node`);
  if (!node || !online) throw new ApiError(503, "node_offline", `node ${node?.name ?? vm.nodeId} is offline; the VM was not changed`);
  const deadline = Date.now() + t.ackMs;
  const actor = c.get("principal").actor;
  const begun = await beginPowerAction(db, vm, kind, { actor }, deadline, kind === "vm.stop" ? { graceMs: t.stopGraceMs } : {});
  const outcome = await callSession(c.env, vm.nodeId, (s) =>
    s.dispatch({ id: begun.requestId, kind, vmId: vm.id, name: vm.name, vmGeneration: begun.generation, prevState: vm.state, wait }),
  );
  if (outcome.status === "failed" && outcome.error.code === "node_offline") {
    // Never reached the agent: put the VM back and close the request, then say so.
    await undoPowerAction(db, { id: begun.requestId, vmId: vm.id, vmGeneration: begun.generation, prevState: vm.state }, outcome.error, "system");
    await finishRequest(db, begun.requestId, { status: "failed", error: outcome.error });
    throw new ApiError(503, "node_offline", `${outcome.error.message}; the VM was not changed`);
  }
  if (outcome.status === "sent") {
    return c.json({ success: true, vm: vmView(begun.vm), request: { id: begun.requestId, status: "sent" } }, 202);
  }
  if (outcome.status === "done") {
    const fresh = await loadVm(db, vm.id);
    return c.json({ success: true, vm: vmView(fresh), request: { id: begun.requestId, status: "done" } }, 200);
  }
  throw outcomeError(outcome);
}

// reset_state takes `reason` from the query or a JSON body; the body is optional.
export const ResetQuery = z.object({ force: flag, reason: z.string().max(500, "at most 500 characters").optional() });
export const ResetBody = z.object({ force: z.boolean().optional(), reason: z.string().max(500, "at most 500 characters").optional() }).strict();

async function optionalJson(req: Request): Promise<unknown> {
  const text = await req.text();
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, "invalid_request", "body: not valid JSON");
  }
}

// ---- routes ---------------------------------------------------------------------------------------

export const vmRoutes = new Hono<AppEnv>()
  .get("/", validate("query", ListQuery), async (c) => {
    const q = c.req.valid("query");
    const limit = q.limit ?? 100;
    const where: SQL[] = [];
    if (q.node_id) where.push(eq(vms.nodeId, q.node_id));
    if (q.state) where.push(eq(vms.state, q.state));
    if (q.q) where.push(sql`instr(lower(${vms.name}), lower(${q.q})) > 0`);
    // Keyset pagination on (name, id): every page is an index range scan, however deep.
    if (q.cursor) where.push(sql`(${vms.name}, ${vms.id}) > (${q.cursor.name}, ${q.cursor.id})`);
    const rows = await database(c.env.DB)
      .select()
      .from(vms)
      .where(where.length ? and(...where) : undefined)
      .orderBy(asc(vms.name), asc(vms.id))
      .limit(limit + 1);
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    return c.json({ vms: page.map(vmView), nextCursor: rows.length > limit && last ? encodeCursor(last.name, last.id) : null });
  })
  .get("/:id", validate("param", IdParam), async (c) => {
    return c.json({ vm: vmView(await loadVm(database(c.env.DB), c.req.valid("param").id)) });
  })
  .get("/:id/events", validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const vm = await loadVm(db, c.req.valid("param").id);
    const rows = await db.select().from(vmEvents).where(eq(vmEvents.vmId, vm.id)).orderBy(desc(vmEvents.at), desc(vmEvents.id)).limit(200);
    const role = c.get("principal").role;
    return c.json({ events: rows.map((e) => eventView(e, role)) });
  })
  .post("/:id/start", requireRole("operator"), limitPerToken("POWER_LIMITER"), validate("param", IdParam), validate("query", PowerQuery), async (c) =>
    powerAction(c, c.req.valid("param").id, "vm.start", c.req.valid("query").wait),
  )
  .post("/:id/stop", requireRole("operator"), limitPerToken("POWER_LIMITER"), validate("param", IdParam), validate("query", PowerQuery), async (c) => {
    const { force, wait } = c.req.valid("query");
    return powerAction(c, c.req.valid("param").id, force ? "vm.forceStop" : "vm.stop", wait);
  })
  .post("/:id/reset_state", requireRole("operator"), limitPerToken("RESET_LIMITER"), validate("param", IdParam), validate("query", ResetQuery), async (c) => {
    const body = ResetBody.safeParse(await optionalJson(c.req.raw));
    if (!body.success) {
      const issue = body.error.issues[0];
      throw new ApiError(400, "invalid_request", `${issue?.path.join(".") || "body"}: ${issue?.message ?? "invalid"}`);
    }
    const query = c.req.valid("query");
    const force = query.force || body.data.force === true;
    const reason = body.data.reason ?? query.reason ?? null;
    const db = database(c.env.DB);
    const t = sessionSettings(c.env);
    const actor = c.get("principal").actor;
    const id = c.req.valid("param").id.toLowerCase();
    const answerWith = (
      change: { message: string; source: "hypervisor" | "forced"; logExcerpt?: string | null },
      done: { vm: VmRow; eventId: number; previousState: string },
    ) => {
      // Without the excerpt in the answer it comes after answering: a reset never waits for a log read.
      if (typeof change.logExcerpt !== "string") {
        const from = change.source === "forced" ? "node" : change.logExcerpt === null ? "snapshot" : "answered-node";
        c.executionCtx.waitUntil(attachLogExcerpt(c.env, done.vm, done.eventId, actor, from));
      }
      rememberHome(done.vm);
      const answer: ResetStateResponse = {
        success: true,
        message: change.message,
        vm: { id: done.vm.id, name: done.vm.name, state: done.vm.state as VmState, node_id: done.vm.nodeId },
        previousState: done.previousState as VmState,
        source: change.source,
      };
      return c.json(answer);
    };
    // The event's log excerpt rides on the state query: one round trip to the agent, one D1 write.
    const askState = (vm: Pick<VmRow, "id" | "name">, nodeId: string) =>
      askNode(c.env, { ...vm, nodeId }, "vm.state", {}, actor, { excerptLines: EXCERPT_LINES });

    // The common case, when this isolate has seen the VM lately: ask its node at once, and write
    // only if the VM is still on that node. Anything else goes on below, reading D1 first.
    let asked: { nodeId: string; outcome: Outcome } | null = null;
    const home = force ? null : homeOf(id);
    if (home) {
      const outcome = await askState({ id, name: home.name }, home.nodeId);
      const change = hypervisorChange(outcome);
      const done = change && (await resetVmStateNow(db, { id, name: home.name }, { ...change, actor, reason }, home.nodeId));
      if (change && done) return answerWith(change, done);
      asked = { nodeId: home.nodeId, outcome };
    }

    const { vm, online } = await loadVmOnNode(c, db, id);
    let change: { to: VmState; libvirtState?: string; source: "hypervisor" | "forced"; observedState: VmState | null; message: string; logExcerpt?: string | null };
    const forced = (why: string) => ({ to: "STOPPED" as VmState, source: "forced" as const, observedState: null, message: `state set to STOPPED: ${why}` });
    if (force) change = forced("forced by request");
    else if (!vm.nodeId) change = forced("the VM is on no node");
    else if (!online) change = forced("node offline");
    else {
      // Its node was asked just now (above): that answer stands, the node is not asked twice.
      const outcome = asked?.nodeId === vm.nodeId ? asked.outcome : await askState(vm, vm.nodeId);
      const fromHypervisor = hypervisorChange(outcome);
      if (fromHypervisor) {
        change = fromHypervisor;
      } else if (outcome.status === "failed" && (outcome.error.code === "node_offline" || outcome.error.code === "agent_disconnected")) {
        change = forced(`node offline (${outcome.error.message})`);
      } else if (outcome.status === "failed" && (outcome.error.code === "agent_timeout" || outcome.error.code === "session_lost")) {
        change = forced(`node did not answer within ${Math.round(t.queryMs / 100) / 10} s`);
      } else if (outcome.status === "failed" || outcome.status === "expired") {
        change = forced(`the agent could not read the state (${outcome.error.code}: ${outcome.error.message})`);
      } else {
        change = forced("the agent's answer was unusable");
      }
    }
    // The hypervisor's answer took time: it is written against the VM as it is now (one batch, no
    // re-read); a forced change only against the VM as it was read (409 if it changed).
    const done =
      change.source === "hypervisor"
        ? await resetVmStateNow(db, vm, { ...change, source: "hypervisor", observedState: change.to, actor, reason })
        : await resetVmState(db, vm, { ...change, actor, reason });
    return answerWith(change, done);
  })
  .get("/:id/logs", requireRole("operator"), limitPerToken("LOGS_LIMITER"), validate("param", IdParam), validate("query", LogLinesQuery), async (c) => {
    const db = database(c.env.DB);
    const { vm, node, online } = await loadVmOnNode(c, db, c.req.valid("param").id);
    const { lines } = c.req.valid("query");
    if (!vm.nodeId) throw new ApiError(409, "vm_not_on_node", `VM ${vm.name} is on no node, so it has no log to read`);
    if (!online) throw new ApiError(503, "node_offline", `node ${node?.name ?? vm.nodeId} is offline`);
    const outcome = await readVmLog(c.env, { ...vm, nodeId: vm.nodeId }, lines, c.get("principal").actor, true);
    if (outcome.status === "sent") throw new ApiError(502, "agent_error", "no answer");
    if (outcome.status !== "done") throw outcomeError(outcome);
    // The node's session keeps this answer as the last-known log; the caller does not wait for that.
    return c.json(logsAnswer(outcome.result as LogsResult, outcome.text ?? "", outcome.at ?? Date.now()));
  })
  .get("/:id/logs/last_known", requireRole("operator"), validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const vm = await loadVm(db, c.req.valid("param").id);
    const snapshot = await loadSnapshot(db, vm.id);
    if (!snapshot) throw new ApiError(404, "no_snapshot", `no log of VM ${vm.name} has been read yet`);
    return c.json(snapshot);
  })
  .get("/:id/logs/follow", requireRole("operator"), limitPerToken("LOGS_LIMITER"), validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const vm = await loadVm(db, c.req.valid("param").id);
    if (!vm.nodeId) throw new ApiError(409, "vm_not_on_node", `VM ${vm.name} is on no node, so it has no log to follow`);
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      // A plain GET says why a socket would fail (browsers can't see the status of a refused upgrade).
      const { node, online } = await nodeState(c, db, vm);
      if (!online) throw new ApiError(503, "node_offline", `node ${node?.name ?? vm.nodeId} is offline`);
      throw new ApiError(426, "upgrade_required", "this route follows a log over a WebSocket upgrade");
    }
    const offered = (c.req.header("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
    // The node's session holds the viewers and the one agent follow per VM; it says node_offline itself.
    const headers = new Headers({ upgrade: "websocket" });
    headers.set(FOLLOW_HEADERS.vmId, vm.id);
    headers.set(FOLLOW_HEADERS.vmName, vm.name);
    headers.set(FOLLOW_HEADERS.nodeId, vm.nodeId);
    headers.set(FOLLOW_HEADERS.tokenId, c.get("principal").id);
    if (offered.includes(FOLLOW_SUBPROTOCOL)) headers.set(FOLLOW_HEADERS.subprotocol, FOLLOW_SUBPROTOCOL);
    return nodeSession(c.env, vm.nodeId).fetch(new Request(c.req.raw.url, { method: "GET", headers }));
  })
  .post("/:id/clear_flag", requireRole("operator"), validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const vm = await loadVm(db, c.req.valid("param").id);
    if (vm.flagCode && OWNERSHIP_FLAGS.includes(vm.flagCode)) {
      throw new ApiError(409, "needs_rehome", `the ${vm.flagCode} flag is resolved by an admin re-homing the VM (POST /api/vms/:id/rehome), not cleared`);
    }
    const cleared = await clearVmFlag(db, vm, c.get("principal").actor);
    return c.json({ success: true, cleared, vm: vmView(cleared ? await loadVm(db, vm.id) : vm) });
  });
