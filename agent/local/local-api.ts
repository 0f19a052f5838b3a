// The host-local API (`--listen`, loopback by default): `GET /api/v1/vms`, `GET /api/v1/vms/:vm_id/logs`,
// `GET /api/v1/vms/:vm_id/metrics?range=` (the agent's in-memory day of samples) guarded by the host token (host-token.ts; never the node credential, whose holder could act as
// the node), the consoles, serial and graphical (local-console.ts), and the host view's static files
// at `/`. Nothing a request
// carries becomes a path: a VM is found in libvirt's list, its log path comes from its libvirt
// name (log-path.ts), and a static file must resolve inside the web directory.
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { http } from "../node-http.ts";
import { closeSync, fstatSync, openSync, readFileSync, realpathSync } from "node:fs";
import { extname, join, sep } from "node:path";
import type { AddressInfo } from "node:net";
import { constants } from "node:fs";
import { LOG_LINES_RULE, logLinesOf } from "../../protocol/log-lines.ts";
import { METRIC_RANGES, type MetricRange } from "../../protocol/metrics-series.ts";
import type { LogsResponse } from "../../protocol/rest.ts";
import { MAX_LOG_BYTES, VM_STATES, type VmState } from "../../protocol/wire-constants.ts";
import { AgentFailure, type Libvirt } from "../host/libvirt.ts";
import type { MetricsSampler } from "../host/metrics.ts";
import type { Logger } from "../logger.ts";
import { checkDomainName, decodeRepeatedly } from "../logs/log-path.ts";
import { logFacts, readVmLog } from "../logs/vm-log.ts";
import type { LocalConsoles } from "./local-console.ts";

export type LocalApiOptions = {
  host: string;
  port: number;
  /** whether a bearer token is this host's host-view token */
  acceptsToken: (bearer: string) => boolean;
  libvirt: Libvirt;
  /** the agent's sampler, whose in-memory series answer the metrics route (absent: no samples) */
  metrics?: MetricsSampler;
  logDir: string;
  webDir: string;
  log: Logger;
  /** the host view's consoles, serial and graphical (absent: no console routes) */
  consoles?: LocalConsoles;
};

const STATUS: Record<string, number> = {
  vm_not_found: 404,
  log_not_found: 404,
  not_found: 404,
  invalid_name: 400,
  invalid_request: 400,
  unauthorized: 401,
  method_not_allowed: 405,
  libvirt_error: 502,
  web_build_missing: 503,
  internal: 500,
};

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
  ".map": "application/json",
};

// Same policy as the dashboard (web/public/_headers): the page loads only its own files.
const PAGE_HEADERS: Record<string, string> = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/** The console page (`/console`, host.html again) alone lets xterm.js add its <style> elements. */
const CONSOLE_PAGE_HEADERS = {
  ...PAGE_HEADERS,
  "content-security-policy": PAGE_HEADERS["content-security-policy"].replace(
    "style-src 'self';",
    "style-src 'self'; style-src-elem 'self' 'unsafe-inline';",
  ),
};

class HttpFailure extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  res.end(text);
}

function sendError(res: ServerResponse, code: string, message: string) {
  sendJson(res, STATUS[code] ?? 400, { success: false, error: { code, message } });
}

function authorized(req: IncomingMessage, o: LocalApiOptions): boolean {
  const m = /^Bearer ([^\s]+)$/.exec(req.headers.authorization ?? "");
  return !!m && o.acceptsToken(m[1]);
}

export type LocalApi = { server: Server; url: string; close: () => Promise<void> };

