// Every /api route called against the real control plane (wrangler dev) and a real demo agent as
// Cloudflare Access identities: a viewer, an operator (through a group) and an admin (by email), each
// with only an Access assertion and no Origin header. The routes come from the served OpenAPI
// document, which is rendered from the route tables (one operation per route), so a new route
// cannot be left out; the tables themselves import workerd code, so they are read as served. Each
// status follows the route's access (success for a role high enough, a 403 for one too low, never a
// 401 for a valid assertion, never a 5xx, never the cross-site guard), and a distinctive line planted
// in a VM's QEMU log (read live, kept as the last-known log, in a verified reset's event, on a live
// follow) never reaches the viewer in any answer body or socket frame.
import { appendFileSync, cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { FOLLOW_SUBPROTOCOL, roleRank } from "../../protocol/api.ts";
import { AccessTeam, teamKey } from "../support/access-team.ts";
import { DEMO_LOG_DIR, type AgentProcess } from "../support/agent.ts";
import { ControlPlane } from "../support/control-plane.ts";
import { DEMO, enrollAgent, eventually, json, SHORT_DEADLINES } from "./journey.ts";

const MARKER =
  "QX-ACCESS-LEAK-4c1e qemu-system-x86_64: -drive file=/srv/secret/planted-by-access-matrix.qcow2: Permission denied";
const CALLERS = ["viewer", "operator", "admin"] as const;
type Caller = (typeof CALLERS)[number];
/** Who each caller is to Access: the admin by email, the operator through a group, the viewer neither. */
const IDENTITY: Record<Caller, { email: string; groups?: string[] }> = {
  viewer: { email: "carol@acme.test", groups: ["everyone"] },
  operator: { email: "bob@acme.test", groups: ["Ops-Team"] },
  admin: { email: "alice@acme.test" },
};
type Call = { method: string; path: string; body?: unknown; upgrade?: boolean };
type Answer = { status: number; text: string; code?: string };

let team: AccessTeam;
let cp: ControlPlane;
let agent: AgentProcess;
let nodeId: string;
let logDir: string;
let requestId: string;
const assertions = {} as Record<Caller, string>;
/** the VM whose log holds MARKER (web-01 of the demo host) */
const vmId = DEMO.web01;
const markerLog = () => join(logDir, "web-01.log");

beforeAll(async () => {
  logDir = mkdtempSync(join(tmpdir(), "qx-access-matrix-logs-"));
  cpSync(DEMO_LOG_DIR, logDir, { recursive: true });
  appendFileSync(markerLog(), `${MARKER}\n`);
  const key = await teamKey("matrix-key");
  team = await AccessTeam.start({ keys: [key] });
  cp = await ControlPlane.start({
    vars: { ...SHORT_DEADLINES, ...team.vars({ ACCESS_ADMINS: IDENTITY.admin.email, ACCESS_OPERATORS: "ops-team" }) },
  });
  ({ agent, nodeId } = await enrollAgent(cp, "access-matrix-node", { logDir }));
  for (const caller of CALLERS) assertions[caller] = await team.mint(key, IDENTITY[caller], { expiresIn: 1_800 });

  // Plant the line where it is kept: a live read (the last-known log) and a verified reset (its event's excerpt).
  expect((await json(await cp.api(`/api/vms/${vmId}/logs?lines=5`))).qemuLog).toContain(MARKER);
  const reset = await cp.api(`/api/vms/${vmId}/reset_state`, { method: "POST", json: { reason: "access matrix" } });
  expect(reset.status, await reset.clone().text()).toBe(200);
  await eventually("the reset's event holding the log excerpt", async () =>
    ((await json(await cp.api(`/api/vms/${vmId}/events`))).events as { logExcerpt?: string | null }[]).some((e) =>
      e.logExcerpt?.includes(MARKER),
    ),
  );
  await eventually("the log kept as the last-known log", async () =>
    (await json(await cp.api(`/api/vms/${vmId}/logs/last_known`))).qemuLog?.includes(MARKER),
  );
  const stopped = await cp.api(`/api/vms/${DEMO.db01}/stop?force=true&wait=true`, { method: "POST" });
  expect(stopped.status, await stopped.clone().text()).toBe(200);
  requestId = (await json(stopped)).request.id;
}, 180_000);

afterAll(async () => {
  await agent?.stop();
  await cp?.dispose();
  await team?.stop();
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

const unique = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

async function adminCreated<T>(path: string, body: unknown): Promise<T> {
  const res = await cp.api(path, { method: "POST", json: body });
  if (res.status !== 201) throw new Error(`POST ${path} answered ${res.status}: ${await res.text()}`);
  return json<T>(res);
}

const throwawayNode = async () =>
  (await adminCreated<{ node: { id: string } }>("/api/nodes", { name: unique("matrix-victim") })).node.id;
/** A webhook target on a loopback port nothing listens on (a delivery there fails, and is kept). */
const webhookTarget = () => ({
  name: unique("matrix-hook"),
  url: "http://127.0.0.1:9/hook",
  secret: "matrix-secret",
  events: ["node.offline"],
});
const throwawayTarget = async () =>
  (await adminCreated<{ target: { id: string } }>("/api/notifications/targets", webhookTarget())).target.id;

/** The call that exercises a route for real: the demo node and VMs, a kept request, a fresh victim
 *  for the destructive ones (made with the admin token). Unknown routes have none, and fail the test. */
async function callFor(route: string, caller: Caller): Promise<Call | null> {
  const [method, path] = route.split(" ") as [string, string];
  const v = `/api/vms/${vmId}`;
  switch (route) {
    case "GET /api/health":
    case "GET /api/openapi.json":
    case "GET /api/me":
    case "GET /api/tokens":
    case "GET /api/nodes":
    case "GET /api/notifications/targets":
      return { method, path };
    case "POST /api/tokens":
      return { method, path, body: { name: unique("matrix-token"), role: "viewer" } };
    case "DELETE /api/tokens/:id":
      return {
        method,
        path: `/api/tokens/${(await adminCreated<{ id: string }>("/api/tokens", { name: unique("victim"), role: "viewer" })).id}`,
      };
    case "POST /api/nodes":
      return { method, path, body: { name: unique("matrix-node") } };
    case "GET /api/nodes/:id":
      return { method, path: `/api/nodes/${nodeId}` };
    case "DELETE /api/nodes/:id":
      return { method, path: `/api/nodes/${await throwawayNode()}` };
    case "POST /api/nodes/:id/rotate_token":
      return { method, path: `/api/nodes/${await throwawayNode()}/rotate_token` };
    case "POST /api/nodes/:id/update": // its agent runs the served version: answered upToDate, nothing sent
      return { method, path: `/api/nodes/${nodeId}/update` };
    case "GET /api/nodes/:id/events":
      return { method, path: `/api/nodes/${nodeId}/events` };
    case "GET /api/vms":
      return { method, path: `/api/vms?node_id=${nodeId}` };
    case "GET /api/vms/:id":
    case "GET /api/vms/:id/events":
    case "GET /api/vms/:id/logs/last_known":
    case "POST /api/vms/:id/clear_flag":
      return { method, path: path.replace("/api/vms/:id", v) };
    case "GET /api/vms/:id/logs":
      return { method, path: `${v}/logs?lines=5` };
    case "GET /api/vms/:id/metrics":
      return { method, path: `${v}/metrics?range=1h` };
    case "GET /api/nodes/:id/metrics":
      return { method, path: `/api/nodes/${nodeId}/metrics?range=1h` };
    case "GET /api/vms/:id/logs/follow":
      return { method, path: `${v}/logs/follow`, upgrade: true };
    // A ticket only (nothing opens it); the socket route is open and refuses a request that is not
    // an upgrade alike for everyone (its ticket, not a header, authorizes it).
    case "POST /api/vms/:id/console":
      return { method, path: `${v}/console`, body: { mode: "ro" } };
    case "GET /api/vms/:id/console/ws":
      return { method, path: `${v}/console/ws` };
    // Power actions on other VMs (the marker VM keeps running for the follow), one per caller allowed.
    case "POST /api/vms/:id/start":
      return { method, path: `/api/vms/${caller === "admin" ? DEMO.scratch : DEMO.ciRunner}/start` };
    case "POST /api/vms/:id/stop":
      return { method, path: `/api/vms/${caller === "admin" ? DEMO.files01 : DEMO.web02}/stop` };
    case "POST /api/vms/:id/reset_state":
      return { method, path: `${v}/reset_state`, body: { reason: "access matrix" } };
    case "POST /api/vms/:id/rehome":
      return { method, path: `/api/vms/${DEMO.analytics}/rehome`, body: { node_id: nodeId } };
    case "GET /api/requests/:id":
      return { method, path: `/api/requests/${requestId}` };
    case "POST /api/notifications/targets":
      return { method, path, body: webhookTarget() };
    case "DELETE /api/notifications/targets/:id":
      return { method, path: `/api/notifications/targets/${await throwawayTarget()}` };
    case "POST /api/notifications/targets/:id/test":
      return { method, path: `/api/notifications/targets/${await throwawayTarget()}/test` };
    case "GET /api/notifications/deliveries":
      return { method, path: `/api/notifications/deliveries?target_id=${await throwawayTarget()}` };
    default:
      return null;
  }
}

const errorCode = (text: string): string | undefined => {
  try {
    return (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
};

/** Sends the call with only an Access assertion (no token, no Origin, no Sec-Fetch-Site), as a script would. */
async function send(call: Call, caller: Caller, extra: Record<string, string> = {}): Promise<Answer> {
  if (call.upgrade) return follow(call.path, caller, extra);
  const headers: Record<string, string> = { "cf-access-jwt-assertion": assertions[caller], ...extra };
  if (call.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(cp.url + call.path, {
    method: call.method,
    headers,
    body: call.body === undefined ? undefined : JSON.stringify(call.body),
  });
  const text = await res.text();
  return { status: res.status, text, code: errorCode(text) };
}

/** Opens the live follow. A refused upgrade answers its status and body; an opened socket gets a
 *  fresh MARKER line appended to the log once the follow runs, and answers every frame until that
 *  line arrives (or 30 s pass: the operator's assertion below then fails). */
function follow(path: string, caller: Caller, extra: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const { origin, ...headers } = extra;
    const ws = new WebSocket(cp.url.replace(/^http/, "ws") + path, [FOLLOW_SUBPROTOCOL], {
      headers: { "cf-access-jwt-assertion": assertions[caller], ...headers },
      ...(origin ? { origin } : {}),
    });
    const frames: string[] = [];
    let appended = false;
    const giveUp = setTimeout(() => ws.close(1000, "matrix"), 30_000);
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => {
        clearTimeout(giveUp);
        resolve({ status: res.statusCode ?? 0, text: body, code: errorCode(body) });
        ws.terminate();
      });
    });
    ws.on("message", (data) => {
      const text = String(data);
      frames.push(text);
      if (!appended && text.includes('"following"')) {
        appended = true;
        appendFileSync(markerLog(), `${MARKER}\n`);
      }
      if (text.includes(MARKER)) ws.close(1000, "matrix");
    });
    ws.on("close", () => {
      clearTimeout(giveUp);
      resolve({ status: 101, text: frames.join("\n") });
    });
    ws.on("error", (err) => {
      clearTimeout(giveUp);
      reject(err);
    });
  });
}

type Operation = { "x-required-role"?: string; security?: unknown[] };

/** The /api routes of the served OpenAPI document, in Hono's spelling, with the access each needs
 *  (`x-required-role`; no security at all is an open route). */
async function apiRoutes(): Promise<{ method: string; path: string; access: string }[]> {
  const doc = await json<{ paths: Record<string, Record<string, Operation>> }>(
    await fetch(`${cp.url}/api/openapi.json`),
  );
  return Object.entries(doc.paths)
    .filter(([path]) => path.startsWith("/api/"))
    .flatMap(([path, ops]) =>
      Object.entries(ops).map(([method, op]) => ({
        method,
        path: path.replace(/\{(\w+)\}/g, ":$1"),
        access: op["x-required-role"] ?? (op.security?.length === 0 ? "none" : "unknown"),
      })),
    );
}

/** What a caller must get from a route of this access. */
function expected(access: string, caller: Caller): "open" | "allowed" | 403 {
  if (access === "none") return "open";
  if (!(access in roleRank)) throw new Error(`an /api route with access ${access}: neither open nor a role`);
  return roleRank[caller] >= roleRank[access as keyof typeof roleRank] ? "allowed" : 403;
}

describe("every /api route x every Access identity", () => {
  it("the identities hold the roles ACCESS_ADMINS / ACCESS_OPERATORS give them", async () => {
    for (const caller of CALLERS) {
      const me = await send({ method: "GET", path: "/api/me" }, caller);
      expect(JSON.parse(me.text), me.text).toMatchObject({
        role: caller,
        via: "access",
        email: IDENTITY[caller].email,
      });
    }
  });

  it("statuses follow each route's access, and no log text ever reaches the viewer", async () => {
    // `/agent/*` is the agents' own, with node credentials: Access does not sit in front of it.
    const routes = await apiRoutes();
    expect(routes.length).toBeGreaterThanOrEqual(28);

    const cells: { route: string; caller: Caller; status: number; leaked: boolean }[] = [];
    const unmapped: string[] = [];
    for (const r of routes) {
      const route = `${r.method.toUpperCase()} ${r.path}`;
      if (!(await callFor(route, "admin"))) {
        unmapped.push(route);
        continue;
      }
      const openStatuses = new Set<number>();
      for (const caller of CALLERS) {
        const { status, text, code } = await send((await callFor(route, caller))!, caller);
        const where = `${route} as ${caller} (${r.access}): ${status} ${text.slice(0, 200)}`;
        const leaked = text.includes(MARKER) || text.includes("QX-ACCESS-LEAK");
        cells.push({ route, caller, status, leaked });
        expect(status, where).toBeLessThan(500);
        expect(status, `a valid assertion refused: ${where}`).not.toBe(401);
        // No Origin header is not a cross-site request: the guard must let every one of these through.
        expect(code, where).not.toBe("cross_site");
        const want = expected(r.access, caller);
        if (want === "open") openStatuses.add(status);
        else if (want === "allowed") expect((status >= 200 && status < 300) || status === 101, where).toBe(true);
        else expect([status, code], where).toEqual([403, "forbidden"]);
        if (caller === "viewer") expect(leaked, `log text leaked: ${where}`).toBe(false);
      }
      // An open route answers the same whoever asks.
      if (r.access === "none") expect(openStatuses.size, route).toBe(1);
    }
    expect(unmapped, "routes with no call in this test").toEqual([]);
    expect(cells.find((c) => c.route === "GET /api/vms/:id/logs/follow" && c.caller === "viewer")?.status).toBe(403);
    // The planted line did reach those entitled to it: the search above would have found a leak.
    for (const caller of ["operator", "admin"] as const) {
      const reached = cells.filter((c) => c.leaked && c.caller === caller).map((c) => c.route);
      for (const route of [
        "GET /api/vms/:id/logs",
        "GET /api/vms/:id/logs/last_known",
        "GET /api/vms/:id/events",
        "GET /api/vms/:id/logs/follow",
      ]) {
        expect(reached, `${route} as ${caller}`).toContain(route);
      }
    }
    const leaks = cells.filter((c) => c.leaked && c.caller === "viewer").length;
    const table = routes.map(
      (r) =>
        `${r.method.toUpperCase()} ${r.path} (${r.access}): ${cells
          .filter((c) => c.route === `${r.method.toUpperCase()} ${r.path}`)
          .map((c) => `${c.caller} ${c.status}`)
          .join(", ")}`,
    );
    console.log(
      `${table.join("\n")}\nAccess role matrix: ${routes.length} routes x ${CALLERS.length} identities = ${cells.length} cells; leaks to the viewer: ${leaks}`,
    );
  }, 300_000);

  it("the cross-site guard is on here: the same operator calls from another origin are refused", async () => {
    const reset = await send(
      { method: "POST", path: `/api/vms/${vmId}/reset_state`, body: { reason: "cross-site" } },
      "operator",
      { origin: "https://evil.example" },
    );
    expect([reset.status, reset.code], reset.text).toEqual([403, "cross_site"]);
    const followed = await send({ method: "GET", path: `/api/vms/${vmId}/logs/follow`, upgrade: true }, "operator", {
      origin: "https://evil.example",
    });
    expect([followed.status, followed.code], followed.text).toEqual([403, "cross_site"]);
    expect(followed.text).not.toContain(MARKER);
  });
});
