// The OpenAPI 3.1 document of the REST API (`GET /api/openapi.json`), generated from the same zod
// schemas the routes validate with (zod 4's z.toJSONSchema, input side: what a client sends) and
// the answer schemas of protocol/rest.ts, which also type the routes' answers.
import { z } from "zod";
import { LOG_LINES_DEFAULT, LOG_LINES_MAX, LOG_LINES_MIN, LogLinesQuery, Role } from "../protocol/api.ts";
import {
  ErrorBody,
  HealthResponse,
  JoinTokenResponse,
  LastKnownLogResponse,
  LogsResponse,
  MeResponse,
  MetricsResponse,
  NodeEventView,
  NodeUpdateResponse,
  NodeView,
  PowerResponse,
  RequestView,
  ResetStateResponse,
  TokenView,
  VmEventView,
  VmView,
} from "../protocol/rest.ts";
import {
  EnrollRequest,
  EnrollResponse,
  PollRequest,
  PollResponse,
  SendRequest,
  SendResponse,
} from "../protocol/wire.ts";
import { InstallManifest } from "../protocol/install.ts";
import { VERSION } from "./config.ts";
import { IdParam } from "./params.ts";
import { CreateNode } from "./routes/nodes.ts";
import { RehomeBody } from "./routes/rehome.ts";
import { CreateToken } from "./routes/tokens.ts";
import { NOTIFICATION_ROUTES } from "./notifications/openapi.ts";
import type { Answer, RouteDoc } from "./route-doc.ts";
import { ListQuery, PowerQuery, ResetBody, ResetQuery } from "./routes/vms.ts";
import { METRICS_WATCH_LEASE_MS, MetricsQuery } from "../protocol/metrics.ts";
import { ConsoleRequest } from "../protocol/console.ts";

// ---- the routes ---------------------------------------------------------------------------------------

const ok = (description: string, schema?: z.ZodType): Answer => ({ description, schema });
const vmId = z.object({ id: IdParam.shape.id.describe("the VM's libvirt domain UUID") });
const LINES_NOTE = `an integer from ${LOG_LINES_MIN} to ${LOG_LINES_MAX} (default ${LOG_LINES_DEFAULT})`;