export async function startLocalApi(o: LocalApiOptions): Promise<LocalApi> {
  const server = http.createServer((req, res) => {
    handle(o, req, res).catch((err) => {
      if (err instanceof HttpFailure || err instanceof AgentFailure) return sendError(res, err.code, err.message);
      o.log.error({ err: (err as Error)?.stack }, "local API: unexpected error");
      if (!res.headersSent) sendError(res, "internal", "internal error");
      else res.destroy();
    });
  });
  server.on("upgrade", (req: IncomingMessage, socket, head: Buffer) => {
    upgrade(o, req, socket, head).catch((err: unknown) => {
      o.log.warn({ err: (err as Error).message }, "local API: console upgrade failed");
      socket.destroy();
    });
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  o.log.info({ url }, "local API listening");
  return {
    server,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        o.consoles?.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(o: LocalApiOptions, req: IncomingMessage, res: ServerResponse) {
  const raw = req.url ?? "/";
  const q = raw.indexOf("?");
  const rawPath = q >= 0 ? raw.slice(0, q) : raw;
  const search = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : "");
  const consolePost = req.method === "POST" && /^\/api\/v1\/vms\/[^/]+\/console$/.test(rawPath);
  if (req.method !== "GET" && req.method !== "HEAD" && !consolePost)
    throw new HttpFailure("method_not_allowed", "only GET is served here (and POST for a console ticket)");

  if (rawPath === "/api/v1" || rawPath.startsWith("/api/v1/") || rawPath.startsWith("/api/")) {
    if (!authorized(req, o))
      throw new HttpFailure(
        "unauthorized",
        "Authorization: Bearer <host token> required: the file host-token in the agent's state directory",
      );
    // Segments are matched raw: an encoded "/" or ".." stays inside its segment, never a route.
    const parts = rawPath.split("/").slice(1); // ["api","v1",...]
    if (parts.length === 3 && parts[2] === "vms") return listVms(o, search, res);
    if (parts.length === 5 && parts[2] === "vms" && parts[4] === "logs") return vmLogs(o, parts[3], search, res);
    if (parts.length === 5 && parts[2] === "vms" && parts[4] === "metrics") return vmMetrics(o, parts[3], search, res);
    if (consolePost && o.consoles) return consoleTicket(o, o.consoles, parts[3], req, res);
    throw new HttpFailure("not_found", "no such route; try GET /api/v1/vms or GET /api/v1/vms/:vm_id/logs?lines=N");
  }
  return serveStatic(o, rawPath, req, res);
}

async function listVms(o: LocalApiOptions, search: URLSearchParams, res: ServerResponse) {
  let vms = await o.libvirt.listDomains();
  const state = search.get("state");
  if (state) {
    if (!VM_STATES.includes(state as VmState))
      throw new HttpFailure("invalid_request", `state must be one of ${VM_STATES.join(", ")}`);
    vms = vms.filter((v) => v.state === state);
  }
  const text = search.get("q")?.toLowerCase();
  if (text) vms = vms.filter((v) => v.name.toLowerCase().includes(text));
  sendJson(res, 200, {
    vms: vms.map((v) => ({
      id: v.uuid,
      name: v.name,
      state: v.state,
      libvirtState: v.libvirtState,
      vcpus: v.vcpus,
      memoryMiB: v.memoryMiB,
    })),
    nextCursor: null,
  });
}

async function vmLogs(o: LocalApiOptions, rawId: string, search: URLSearchParams, res: ServerResponse) {
  const lines = logLinesOf(search.get("lines") ?? undefined);
  if (lines === null) throw new HttpFailure("invalid_request", LOG_LINES_RULE);
  const id = decodeSegment(rawId);
  if (id === null || id.length > 1000) throw new AgentFailure("vm_not_found", "no such VM on this host");
  // The VM is looked up by UUID or domain name in libvirt's own list: the id is never a path.
  const vm = findVm(await o.libvirt.listDomains(), id);
  if (!vm) throw new AgentFailure("vm_not_found", "no such VM on this host");
  const tail = readVmLog(o.logDir, checkDomainName(vm.name), lines, MAX_LOG_BYTES);
  const body: LogsResponse = { qemuLog: tail.text, ...logFacts(tail) };
  sendJson(res, 200, body);
}

async function vmMetrics(o: LocalApiOptions, rawId: string, search: URLSearchParams, res: ServerResponse) {
  const asked = search.get("range") || "1h";
  if (!Object.hasOwn(METRIC_RANGES, asked))
    throw new HttpFailure("invalid_request", "range must be one of 1h, 24h, 7d, 30d");
  const range = asked as MetricRange;
  const id = decodeSegment(rawId);
  const vm = id === null || id.length > 1000 ? undefined : findVm(await o.libvirt.listDomains(), id);
  if (!vm) throw new AgentFailure("vm_not_found", "no such VM on this host");
  if (!o.metrics)
    return sendJson(res, 200, {
      range: range,
      stepMs: 10_000,
      from: Date.now(),
      to: Date.now(),
      points: [],
    });
  sendJson(res, 200, o.metrics.series(vm.uuid, range));
}

/** A console ticket for the host view (the socket's first message carries it, as on the control plane). */
async function consoleTicket(
  o: LocalApiOptions,
  consoles: LocalConsoles,
  rawId: string,
  req: IncomingMessage,
  res: ServerResponse,
) {
  const id = decodeSegment(rawId);
  const vm = id === null || id.length > 1000 ? undefined : findVm(await o.libvirt.listDomains(), id);
  if (!vm) throw new AgentFailure("vm_not_found", "no such VM on this host");
  let body: unknown;
  try {
    body = JSON.parse(await readBody(req, 4096));
  } catch {
    throw new HttpFailure("invalid_request", "body: not valid JSON ({mode: 'rw' | 'ro', force?: boolean})");
  }
  const answer = consoles.ticket(vm.uuid, body);
  if ("error" in answer) throw new HttpFailure("invalid_request", answer.error);
  sendJson(res, 201, answer);
}

function readBody(req: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      text += chunk;
      if (text.length > max) reject(new Error("too large"));
    });
    req.on("end", () => resolve(text));
    req.on("error", reject);
  });
}

