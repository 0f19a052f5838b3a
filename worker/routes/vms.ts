// /api/vms: list (keyset pages) and show VMs, power actions, reset_state, QEMU logs (live, last-known,
// followed over a WebSocket), flags, events.
import { Hono, type Context } from "hono";
import { and, asc, desc, eq, sql, type SQL } from "drizzle-orm";
import { z } from "zod";
import { FOLLOW_SUBPROTOCOL, LogLinesQuery } from "../../protocol/api.ts";
import { VmState } from "../../protocol/wire.ts";
import type { AppEnv } from "../app-env.ts";
import { requireRole } from "../auth.ts";
import { sessionSettings } from "../config.ts";
import { database } from "../db/client.ts";
import { vmEvents, vms } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { loadSnapshot, logsAnswer } from "../last-known-log.ts";
import { flag, IdParam } from "../params.ts";
import { limitPerToken } from "../rate-limit.ts";
import { finishRequest } from "../request-rows.ts";
import { agentFeaturesOf, nodeSession, readLogThroughNode, sendPowerAction, writeQueryRow } from "../session/calls.ts";
import { FOLLOW_HEADERS } from "../session/headers.ts";
import { assertPowerAllowed, beginPowerAction, clearVmFlag, undoPowerAction, type PowerKind } from "../vm-state.ts";
import { agentFailureError } from "../vms/agent-errors.ts";
import { homeOf, loadVm, loadVmOnNode, nodeState } from "../vms/lookup.ts";
import { resetVmState } from "../vms/reset.ts";
import { eventView, vmView } from "../views.ts";
import { OWNERSHIP_FLAGS } from "../vm-ownership.ts";

/** Failures of a read sent to a VM's remembered node that mean the VM may be elsewhere now. */
const WRONG_PLACE = new Set(["node_offline", "agent_disconnected", "session_lost", "vm_not_found"]);

// ---- list -----------------------------------------------------------------------------------------

const encodeCursor = (name: string, id: string) =>
  btoa(JSON.stringify([name, id]))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
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
const blankIsAbsent = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => (v === "" ? undefined : v), schema.optional());

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

export const PowerQuery = z.object({ force: flag, wait: flag });

