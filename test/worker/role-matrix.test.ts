// Every route the app mounts (read from Hono's own route table, so a new route cannot be left out)
// called as every kind of caller: viewer, operator, admin, a node credential, no token. Each answer
// has the status the route's access implies, and no log text ever reaches a caller that is not an
// operator or admin: a distinctive log line is planted through a protocol-speaking agent (the
// live log, the last-known log, a reset event's excerpt, a live follow) and every answer body,
// and every frame of an opened socket, is searched for it.
import { SELF } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { roleRank } from "../../protocol/api.ts";
import { PING_FRAME } from "../../protocol/wire.ts";
import app from "../../worker/index.ts";
import { NOTIFICATION_ROUTES } from "../../worker/notifications/openapi.ts";
import { ROUTES } from "../../worker/openapi.ts";
import {
  api,
  BASE,
  createNode,
  createToken,
  enroll,
  eventually,
  json,
  TestAgent,
  unique,
  vmInfo,
  type Frame,
} from "./support.ts";

const MARKER = "QX-MATRIX-LEAK-7f3a qemu-system-x86_64: -drive file=/srv/secret/planted.qcow2: Permission denied";
const CALLERS = ["viewer", "operator", "admin", "node", "none"] as const;
type Caller = (typeof CALLERS)[number];
type Call = { path: string; method: string; body?: unknown; upgrade?: boolean };

let tokens: Record<"viewer" | "operator" | "admin", string>;
let agent: TestAgent;
let nodeId: string;
let bystanderCredential: string;
let requestId: string;
const vm = vmInfo("matrix-vm", "running");
let answering = true;

/** Answers every command as a host whose QEMU log holds MARKER. */
async function answerCommands() {
  while (answering) {
    let f: Frame;
    try {
      f = await agent.next(undefined, 1_000);
    } catch {
      if (agent.closed) return;
      // A second without a command: a sign of life, or the session would end the link as dead
      // (OFFLINE_AFTER_MS, 4 s here) while the matrix runs the routes that never reach the agent.
      agent.send(PING_FRAME);
      continue;
    }
    const logPath = `/var/log/libvirt/qemu/${vm.name}.log`;
    if (f.type === "vm.logs") {
      agent.reply(f, "log.chunk", { seq: 0, text: `${MARKER}\n` });
      agent.reply(f, "result", {
        logPath,
        logSizeBytes: MARKER.length + 1,
        linesReturned: 1,
        truncated: false,
        lastModified: null,
        chunks: 1,
      });
    } else if (f.type === "vm.state") {
      agent.reply(f, "result", {
        state: "RUNNING",
        libvirtState: "running",
        ...(f.payload.excerptLines ? { logExcerpt: MARKER } : {}),
      });
    } else if (f.type === "vm.start" || f.type === "vm.stop" || f.type === "vm.forceStop") {
      agent.reply(f, "ack");
      agent.reply(
        f,
        "result",
        f.type === "vm.start"
          ? { state: "RUNNING", libvirtState: "running" }
          : { state: "STOPPED", libvirtState: "shutoff" },
      );
    } else if (f.type === "vm.logs.follow") {
      agent.reply(f, "ack");
      agent.send({ type: "log.append", id: f.id, payload: { seq: 0, text: `${MARKER}\n` } });
    } else if (f.type === "resync") {
      agent.inventory([vm]);
    }
  }
}