/** `/api/v1/vms/:id/console/ws`: the VM found in libvirt's list, then the console takes the socket. */
async function upgrade(o: LocalApiOptions, req: IncomingMessage, socket: import("node:stream").Duplex, head: Buffer) {
  const parts = (req.url ?? "/").split("?")[0].split("/").slice(1);
  const id =
    parts.length === 6 && parts[2] === "vms" && parts[4] === "console" && parts[5] === "ws"
      ? decodeSegment(parts[3])
      : null;
  const vm = id === null || !o.consoles ? undefined : findVm(await o.libvirt.listDomains(), id);
  if (!vm || !o.consoles) {
    socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    return;
  }
  o.consoles.upgrade(req, socket, head, vm.uuid);
}

/** A URL path segment decoded once, as a browser encoded it (`100%25` is `100%`); null if malformed. */
function decodeSegment(raw: string): string | null {
  try {
    return decodeURIComponent(raw);
  } catch {
    return null;
  }
}

/** By UUID, then by the exact name, then by the one name equal to it in Unicode NFC (a name typed on
 *  one system may arrive in the other normal form). */
function findVm<T extends { uuid: string; name: string }>(vms: T[], id: string): T | undefined {
  const exact = vms.find((v) => v.uuid === id.toLowerCase()) ?? vms.find((v) => v.name === id);
  if (exact) return exact;
  const nfc = id.normalize("NFC");
  const same = vms.filter((v) => v.name.normalize("NFC") === nfc);
  return same.length === 1 ? same[0] : undefined;
}

/** The host view: `/` is host.html; other files must resolve inside the real web dir. */
function serveStatic(o: LocalApiOptions, rawPath: string, req: IncomingMessage, res: ServerResponse) {
  let realDir: string;
  try {
    realDir = realpathSync(o.webDir);
    realpathSync(join(realDir, "host.html"));
  } catch {
    throw new HttpFailure(
      "web_build_missing",
      `the host view is not built (no host.html in ${o.webDir}); run npm run build:web, or use /api/v1`,
    );
  }
  const decoded = decodeRepeatedly(rawPath);
  const rel =
    rawPath === "/" || rawPath === "/index.html" || rawPath === "/host.html" || rawPath === "/console"
      ? "host.html"
      : (decoded ?? "").replace(/^\/+/, "");
  const refused =
    decoded === null ||
    decoded !== rawPath || // asset names need no escapes
    /[\0\\]/.test(rel) ||
    rel.split("/").some((seg) => seg === "" || seg === "." || seg === ".." || seg.startsWith(".")) ||
    !/^[A-Za-z0-9._\-/]+$/.test(rel);
  if (refused) throw new HttpFailure("not_found", "no such file");
  let real: string;
  try {
    real = realpathSync(join(realDir, rel));
  } catch {
    throw new HttpFailure("not_found", "no such file");
  }
  if (!real.startsWith(realDir + sep)) throw new HttpFailure("not_found", "no such file");
  let fd: number;
  try {
    fd = openSync(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    throw new HttpFailure("not_found", "no such file");
  }
  let body: Buffer;
  try {
    if (!fstatSync(fd).isFile()) throw new HttpFailure("not_found", "no such file");
    body = readFileSync(fd);
  } finally {
    closeSync(fd);
  }
  const type = CONTENT_TYPES[extname(real)] ?? "application/octet-stream";
  res.writeHead(200, {
    "content-type": type,
    "content-length": body.length,
    "cache-control": rel.startsWith("assets/") ? "public, max-age=31536000, immutable" : "no-cache",
    ...(rawPath === "/console" ? CONSOLE_PAGE_HEADERS : PAGE_HEADERS),
  });
  res.end(req.method === "HEAD" ? undefined : body);
}