export const ROUTES: RouteDoc[] = [
  {
    method: "get",
    path: "/api/health",
    summary: "Liveness",
    access: "none",
    answers: { 200: ok("up", HealthResponse) },
  },
  {
    method: "get",
    path: "/api/openapi.json",
    summary: "This document",
    access: "none",
    answers: { 200: ok("OpenAPI 3.1 document", z.object({ openapi: z.string() })) },
  },
  {
    method: "get",
    path: "/api/me",
    summary: "Who the token is",
    access: "viewer",
    answers: {
      200: ok(
        "the caller (through Cloudflare Access: also via and email), and the stuck threshold in force",
        MeResponse,
      ),
    },
  },
  {
    method: "post",
    path: "/api/tokens",
    summary: "Create an API token (shown once)",
    access: "admin",
    body: CreateToken,
    bodyRequired: true,
    answers: { 201: ok("created", z.object({ token: z.string(), id: z.string(), name: z.string(), role: Role })) },
  },
  {
    method: "get",
    path: "/api/tokens",
    summary: "List API tokens",
    access: "admin",
    answers: { 200: ok("tokens", z.object({ tokens: z.array(TokenView) })) },
  },
  {
    method: "delete",
    path: "/api/tokens/:id",
    summary: "Revoke an API token",
    access: "admin",
    params: IdParam,
    answers: {
      200: ok("revoked", z.object({ success: z.literal(true), id: z.string(), revoked: z.literal(true) })),
      404: ok("no such token"),
    },
  },
  {
    method: "get",
    path: "/api/nodes",
    summary: "List nodes",
    access: "viewer",
    answers: { 200: ok("nodes", z.object({ nodes: z.array(NodeView) })) },
  },
  {
    method: "post",
    path: "/api/nodes",
    summary: "Create a node and its single-use join token",
    access: "admin",
    body: CreateNode,
    bodyRequired: true,
    answers: { 201: ok("created", JoinTokenResponse), 409: ok("a node of that name exists") },
  },
  {
    method: "get",
    path: "/api/nodes/:id",
    summary: "Show a node",
    access: "viewer",
    params: IdParam,
    answers: { 200: ok("the node", z.object({ node: NodeView })), 404: ok("no such node") },
  },
  {
    method: "delete",
    path: "/api/nodes/:id",
    summary: "Delete a node (its VMs are kept, on no node)",
    access: "admin",
    params: IdParam,
    answers: { 200: ok("deleted", z.object({ success: z.literal(true), id: z.string() })), 404: ok("no such node") },
  },
  {
    method: "post",
    path: "/api/nodes/:id/rotate_token",
    summary: "Issue a new join token and revoke the node's credential",
    access: "admin",
    params: IdParam,
    answers: { 200: ok("rotated", JoinTokenResponse), 404: ok("no such node") },
  },
  {
    method: "post",
    path: "/api/nodes/:id/update",
    summary:
      "Update the node's agent to the version this control plane serves (it downloads, verifies, swaps and restarts; the outcome comes back as node events)",
    access: "admin",
    params: IdParam,
    answers: {
      202: ok("asked; the agent reports back in GET /api/nodes/:id/events", NodeUpdateResponse),
      200: ok("the agent runs that version already: nothing sent", NodeUpdateResponse),
      404: ok("no such node, or not_built"),
      409: ok("node_offline, or update_unsupported (an agent from before self-update: reinstall it)"),
    },
  },
  {
    method: "get",
    path: "/api/nodes/:id/events",
    summary: "The node's audit trail, newest first: agent updates asked for and how they went",
    access: "viewer",
    params: IdParam,
    answers: { 200: ok("events", z.object({ events: z.array(NodeEventView) })) },
  },
  {
    method: "get",
    path: "/api/vms",
    summary: "List VMs (keyset pages ordered by name)",
    access: "viewer",
    query: ListQuery,
    notes: {
      q: "case-insensitive substring of the name",
      limit: "1..500, default 100",
      cursor: "nextCursor of the previous page",
    },
    answers: { 200: ok("a page", z.object({ vms: z.array(VmView), nextCursor: z.string().nullable() })) },
  },
  {
    method: "get",
    path: "/api/vms/:id",
    summary: "Show a VM",
    access: "viewer",
    params: vmId,
    answers: { 200: ok("the VM", z.object({ vm: VmView })), 404: ok("no such VM") },
  },
  {
    method: "get",
    path: "/api/vms/:id/events",
    summary: "The VM's events, newest first (at most 200)",
    access: "viewer",
    params: vmId,
    answers: { 200: ok("events", z.object({ events: z.array(VmEventView) })), 404: ok("no such VM") },
  },
  ...(["start", "stop"] as const).map(
    (verb): RouteDoc => ({
      method: "post",
      path: `/api/vms/:id/${verb}`,
      summary:
        verb === "start"
          ? "Start a VM (from STOPPED or PAUSED)"
          : "Stop a VM (from RUNNING or PAUSED); force=true destroys it",
      access: "operator",
      params: vmId,
      query: PowerQuery,
      notes: {
        wait: "wait for the outcome, as long as the agent reports progress (200 with the final VM, or 504)",
        ...(verb === "stop"
          ? {
              force:
                "force stop (destroy); also allowed while STOPPING when the node's agent can override a graceful stop",
            }
          : {}),
      },
      answers: {
        202: ok("queued: the VM is now STARTING / STOPPING", PowerResponse),
        200: ok("with wait=true: done", PowerResponse),
        404: ok("no such VM"),
        409: ok(
          "not allowed from the current state (hint: reset_state); with wait=true, `overridden` when a force stop took over this graceful stop",
        ),
        503: ok("node offline; the VM was not changed"),
        504: ok("agent_timeout"),
      },
    }),
  ),
  {
    method: "post",
    path: "/api/vms/:id/reset_state",
    summary: "Recover a stuck VM: ask the hypervisor, or set STOPPED (forced / node unreachable)",
    access: "operator",
    params: vmId,
    query: ResetQuery,
    body: ResetBody,
    bodyRequired: false,
    notes: { reason: "stored in the event (at most 500 characters)" },
    answers: {
      200: ok("reset", ResetStateResponse),
      404: ok(
        "no such VM, or vm_not_found: the hypervisor has no such domain (the VM is marked missing; nothing forced)",
      ),
      409: ok("conflict: the VM changed while the hypervisor was being asked"),
      429: ok("rate_limited"),
      502: ok("hypervisor_error (libvirt failed, its message given) or agent_error; nothing forced"),
    },
  },
  {
    method: "get",
    path: "/api/vms/:id/logs",
    summary: "The last N lines of the VM's QEMU log, read on its node",
    access: "operator",
    params: vmId,
    query: LogLinesQuery,
    notes: { lines: LINES_NOTE },
    answers: {
      200: ok("the log", LogsResponse),
      404: ok("no such VM, or log_not_found"),
      409: ok("vm_not_on_node"),
      429: ok("rate_limited"),
      503: ok("node_offline (see logs/last_known)"),
      504: ok("agent_timeout"),
    },
  },
  {
    method: "get",
    path: "/api/vms/:id/logs/last_known",
    summary: "The last log answer kept, with its capture time",
    access: "operator",
    params: vmId,
    answers: { 200: ok("the last-known log", LastKnownLogResponse), 404: ok("no such VM, or no_snapshot") },
  },
  {
    method: "get",
    path: "/api/vms/:id/logs/follow",
    summary:
      "Follow the log live over a WebSocket. Browsers offer the subprotocols ['qx.follow.v1', 'bearer.<token>'] instead of an " +
      "Authorization header; the server answers 'qx.follow.v1' and sends JSON text frames {type:'append',text} | " +
      "{type:'status',status} | {type:'error',code,message}; after status node_offline it closes with 4503.",
    access: "operator",
    params: vmId,
    answers: {
      101: ok("switching protocols"),
      409: ok("vm_not_on_node"),
      426: ok("not a WebSocket upgrade"),
      503: ok("node_offline"),
    },
  },
  {
    method: "post",
    path: "/api/vms/:id/console",
    summary:
      "A single-use ticket (30 s) for the VM's serial console, bound to the caller, the VM and the mode. A viewer gets 403 " +
      "(console text can hold secrets). Open a WebSocket to `url` and send {type:'hello',ticket} first.",
    access: "operator",
    params: vmId,
    body: ConsoleRequest,
    bodyRequired: true,
    answers: {
      201: ok(
        "the ticket",
        z.object({ ticket: z.string(), expiresAt: z.string().describe("ISO 8601"), url: z.string() }),
      ),
      404: ok("no such VM"),
      409: ok("vm_not_on_node, or needs_websocket (the node's agent is on its long-poll link)"),
      429: ok("too_many_viewers (8 per VM) or too_many_consoles (16 per node)"),
    },
  },
  {
    method: "get",
    path: "/api/vms/:id/console/ws",
    summary:
      "The console's WebSocket, authorized by its first message ({type:'hello',ticket} or {type:'hello',resume,from}), not " +
      "by a header; an upgrade from another origin is refused. Then: text ready / writer / notice / closed, binary output " +
      "frames (an 8-byte big-endian offset, then the bytes); from the browser binary input (≤ 4 KiB, ≤ 100 a second), " +
      "{type:'ack',offset} and {type:'take'}.",
    access: "none",
    params: vmId,
    answers: {
      101: ok("switching protocols"),
      403: ok("cross_origin"),
      404: ok("no such VM"),
      409: ok("vm_not_on_node"),
      426: ok("not a WebSocket upgrade"),
    },
  },
  {
    method: "post",
    path: "/api/vms/:id/clear_flag",
    summary:
      "Clear the VM's flag once looked at (an event records who); uuid_conflict and node_deleted are resolved by rehome instead (409)",
    access: "operator",
    params: vmId,
    answers: {
      200: ok("cleared (or there was none)", z.object({ success: z.literal(true), cleared: z.boolean(), vm: VmView })),
      404: ok("no such VM"),
    },
  },
  ...(["vms", "nodes"] as const).map(
    (kind): RouteDoc => ({
      method: "get",
      path: `/api/${kind}/:id/metrics`,
      summary:
        kind === "vms"
          ? "The VM's resource figures over a range (CPU %, memory, disk and network rates)"
          : "The node's totals over a range (CPU as % of the host's CPUs)",
      access: "viewer",
      params: kind === "vms" ? vmId : IdParam,
      query: MetricsQuery,
      notes: {
        range: "1h (10 s steps), 24h (1 min), 7d (5 min) or 30d (30 min); default 1h",
        watch: `1: the chart is open; the node's agent sends each sample as it is taken for the next ${METRICS_WATCH_LEASE_MS / 1000} s`,
      },
      answers: {
        200: ok("the series", MetricsResponse),
        404: ok(kind === "vms" ? "no such VM" : "no such node"),
        503: ok("metrics_unavailable"),
      },
    }),
  ),
  {
    method: "post",
    path: "/api/vms/:id/rehome",
    summary:
      "Put a VM on a node: resolves uuid_conflict, or re-homes a VM whose node was deleted (an event names both nodes)",
    access: "admin",
    params: vmId,
    body: RehomeBody,
    answers: {
      200: ok("re-homed", z.object({ success: z.literal(true), vm: VmView })),
      404: ok("no such VM, or node_not_found"),
      409: ok("conflict, or vm_cap_exceeded"),
    },
  },
  {
    method: "get",
    path: "/api/requests/:id",
    summary: "Where a queued command stands",
    access: "viewer",
    params: IdParam,
    answers: { 200: ok("the request", z.object({ request: RequestView })), 404: ok("no such request") },
  },
  {
    method: "get",
    path: "/install.sh",
    summary:
      "The agent installer (POSIX sh, this control plane's URL filled in): curl -fsSL <url>/install.sh | sh -s -- --token <join token>",
    access: "none",
    answers: { 200: ok("the script (text/x-shellscript)"), 404: ok("not_built: npm run build did not make it") },
  },
  {
    method: "get",
    path: "/install/:file",
    summary: "The agent bundle (quantix-agent.mjs) and its manifest (manifest.json: {version, sha256, size})",
    access: "none",
    params: z.object({ file: z.enum(["manifest.json", "quantix-agent.mjs"]) }),
    answers: { 200: ok("the file (the manifest as InstallManifest)", InstallManifest), 404: ok("no such file") },
  },
  {
    method: "post",
    path: "/agent/enroll",
    summary: "Agent: trade a single-use join token for the node's credential",
    access: "none",
    body: EnrollRequest,
    bodyRequired: true,
    answers: { 200: ok("enrolled", EnrollResponse), 401: ok("join_token_invalid"), 429: ok("rate_limited") },
  },
  {
    method: "get",
    path: "/agent/update/quantix-agent.mjs",
    summary: "Agent: the served bundle, for an agent told to update itself (checked against its SHA-256)",
    access: "node",
    answers: { 200: ok("the bundle (text/javascript)"), 401: ok("credential refused"), 404: ok("not_built") },
  },
  {
    method: "get",
    path: "/agent/connect",
    summary: "Agent: the node's WebSocket (protocol/wire.ts frames), with Authorization: Bearer <node credential>",
    access: "node",
    answers: { 101: ok("switching protocols"), 401: ok("credential refused"), 426: ok("not a WebSocket upgrade") },
  },
  {
    method: "get",
    path: "/agent/liveness",
    summary:
      "Agent: the link's ping-only liveness socket (welcome feature livenessWatch), with the same credential; one shard's alarm watches many nodes' pings",
    access: "node",
    query: z.object({
      conn: z.string().uuid().describe("the id of the node's current WebSocket link (welcome.id)"),
      node: z.string().optional().describe("if given, must be the credential's own node"),
    }),
    answers: {
      101: ok("switching protocols"),
      400: ok("invalid_request: conn missing or not a UUID"),
      401: ok("credential refused"),
      403: ok("forbidden: another node named"),
      409: ok("link_not_current: conn is not the node's current WebSocket link"),
      426: ok("not a WebSocket upgrade"),
    },
  },
  {
    method: "post",
    path: "/agent/poll",
    summary:
      "Agent, long-poll transport (WebSockets blocked): open a link (no connId; answered with its welcome) or wait for its frames",
    access: "node",
    body: PollRequest,
    bodyRequired: true,
    answers: {
      200: ok("frames for the agent (possibly none when the wait ran out)", PollResponse),
      401: ok("credential refused"),
      409: ok("link_replaced: a newer connection of the node took over"),
      410: ok("link_closed: the link ended; open a new one"),
    },
  },
  {
    method: "post",
    path: "/agent/send",
    summary:
      "Agent, long-poll transport: frames for the control plane, each handled as the same frame on the WebSocket",
    access: "node",
    body: SendRequest,
    bodyRequired: true,
    answers: {
      200: ok("handled", SendResponse),
      401: ok("credential refused"),
      409: ok("link_replaced"),
      410: ok("link_closed"),
      413: ok("payload_too_large"),
    },
  },
];