async function powerAction(c: Context<AppEnv>, id: string, kind: PowerKind, wait: boolean) {
  const db = database(c.env.DB);
  const t = sessionSettings(c.env);
  const { vm, node, online } = await loadVmOnNode(t, db, id);
  // A force stop while STOPPING overrides the graceful stop, if the node's agent can end its wait.
  const override =
    kind === "vm.forceStop" &&
    vm.state === "STOPPING" &&
    online &&
    vm.nodeId !== null &&
    (await agentFeaturesOf(c.env, vm.nodeId)).includes("override");
  // State first: a 409 says what is wrong with the VM even when its node is away.
  assertPowerAllowed(vm, kind, override);
  if (!vm.nodeId) throw new ApiError(409, "vm_not_on_node", `VM ${vm.name} is on no node`);
  if (!node || !online)
    throw new ApiError(503, "node_offline", `node ${node?.name ?? vm.nodeId} is offline; the VM was not changed`);
  const deadline = Date.now() + t.ackMs;
  const actor = c.get("principal").actor;
  const params =
    kind === "vm.stop" ? { graceMs: t.stopGraceMs } : override ? { overrides: vm.transitionRequestId } : {};
  const begun = await beginPowerAction(db, vm, kind, { actor }, deadline, params, override);
  const outcome = await sendPowerAction(c.env, vm.nodeId, {
    id: begun.requestId,
    kind,
    vmId: vm.id,
    name: vm.name,
    vmGeneration: begun.generation,
    prevState: vm.state,
    wait,
  });
  if (outcome.status === "failed" && outcome.error.code === "node_offline") {
    // Never reached the agent: put the VM back and close the request, then say so.
    await undoPowerAction(
      db,
      { id: begun.requestId, vmId: vm.id, vmGeneration: begun.generation, prevState: vm.state },
      outcome.error,
      "system",
    );
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
  throw agentFailureError(outcome);
}

// reset_state takes `reason` from the query or a JSON body; the body is optional.
export const ResetQuery = z.object({ force: flag, reason: z.string().max(500, "at most 500 characters").optional() });
export const ResetBody = z
  .object({ force: z.boolean().optional(), reason: z.string().max(500, "at most 500 characters").optional() })
  .strict();

async function optionalJson(req: Request): Promise<unknown> {
  if (req.body === null) return {};
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
    return c.json({
      vms: page.map(vmView),
      nextCursor: rows.length > limit && last ? encodeCursor(last.name, last.id) : null,
    });
  })
  .get("/:id", validate("param", IdParam), async (c) => {
    return c.json({ vm: vmView(await loadVm(database(c.env.DB), c.req.valid("param").id)) });
  })
  .get("/:id/events", validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const vm = await loadVm(db, c.req.valid("param").id);
    const rows = await db
      .select()
      .from(vmEvents)
      .where(eq(vmEvents.vmId, vm.id))
      .orderBy(desc(vmEvents.at), desc(vmEvents.id))
      .limit(200);
    const role = c.get("principal").role;
    return c.json({ events: rows.map((e) => eventView(e, role)) });
  })
  .post(
    "/:id/start",
    requireRole("operator"),
    limitPerToken("POWER_LIMITER"),
    validate("param", IdParam),
    validate("query", PowerQuery),
    async (c) => powerAction(c, c.req.valid("param").id, "vm.start", c.req.valid("query").wait),
  )
  .post(
    "/:id/stop",
    requireRole("operator"),
    limitPerToken("POWER_LIMITER"),
    validate("param", IdParam),
    validate("query", PowerQuery),
    async (c) => {
      const { force, wait } = c.req.valid("query");
      return powerAction(c, c.req.valid("param").id, force ? "vm.forceStop" : "vm.stop", wait);
    },
  )
  .post(
    "/:id/reset_state",
    requireRole("operator"),
    limitPerToken("RESET_LIMITER"),
    validate("param", IdParam),
    validate("query", ResetQuery),
    async (c) => {
      const body = ResetBody.safeParse(await optionalJson(c.req.raw));
      if (!body.success) {
        const issue = body.error.issues[0];
        throw new ApiError(
          400,
          "invalid_request",
          `${issue?.path.join(".") || "body"}: ${issue?.message ?? "invalid"}`,
        );
      }
      const query = c.req.valid("query");
      const request = {
        id: c.req.valid("param").id,
        force: query.force || body.data.force === true,
        reason: body.data.reason ?? query.reason ?? null,
        actor: c.get("principal").actor,
      };
      return c.json(await resetVmState(c.env, (work) => c.executionCtx.waitUntil(work), request));
    },
  )
  .get(
    "/:id/logs",
    requireRole("operator"),
    limitPerToken("LOGS_LIMITER"),
    validate("param", IdParam),
    validate("query", LogLinesQuery),
    async (c) => {
      const id = c.req.valid("param").id.toLowerCase();
      const { lines } = c.req.valid("query");
      const actor = c.get("principal").actor;
      // The session keeps a read's request row; one that never left comes back, written after answering.
      const read = async (vm: { id: string; name: string; nodeId: string }) => {
        const outcome = await readLogThroughNode(c.env, vm, lines, actor, true);
        c.executionCtx.waitUntil(writeQueryRow(c.env, outcome));
        return outcome;
      };
      // The common path asks the node this isolate last saw the VM on, without reading D1 first; a VM
      // that moved, a node gone or any doubt takes the path that reads D1 and answers from what it finds.
      const home = homeOf(id);
      if (home) {
        const fast = await read({ id, name: home.name, nodeId: home.nodeId });
        if (fast.status === "done") return c.json(logsAnswer(fast.result, fast.text, fast.at));
        // Only an answer that says "not here" (no link to that node, or no such domain on it) is asked again.
        if (!WRONG_PLACE.has(fast.error.code)) throw agentFailureError(fast);
      }
      const db = database(c.env.DB);
      const { vm, node, online } = await loadVmOnNode(sessionSettings(c.env), db, id);
      if (!vm.nodeId)
        throw new ApiError(409, "vm_not_on_node", `VM ${vm.name} is on no node, so it has no log to read`);
      if (!online) throw new ApiError(503, "node_offline", `node ${node?.name ?? vm.nodeId} is offline`);
      const outcome = await read({ ...vm, nodeId: vm.nodeId });
      if (outcome.status !== "done") throw agentFailureError(outcome);
      // The node's session keeps this answer as the last-known log; the caller does not wait for that.
      return c.json(logsAnswer(outcome.result, outcome.text, outcome.at));
    },
  )
  .get("/:id/logs/last_known", requireRole("operator"), validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const vm = await loadVm(db, c.req.valid("param").id);
    const snapshot = await loadSnapshot(db, vm.id);
    if (!snapshot) throw new ApiError(404, "no_snapshot", `no log of VM ${vm.name} has been read yet`);
    return c.json(snapshot);
  })
  .get(
    "/:id/logs/follow",
    requireRole("operator"),
    limitPerToken("LOGS_LIMITER"),
    validate("param", IdParam),
    async (c) => {
      const db = database(c.env.DB);
      const vm = await loadVm(db, c.req.valid("param").id);
      if (!vm.nodeId)
        throw new ApiError(409, "vm_not_on_node", `VM ${vm.name} is on no node, so it has no log to follow`);
      if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
        // A plain GET says why a socket would fail (browsers can't see the status of a refused upgrade).
        const { node, online } = await nodeState(sessionSettings(c.env), db, vm);
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
    },
  )
  .post("/:id/clear_flag", requireRole("operator"), validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const vm = await loadVm(db, c.req.valid("param").id);
    if (vm.flagCode && OWNERSHIP_FLAGS.includes(vm.flagCode)) {
      throw new ApiError(
        409,
        "needs_rehome",
        `the ${vm.flagCode} flag is resolved by an admin re-homing the VM (POST /api/vms/:id/rehome), not cleared`,
      );
    }
    const cleared = await clearVmFlag(db, vm, c.get("principal").actor);
    return c.json({ success: true, cleared, vm: vmView(cleared ? await loadVm(db, vm.id) : vm) });
  });