beforeAll(async () => {
  tokens = {
    viewer: await createToken("viewer"),
    operator: await createToken("operator"),
    admin: await createToken("admin"),
  };
  const s = await TestAgent.forNewNode(unique("matrix"));
  agent = s.agent;
  nodeId = s.nodeId;
  agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  void answerCommands();
  bystanderCredential = (await enroll((await createNode()).joinToken)).credential;
  // Plant the log line: a live read (kept as the last-known log) and a verified reset (its event's excerpt).
  expect((await json(await api(`/api/vms/${vm.uuid}/logs?lines=5`))).qemuLog).toContain(MARKER);
  await json(await api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST", json: { reason: "matrix" } }));
  await eventually(
    async () => expect((await json(await api(`/api/vms/${vm.uuid}/logs/last_known`))).qemuLog).toContain(MARKER),
    10_000,
  );
  const events = (await json(await api(`/api/vms/${vm.uuid}/events`))).events;
  expect(events.some((e: { logExcerpt?: string }) => e.logExcerpt?.includes(MARKER))).toBe(true);
  const stopped = await json(await api(`/api/vms/${vm.uuid}/stop?force=true&wait=true`, { method: "POST" }));
  requestId = stopped.request.id;
}, 60_000);

afterAll(() => {
  answering = false;
  agent?.close();
});

/** The call that exercises a route for real: its own VM, node, request; a fresh victim for the
 *  destructive ones. Unknown routes have none, and fail the test. */
async function callFor(route: string): Promise<Call | null> {
  const v = `/api/vms/${vm.uuid}`;
  switch (route) {
    case "GET /api/health":
    case "GET /api/openapi.json":
    case "GET /api/me":
    case "GET /api/tokens":
    case "GET /api/nodes":
      return { method: route.split(" ")[0], path: route.split(" ")[1] };
    case "POST /api/tokens":
      return { method: "POST", path: "/api/tokens", body: { name: unique("matrix-token"), role: "viewer" } };
    case "DELETE /api/tokens/:id": {
      const created = await json(await api("/api/tokens", { json: { name: unique("victim"), role: "viewer" } }), 201);
      return { method: "DELETE", path: `/api/tokens/${created.id}` };
    }
    case "POST /api/nodes":
      return { method: "POST", path: "/api/nodes", body: { name: unique("matrix-node") } };
    case "GET /api/nodes/:id":
      return { method: "GET", path: `/api/nodes/${nodeId}` };
    case "DELETE /api/nodes/:id":
      return { method: "DELETE", path: `/api/nodes/${(await createNode()).node.id}` };
    case "POST /api/nodes/:id/rotate_token":
      return { method: "POST", path: `/api/nodes/${(await createNode()).node.id}/rotate_token` };
    case "POST /api/nodes/:id/update":
    case "GET /api/nodes/:id/events":
      return { method: route.split(" ")[0], path: route.split(" ")[1].replace(":id", nodeId) };
    case "GET /install.sh":
    case "GET /agent/update/quantix-agent.mjs":
      return { method: "GET", path: route.split(" ")[1] };
    case "GET /install/:file":
      return { method: "GET", path: "/install/manifest.json" };
    case "GET /api/vms":
      return { method: "GET", path: `/api/vms?node_id=${nodeId}` };
    case "GET /api/vms/:id":
    case "GET /api/vms/:id/events":
    case "GET /api/vms/:id/logs/last_known":
      return { method: "GET", path: route.split(" ")[1].replace("/api/vms/:id", v) };
    case "GET /api/vms/:id/logs":
      return { method: "GET", path: `${v}/logs?lines=5` };
    case "GET /api/vms/:id/logs/follow":
      return { method: "GET", path: `${v}/logs/follow`, upgrade: true };
    case "POST /api/vms/:id/console":
      return { method: "POST", path: `${v}/console`, body: { mode: "ro" } };
    case "GET /api/vms/:id/console/ws":
      return { method: "GET", path: `${v}/console/ws`, upgrade: true };
    case "POST /api/vms/:id/start":
    case "POST /api/vms/:id/stop":
    case "POST /api/vms/:id/clear_flag":
      return { method: "POST", path: route.split(" ")[1].replace("/api/vms/:id", v) };
    case "POST /api/vms/:id/reset_state":
      return { method: "POST", path: `${v}/reset_state`, body: { reason: "matrix" } };
    case "POST /api/vms/:id/rehome":
      return { method: "POST", path: `${v}/rehome`, body: { node_id: nodeId } };
    case "GET /api/requests/:id":
      return { method: "GET", path: `/api/requests/${requestId}` };
    case "POST /agent/enroll":
      return { method: "POST", path: "/agent/enroll", body: { joinToken: "qxj_not-a-join-token" } };
    case "GET /agent/connect":
      return { method: "GET", path: "/agent/connect", upgrade: true };
    case "GET /agent/liveness":
      // A link id that is not the node's current one: its own credential gets past auth to a 409.
      return { method: "GET", path: `/agent/liveness?conn=${crypto.randomUUID()}`, upgrade: true };
    case "POST /agent/poll":
      return { method: "POST", path: "/agent/poll", body: {} };
    case "POST /agent/send":
      return {
        method: "POST",
        path: "/agent/send",
        body: { connId: crypto.randomUUID(), messages: [{ type: "ack", id: "x", payload: {} }] },
      };
    case "GET /api/vms/:id/metrics":
      return { method: "GET", path: `${v}/metrics?range=1h` };
    case "GET /api/nodes/:id/metrics":
      return { method: "GET", path: `/api/nodes/${nodeId}/metrics?range=1h` };
    case "GET /api/notifications/targets":
      return { method: "GET", path: "/api/notifications/targets" };
    case "POST /api/notifications/targets":
      return { method: "POST", path: "/api/notifications/targets", body: webhookTarget() };
    case "DELETE /api/notifications/targets/:id":
      return { method: "DELETE", path: `/api/notifications/targets/${await adminTarget()}` };
    case "POST /api/notifications/targets/:id/test":
      return { method: "POST", path: `/api/notifications/targets/${await adminTarget()}/test` };
    case "GET /api/notifications/deliveries":
      return { method: "GET", path: `/api/notifications/deliveries?target_id=${await adminTarget()}` };
    default:
      return null;
  }
}

function secretOf(caller: Caller): string | null {
  if (caller === "none") return null;
  return caller === "node" ? bystanderCredential : tokens[caller];
}

/** A webhook target on a loopback port nothing listens on (a delivery there fails, and is kept). */
const webhookTarget = () => ({
  name: unique("matrix-hook"),
  url: "http://127.0.0.1:9/hook",
  secret: "matrix-secret",
  events: ["node.offline"],
});

/** A target made by the admin, for the routes that act on one. */
async function adminTarget(): Promise<string> {
  const created = await json<{ target: { id: string } }>(
    await api("/api/notifications/targets", { json: webhookTarget() }),
    201,
  );
  return created.target.id;
}

/** Sends the call as `caller`; returns the status and everything the caller got back. */
async function send(call: Call, caller: Caller): Promise<{ status: number; text: string }> {
  const secret = secretOf(caller);
  const headers: Record<string, string> = { "cf-connecting-ip": "10.77.0.1" };
  if (call.upgrade) {
    headers.upgrade = "websocket";
    // A browser's follow carries an API token as a subprotocol; an agent its credential as a header.
    if (secret && call.path.startsWith("/api/") && caller !== "node")
      headers["sec-websocket-protocol"] = `qx.follow.v1, bearer.${secret}`;
    else if (secret) headers.authorization = `Bearer ${secret}`;
  } else if (secret) {
    headers.authorization = `Bearer ${secret}`;
  }
  if (call.body !== undefined) headers["content-type"] = "application/json";
  const res = await SELF.fetch(`${BASE}${call.path}`, {
    method: call.method,
    headers,
    body: call.body === undefined ? undefined : JSON.stringify(call.body),
  });
  if (res.status !== 101) return { status: res.status, text: await res.text() };
  // An opened socket: what arrives on it in a moment is part of the answer.
  const ws = res.webSocket!;
  const got: string[] = [];
  // Until the log's line comes or the socket closes, at most 2 s.
  const settled = new Promise((r) => {
    ws.addEventListener("message", (e) => {
      got.push(String(e.data));
      if (String(e.data).includes(MARKER)) r(null);
    });
    ws.addEventListener("close", () => r(null));
    setTimeout(r, 2_000);
  });
  ws.accept();
  await settled;
  ws.close(1000, "matrix");
  return { status: 101, text: got.join("\n") };
}

/** What a caller must get from a route of this access. */
function expected(access: string, caller: Caller): "open" | "allowed" | 401 | 403 {
  if (access === "none") return "open";
  if (access === "node") return caller === "node" ? "allowed" : 401;
  if (caller === "none" || caller === "node") return 401;
  return roleRank[caller] >= roleRank[access as keyof typeof roleRank] ? "allowed" : 403;
}

describe("every route x every caller", () => {
  it("statuses follow each route's access, and no log text reaches a viewer, a node credential or an anonymous caller", async () => {
    // The soak's debug route is no part of the API: off (a 404 to everyone) unless a local soak run
    // sets QX_DEBUG_COUNTS, and tested on its own (debug-counts.test.ts).
    const mounted = [
      ...new Set(
        app.routes
          .filter((r) => r.method !== "ALL" && r.path !== "/api/debug/counts")
          .map((r) => `${r.method} ${r.path}`),
      ),
    ];
    const access = new Map(
      [...ROUTES, ...NOTIFICATION_ROUTES].map((r) => [`${r.method.toUpperCase()} ${r.path}`, r.access as string]),
    );
    const cells: { route: string; caller: Caller; status: number; leaked: boolean }[] = [];
    const unmapped: string[] = [];
    for (const route of mounted) {
      const routeAccess = access.get(route);
      if (!routeAccess || !(await callFor(route))) {
        unmapped.push(route);
        continue;
      }
      const openStatuses = new Set<number>();
      for (const caller of CALLERS) {
        const call = (await callFor(route))!;
        const { status, text } = await send(call, caller);
        const where = `${route} as ${caller}: ${status} ${text.slice(0, 200)}`;
        const leaked = text.includes(MARKER) || text.includes("QX-MATRIX-LEAK");
        cells.push({ route, caller, status, leaked });
        expect(status, where).toBeLessThan(500);
        const want = expected(routeAccess, caller);
        if (want === "open") openStatuses.add(status);
        else if (want === "allowed") expect([401, 403], where).not.toContain(status);
        else expect(status, where).toBe(want);
        if (caller === "viewer" || caller === "node" || caller === "none")
          expect(leaked, `log text leaked: ${where}`).toBe(false);
      }
      // An open route answers the same whoever asks.
      if (routeAccess === "none") expect(openStatuses.size, route).toBe(1);
    }
    expect(unmapped, "routes with no access in the OpenAPI document or no call in this test").toEqual([]);
    expect(mounted.length).toBeGreaterThanOrEqual(27);
    // The planted line did reach those entitled to it: the search above would have found a leak.
    const reachedOperators = new Set(
      cells.filter((c) => c.leaked && (c.caller === "operator" || c.caller === "admin")).map((c) => c.route),
    );
    for (const route of [
      "GET /api/vms/:id/logs",
      "GET /api/vms/:id/logs/last_known",
      "GET /api/vms/:id/events",
      "GET /api/vms/:id/logs/follow",
    ]) {
      expect([...reachedOperators], route).toContain(route);
    }
    const leaks = cells.filter((c) => c.leaked && !["operator", "admin"].includes(c.caller)).length;
    console.log(
      `role matrix: ${mounted.length} routes x ${CALLERS.length} callers = ${cells.length} cells; leaks to viewer/node/anonymous: ${leaks}`,
    );
  }, 120_000);
});
