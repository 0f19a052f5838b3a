// Serial consoles: `POST /api/vms/:id/console` issues a single-use ticket (operator, admin), and
// `/api/vms/:id/console/ws` is the browser's socket, authorized by that ticket in its first message
// (a browser socket carries no Authorization header, and no credential goes in a URL).
import { Hono, type Context } from "hono";
import { roleRank } from "../../protocol/api.ts";
import { CONSOLE_TICKET_TTL_MS, ConsoleRequest, type ConsoleTicketAnswer } from "../../protocol/console.ts";
import type { AppEnv } from "../app-env.ts";
import { hashSecret } from "../auth.ts";
import { database } from "../db/client.ts";
import { vmEvents } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { IdParam } from "../params.ts";
import { nodeSession } from "../session/calls.ts";
import { CONSOLE_HEADERS } from "../session/headers.ts";
import { loadVm } from "../vms/lookup.ts";

const REFUSALS: Record<string, { status: 409 | 429; message: string }> = {
  too_many_consoles: { status: 429, message: "this node has as many open consoles as it allows (16)" },
  too_many_viewers: { status: 429, message: "this VM's console has as many viewers as it allows (8)" },
  needs_websocket: {
    status: 409,
    message: "the node's agent is connected over long-poll, which carries no console; it needs its WebSocket link",
  },
};

const consoleTicket = () => {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return `qxc_${btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "")}`;
};

/** Behind authentication: issues tickets. */
export const consoleTicketRoutes = new Hono<AppEnv>().post(
  "/:id/console",
  validate("param", IdParam),
  validate("json", ConsoleRequest),
  async (c) => {
    const db = database(c.env.DB);
    const vm = await loadVm(db, c.req.valid("param").id);
    const principal = c.get("principal");
    const { mode, force, type } = c.req.valid("json");
    if (roleRank[principal.role] < roleRank.operator) {
      await db.insert(vmEvents).values({
        vmId: vm.id,
        at: Date.now(),
        actor: principal.actor,
        action: "console.denied",
        message: `${principal.name} (${principal.role}) asked for a ${mode} console: it needs the operator role`,
        source: "control_plane",
      });
      throw new ApiError(403, "forbidden", `a console needs the operator role; your token is ${principal.role}`);
    }
    if (!vm.nodeId) throw new ApiError(409, "vm_not_on_node", `VM ${vm.name} is on no node, so it has no console`);
    const ticket = consoleTicket();
    const expiresAt = Date.now() + CONSOLE_TICKET_TTL_MS;
    const kept = await nodeSession(c.env, vm.nodeId).issueConsoleTicket(await hashSecret(ticket), {
      vmId: vm.id,
      mode,
      ...(type === "vnc" ? { type } : {}),
      force: force === true,
      principal: {
        id: principal.id,
        name: principal.name,
        actor: principal.actor,
        role: principal.role,
        via: principal.via,
        ...(principal.roleNames ? { roleNames: principal.roleNames } : {}),
      },
      expiresAt,
    });
    if (!kept.ok) {
      const refusal = REFUSALS[kept.reason] ?? { status: 409 as const, message: kept.reason };
      throw new ApiError(refusal.status, kept.reason, refusal.message);
    }
    const answer: ConsoleTicketAnswer = {
      ticket,
      expiresAt: new Date(expiresAt).toISOString(),
      url: `/api/vms/${vm.id}/console/ws`,
    };
    return c.json(answer, 201);
  },
);

/** Refuses an upgrade a page of another origin started (a browser always says its Origin). */
function refuseOtherOrigin(c: Context<AppEnv>): void {
  const origin = c.req.header("origin");
  if (origin !== undefined && origin !== new URL(c.req.url).origin)
    throw new ApiError(403, "cross_origin", `a console opens only from this site, not from ${origin.slice(0, 200)}`);
}

/** Before authentication: the ticket in the socket's first message is the authorization. */
export const consoleSocketRoutes = new Hono<AppEnv>().get("/:id/console/ws", validate("param", IdParam), async (c) => {
  refuseOtherOrigin(c);
  const vm = await loadVm(database(c.env.DB), c.req.valid("param").id);
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket")
    throw new ApiError(426, "upgrade_required", "this route is a WebSocket; send the ticket in its first message");
  if (!vm.nodeId) throw new ApiError(409, "vm_not_on_node", `VM ${vm.name} is on no node, so it has no console`);
  const headers = new Headers({ upgrade: "websocket" });
  headers.set(CONSOLE_HEADERS.vmId, vm.id);
  headers.set(CONSOLE_HEADERS.vmName, encodeURIComponent(vm.name)); // a header is ASCII; names need not be
  return nodeSession(c.env, vm.nodeId).fetch(new Request(c.req.raw.url, { method: "GET", headers }));
});