// ---- rendering ----------------------------------------------------------------------------------------

const jsonSchema = (schema: z.ZodType) => {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return rest;
};

function parameters(where: "path" | "query", schema: z.ZodObject | undefined, notes: Record<string, string> = {}) {
  if (!schema) return [];
  const object = jsonSchema(schema) as { properties?: Record<string, object>; required?: string[] };
  return Object.entries(object.properties ?? {}).map(([name, s]) => ({
    name,
    in: where,
    required: where === "path" || (object.required ?? []).includes(name),
    schema: s,
    ...(notes[name] ? { description: notes[name] } : {}),
  }));
}

const ERRORS: Record<number, string> = {
  400: "invalid_request (names the field and the rule)",
  401: "missing or invalid token",
  403: "role too low",
};

function operation(r: RouteDoc) {
  const content = (schema: z.ZodType) => ({ "application/json": { schema: jsonSchema(schema) } });
  const responses: Record<string, object> = {};
  for (const [status, a] of Object.entries(r.answers)) {
    const isError = Number(status) >= 400;
    responses[status] = {
      description: a.description,
      ...(a.schema || isError ? { content: content(a.schema ?? ErrorBody) } : {}),
    };
  }
  const implied = [
    ...(r.params || r.query || r.body ? [400] : []),
    ...(r.access !== "none" ? [401] : []),
    ...(r.access === "operator" || r.access === "admin" ? [403] : []),
  ];
  for (const status of implied) responses[status] ??= { description: ERRORS[status], content: content(ErrorBody) };
  return {
    summary: r.summary,
    operationId: `${r.method}${r.path.replace(/[/:._]+(\w)/g, (_m, ch: string) => ch.toUpperCase())}`,
    ...(r.access === "viewer" || r.access === "operator" || r.access === "admin"
      ? { "x-required-role": r.access }
      : {}),
    security: r.access === "none" ? [] : r.access === "node" ? [{ nodeCredential: [] }] : [{ bearer: [] }],
    parameters: [...parameters("path", r.params), ...parameters("query", r.query, r.notes)],
    ...(r.body ? { requestBody: { required: r.bodyRequired ?? true, content: content(r.body) } } : {}),
    responses,
  };
}

/** `/api/vms/:id` -> `/api/vms/{id}` */
export const openApiPath = (honoPath: string) => honoPath.replace(/:(\w+)/g, "{$1}");

let cached: object | null = null;

export function openApiDocument(): object {
  if (cached) return cached;
  const paths: Record<string, Record<string, object>> = {};
  for (const r of [...ROUTES, ...NOTIFICATION_ROUTES]) (paths[openApiPath(r.path)] ??= {})[r.method] = operation(r);
  cached = {
    openapi: "3.1.0",
    info: {
      title: "Quantix Edge control plane",
      version: VERSION,
      description:
        "REST API of the Quantix Edge control plane. Roles: viewer (reads) < operator (power, reset_state, logs) < admin (nodes, tokens).",
    },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "an API token (qxa_...) or the ADMIN_TOKEN" },
        nodeCredential: {
          type: "http",
          scheme: "bearer",
          description: "a node credential (qxn_...), for the agent endpoint only",
        },
      },
      schemas: {
        Error: jsonSchema(ErrorBody),
        Vm: jsonSchema(VmView),
        Node: jsonSchema(NodeView),
        Request: jsonSchema(RequestView),
        Event: jsonSchema(VmEventView),
      },
    },
    paths,
  };
  return cached;
}
