// `qx`: the Quantix Edge command line, a thin client of the REST API.
// Token and URL from QX_URL / QX_API_TOKEN, or the config file `qx login` writes (mode 0600); behind
// Cloudflare Access, a service token (QX_ACCESS_CLIENT_ID / QX_ACCESS_CLIENT_SECRET) beside or instead
// of the bearer token.
import { parseArgs } from "node:util";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import type {
  JoinTokenResponse,
  LogsResponse,
  MeResponse,
  NodeEventView,
  NodeUpdateResponse,
  NodeView,
  VmEventView,
  VmView,
} from "../protocol/rest.ts";
import { forTerminal, jsonForTerminal } from "./terminal-text.ts";
import { NOTIFICATIONS_USAGE, runNotifications } from "./notifications.ts";
import { METRICS_USAGE, runMetrics } from "./metrics.ts";
import { runConsole } from "./console.ts";

const USAGE = `qx — Quantix Edge CLI

usage: npm run qx -- <command> [options]

  login --url URL --token TOKEN [--access-client-id ID --access-client-secret SECRET]
                                         save the control plane URL, API token and/or Access service token
  whoami                                 who qx acts as (token name, or the Access identity) and its role
  nodes list                             nodes with connection state
  nodes add <name>                       enroll a node: prints its join token and install command once
  nodes rotate <node-id>                 new join token, old credential revoked
  nodes rm <node-id>                     delete a node (its VMs are kept, on no node)
  nodes update <node-id> | --all         update agents to the version the control plane serves (admin)
  nodes events <node-id>                 a node's audit trail: agent updates asked for and how they went
  vms list [--node ID] [--state S] [--search TEXT] [--limit N] [--all]
  vms show <vm-id>
  vms start <vm-id> [--wait]
  vms stop <vm-id> [--force] [--wait]
  vms reset-state <vm-id> [--force] [--reason TEXT]
  vms logs <vm-id> [-n LINES] [--follow] [--raw]
  vms events <vm-id>
  vms console <vm-id> [--ro] [--force]   the VM's serial console here (raw mode; Ctrl-] leaves); --force
                                         takes it from another holder (e.g. a virsh console on the host)
${METRICS_USAGE}
  requests show <request-id>
  tokens list | tokens create <name> --role viewer|operator|admin | tokens revoke <token-id>
${NOTIFICATIONS_USAGE}

options: --json (raw JSON output), --url, --token (override the environment / config file)
         --raw (vms logs: print terminal control sequences in the log as they are; by default escape
         sequences are removed and other control characters shown as \\xNN, so a log cannot drive
         your terminal)
environment: QX_URL, QX_API_TOKEN, QX_CONFIG (config file, default ~/.config/quantix/config.json),
         QX_ACCESS_CLIENT_ID, QX_ACCESS_CLIENT_SECRET (a Cloudflare Access service token, sent as the
         CF-Access-Client-Id / CF-Access-Client-Secret headers; a bearer token, when also given, wins)`;

export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** Where qx talks to and as whom: a bearer token, an Access service token, or both. */
type Config = { url: string; token?: string; accessClientId?: string; accessClientSecret?: string };
type Out = { log: (line: string) => void; err: (line: string) => void };

const configPath = (env: NodeJS.ProcessEnv) => env.QX_CONFIG ?? join(homedir(), ".config", "quantix", "config.json");

function loadConfig(env: NodeJS.ProcessEnv, flags: { url?: string; token?: string }): Config {
  let file: Partial<Config> = {};
  try {
    file = JSON.parse(readFileSync(configPath(env), "utf8")) as Partial<Config>;
  } catch {
    // no config file: environment or flags only
  }
  const url = flags.url ?? env.QX_URL ?? file.url;
  const token = flags.token ?? env.QX_API_TOKEN ?? file.token;
  const accessClientId = env.QX_ACCESS_CLIENT_ID || file.accessClientId;
  const accessClientSecret = env.QX_ACCESS_CLIENT_SECRET || file.accessClientSecret;
  if (!url) throw new CliError("no control plane URL: set QX_URL or run `qx login --url URL --token TOKEN`", 2);
  if (!accessClientId !== !accessClientSecret)
    throw new CliError("an Access service token needs both QX_ACCESS_CLIENT_ID and QX_ACCESS_CLIENT_SECRET", 2);
  if (!token && !accessClientId)
    throw new CliError(
      "no API token: set QX_API_TOKEN (or, behind Cloudflare Access, QX_ACCESS_CLIENT_ID and QX_ACCESS_CLIENT_SECRET) or run `qx login`",
      2,
    );
  return { url: url.replace(/\/+$/, ""), token, accessClientId, accessClientSecret };
}

/** The request headers that say who qx is. */
function identityHeaders(config: Config): Record<string, string> {
  return {
    ...(config.token ? { authorization: `Bearer ${config.token}` } : {}),
    ...(config.accessClientId && config.accessClientSecret
      ? { "cf-access-client-id": config.accessClientId, "cf-access-client-secret": config.accessClientSecret }
      : {}),
  };
}

class Api {
  readonly config: Config;
  constructor(config: Config) {
    this.config = config;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.config.url}${path}`, {
        method,
        headers: {
          ...identityHeaders(this.config),
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        // Access sends an unsigned-in client to its login page: say so instead of following it.
        redirect: "manual",
      });
    } catch (e) {
      throw new CliError(`cannot reach ${this.config.url}: ${(e as Error).message}`);
    }
    if (res.status >= 300 && res.status < 400)
      throw new CliError(
        `${method} ${path}: redirected to ${res.headers.get("location") ?? "another page"} (a Cloudflare Access ` +
          "sign-in? give qx a service token: QX_ACCESS_CLIENT_ID and QX_ACCESS_CLIENT_SECRET)",
      );
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new CliError(`${method} ${path}: HTTP ${res.status}, not JSON`);
    }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string } }).error;
      throw new CliError(`${err?.code ?? `http_${res.status}`}: ${err?.message ?? text}`);
    }
    return json as T;
  }
}

const enc = encodeURIComponent;

/** Who the control plane takes qx for: the token's name, or the Access identity as events name it
 *  (`user:<email>` for a person, `service:<client id>` for a service token). */
function identityOf(me: MeResponse): string {
  if (me.via !== "access") return me.name;
  return me.email ? `user:${me.email}` : `service:${me.name}`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

const vmRow = (v: VmView) => [
  v.id,
  v.name,
  v.state + (v.missing ? " (missing)" : ""),
  v.node_id ?? "-",
  String(v.vcpus),
  `${v.memoryMiB} MiB`,
  v.stateUpdatedAt,
];

/** Lines of `next` that come after the overlap with `prev`: what a follow prints. */
export function newLinesSince(prev: string[], next: string[]): string[] {
  if (prev.length === 0) return next;
  for (let overlap = Math.min(prev.length, next.length); overlap > 0; overlap--) {
    let same = true;
    for (let i = 0; i < overlap && same; i++) same = prev[prev.length - overlap + i] === next[i];
    if (same) return next.slice(overlap);
  }
  return next; // no overlap: the log moved past the window (or was rotated)
}

const splitLines = (text: string) => (text === "" ? [] : text.replace(/\n$/, "").split("\n"));

export async function runCli(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  out: Out = { log: console.log, err: console.error },
  signal?: AbortSignal,
): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      token: { type: "string" },
      "access-client-id": { type: "string" },
      "access-client-secret": { type: "string" },
      json: { type: "boolean", default: false },
      node: { type: "string" },
      state: { type: "string" },
      search: { type: "string" },
      limit: { type: "string" },
      all: { type: "boolean", default: false },
      force: { type: "boolean", default: false },
      wait: { type: "boolean", default: false },
      reason: { type: "string" },
      lines: { type: "string", short: "n" },
      follow: { type: "boolean", short: "f", default: false },
      interval: { type: "string" },
      role: { type: "string" },
      raw: { type: "boolean", default: false },
      ro: { type: "boolean", default: false },
      secret: { type: "string" },
      events: { type: "string" },
      format: { type: "string" },
      target: { type: "string" },
      range: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  // Everything printed is made safe for the terminal; only log lines with --raw are printed as received.
  const terminal: Out = { log: (line) => out.log(forTerminal(line)), err: (line) => out.err(forTerminal(line)) };
  const logOut: Out = values.raw ? out : terminal;
  const [group, action, arg] = positionals;
  if (values.help || !group) {
    out.log(USAGE);
    return values.help ? 0 : 2;
  }
  const print = (data: unknown, human: () => string) =>
    values.json ? out.log(jsonForTerminal(data)) : terminal.log(human());
  const need = (what: string) => {
    if (!arg) throw new CliError(`missing <${what}>: see qx --help`, 2);
    return arg;
  };

  if (group === "login") {
    const access = values["access-client-id"];
    const accessSecret = values["access-client-secret"];
    if (!values.url || !(values.token || access))
      throw new CliError("login needs --url and --token (or --access-client-id and --access-client-secret)", 2);
    if (!access !== !accessSecret)
      throw new CliError("an Access service token needs both --access-client-id and --access-client-secret", 2);
    const saved: Config = {
      url: values.url,
      ...(values.token ? { token: values.token } : {}),
      ...(access ? { accessClientId: access, accessClientSecret: accessSecret } : {}),
    };
    const api = new Api({ ...saved, url: values.url.replace(/\/+$/, "") });
    const me = await api.call<MeResponse>("GET", "/api/me");
    const path = configPath(env);
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(path, JSON.stringify(saved, null, 2), { mode: 0o600 });
    terminal.log(`signed in as ${identityOf(me)} (${me.role}); saved to ${path}`);
    return 0;
  }

  const api = new Api(loadConfig(env, values));
  if (group === "notifications") {
    await runNotifications(
      (method, path, body) => api.call(method, path, body),
      positionals,
      values,
      print,
      table,
      (m) => new CliError(m, 2),
    );
    return 0;
  }
  const key = `${group} ${action ?? ""}`.trim();
  if (key === "vms metrics" || key === "nodes metrics") {
    await runMetrics(
      (method, path, body) => api.call(method, path, body),
      group as "vms" | "nodes",
      need(`${group === "vms" ? "vm" : "node"}-id`),
      values.range,
      print,
      table,
      (m) => new CliError(m, 2),
    );
    return 0;
  }
  switch (key) {
    case "whoami": {
      const me = await api.call<MeResponse>("GET", "/api/me");
      print(me, () => `${identityOf(me)} (${me.role})${me.via === "access" ? " via Cloudflare Access" : ""}`);
      if (api.config.token && api.config.accessClientId && me.via !== "access")
        terminal.err("(a service token is configured too; the control plane acts on the bearer token)");
      return 0;
    }
    case "nodes list": {
      const { nodes } = await api.call<{ nodes: NodeView[] }>("GET", "/api/nodes");
      print(nodes, () =>
        table([
          ["ID", "NAME", "STATUS", "LAST SEEN", "HOSTNAME", "VMS", "AGENT", "LIBVIRT"],
          ...nodes.map((n) => [
            n.id,
            n.name,
            n.connected ? "online" : "offline",
            n.lastSeenAt ?? "never",
            n.hostname ?? "-",
            String(n.vmCount),
            n.agentVersion ?? "-",
            n.libvirtVersion ?? "-",
          ]),
        ]),
      );
      return 0;
    }
    case "nodes add": {
      const res = await api.call<JoinTokenResponse>("POST", "/api/nodes", { name: need("name") });
      print(res, () =>
        [
          `node ${res.node.name} (${res.node.id}) created.`,
          `join token (shown once): ${res.joinToken}`,
          `install the agent: run on the host, as root:`,
          `  ${res.installCommand}`,
        ].join("\n"),
      );
      return 0;
    }
    case "nodes rotate": {
      const res = await api.call<JoinTokenResponse>("POST", `/api/nodes/${enc(need("node-id"))}/rotate_token`);
      print(res, () =>
        [
          `old credential revoked. new join token (shown once): ${res.joinToken}`,
          `re-enroll the host: run on it, as root:`,
          `  ${res.installCommand}`,
        ].join("\n"),
      );
      return 0;
    }
    case "nodes update": {
      let targets: NodeView[];
      if (values.all) {
        const { nodes } = await api.call<{ nodes: NodeView[] }>("GET", "/api/nodes");
        targets = nodes.filter((n) => n.connected);
        for (const n of nodes.filter((n) => !n.connected)) terminal.err(`${n.name}: offline, skipped`);
      } else {
        targets = [(await api.call<{ node: NodeView }>("GET", `/api/nodes/${enc(need("node-id"))}`)).node];
      }
      const results: { node: string; id: string; outcome: string; targetVersion?: string }[] = [];
      for (const n of targets) {
        try {
          const res = await api.call<NodeUpdateResponse>("POST", `/api/nodes/${enc(n.id)}/update`);
          const outcome = res.upToDate ? "up to date" : "updating";
          results.push({ node: n.name, id: n.id, outcome, targetVersion: res.targetVersion });
        } catch (err) {
          if (!(err instanceof CliError)) throw err;
          results.push({ node: n.name, id: n.id, outcome: `not updated: ${err.message}` });
        }
      }
      print(
        results,
        () =>
          results
            .map((r) =>
              r.outcome === "updating"
                ? `${r.node}: updating to ${r.targetVersion}; the agent restarts and reports back (qx nodes events ${r.id})`
                : r.outcome === "up to date"
                  ? `${r.node}: runs ${r.targetVersion} already`
                  : `${r.node}: ${r.outcome}`,
            )
            .join("\n") || "no connected node to update",
      );
      return results.some((r) => r.outcome.startsWith("not updated")) ? 1 : 0;
    }
    case "nodes events": {
      const { events } = await api.call<{ events: NodeEventView[] }>(
        "GET",
        `/api/nodes/${enc(need("node-id"))}/events`,
      );
      print(events, () =>
        table([
          ["AT", "ACTION", "FROM", "TO", "BY", "MESSAGE"],
          ...events.map((e) => [e.at, e.action, e.fromVersion ?? "-", e.toVersion ?? "-", e.actor, e.message ?? ""]),
        ]),
      );
      return 0;
    }
    case "nodes rm": {
      await api.call("DELETE", `/api/nodes/${enc(need("node-id"))}`);
      print({ deleted: arg }, () => `node ${arg} deleted`);
      return 0;
    }
    case "vms list": {
      const params = new URLSearchParams();
      if (values.node) params.set("node_id", values.node);
      if (values.state) params.set("state", values.state.toUpperCase());
      if (values.search) params.set("q", values.search);
      params.set("limit", values.limit ?? "100");
      const all: VmView[] = [];
      let cursor: string | null = null;
      do {
        if (cursor) params.set("cursor", cursor);
        const page: { vms: VmView[]; nextCursor: string | null } = await api.call("GET", `/api/vms?${params}`);
        all.push(...page.vms);
        cursor = values.all ? page.nextCursor : null;
      } while (cursor);
      print(all, () => table([["ID", "NAME", "STATE", "NODE", "VCPUS", "MEMORY", "STATE SINCE"], ...all.map(vmRow)]));
      return 0;
    }
    case "vms show": {
      const { vm } = await api.call<{ vm: VmView }>("GET", `/api/vms/${enc(need("vm-id"))}`);
      print(vm, () =>
        Object.entries(vm)
          .map(([k, v]) => `${k.padEnd(15)} ${v}`)
          .join("\n"),
      );
      return 0;
    }
    case "vms start":
    case "vms stop": {
      const qs = new URLSearchParams();
      if (values.force && action === "stop") qs.set("force", "true");
      if (values.wait) qs.set("wait", "true");
      const res = await api.call<{ vm: VmView; request?: { id: string; status: string } }>(
        "POST",
        `/api/vms/${enc(need("vm-id"))}/${action}?${qs}`,
      );
      print(
        res,
        () =>
          `${res.vm.name}: ${res.vm.state}${res.request ? ` (request ${res.request.id}: ${res.request.status})` : ""}`,
      );
      return 0;
    }
    case "vms reset-state": {
      const qs = new URLSearchParams();
      if (values.force) qs.set("force", "true");
      const res = await api.call<{
        message: string;
        previousState: string;
        source: string;
        vm: { name: string; state: string };
      }>(
        "POST",
        `/api/vms/${enc(need("vm-id"))}/reset_state?${qs}`,
        values.reason ? { reason: values.reason } : undefined,
      );
      print(res, () => `${res.vm.name}: ${res.previousState} -> ${res.vm.state} (${res.source}): ${res.message}`);
      return 0;
    }
    case "vms logs": {
      const id = need("vm-id");
      const lines = values.lines ?? "100";
      const path = `/api/vms/${enc(id)}/logs?lines=${enc(lines)}`;
      const first = await api.call<LogsResponse>("GET", path);
      if (values.json && !values.follow) {
        print(first, () => "");
        return 0;
      }
      let shown = splitLines(first.qemuLog);
      for (const line of shown) logOut.log(line);
      if (first.truncated && !values.follow)
        terminal.err(`(last ${first.linesReturned} lines of ${first.logPath}, ${first.logSizeBytes} bytes)`);
      if (!values.follow) return 0;
      const intervalMs = Math.max(500, Number(values.interval ?? "2000"));
      while (!signal?.aborted) {
        await new Promise((r) => setTimeout(r, intervalMs));
        if (signal?.aborted) break;
        const next = splitLines((await api.call<LogsResponse>("GET", path)).qemuLog);
        for (const line of newLinesSince(shown, next)) logOut.log(line);
        shown = next;
      }
      return 0;
    }
    case "vms console": {
      const id = need("vm-id");
      return runConsole(
        (method, path, body) => api.call(method, path, body),
        api.config.url,
        id,
        { mode: values.ro ? "ro" : "rw", force: values.force },
        {
          stdin: process.stdin,
          stdout: process.stdout,
          status: (line) => process.stderr.write(`\r\n${forTerminal(line)}\r\n`),
        },
      );
    }
    case "vms events": {
      const { events } = await api.call<{ events: VmEventView[] }>("GET", `/api/vms/${enc(need("vm-id"))}/events`);
      print(events, () =>
        table([
          ["AT", "ACTOR", "ACTION", "FROM", "TO", "SOURCE", "MESSAGE"],
          ...events.map((e) => [
            e.at,
            e.actor,
            e.action,
            e.fromState ?? "-",
            e.toState ?? "-",
            e.source ?? "-",
            e.message ?? "",
          ]),
        ]),
      );
      return 0;
    }
    case "requests show": {
      const res = await api.call<{ request: Record<string, unknown> }>(
        "GET",
        `/api/requests/${enc(need("request-id"))}`,
      );
      print(res.request, () =>
        Object.entries(res.request)
          .map(([k, v]) => `${k.padEnd(11)} ${typeof v === "object" && v ? JSON.stringify(v) : v}`)
          .join("\n"),
      );
      return 0;
    }
    case "tokens list": {
      const { tokens } = await api.call<{
        tokens: { id: string; name: string; role: string; createdAt: string; revokedAt: string | null }[];
      }>("GET", "/api/tokens");
      print(tokens, () =>
        table([
          ["ID", "NAME", "ROLE", "CREATED", "REVOKED"],
          ...tokens.map((t) => [t.id, t.name, t.role, t.createdAt, t.revokedAt ?? "-"]),
        ]),
      );
      return 0;
    }
    case "tokens create": {
      if (!values.role) throw new CliError("tokens create needs --role viewer|operator|admin", 2);
      const res = await api.call<{ token: string; id: string }>("POST", "/api/tokens", {
        name: need("name"),
        role: values.role,
      });
      print(res, () => `token ${res.id} (shown once): ${res.token}`);
      return 0;
    }
    case "tokens revoke": {
      await api.call("DELETE", `/api/tokens/${enc(need("token-id"))}`);
      print({ revoked: arg }, () => `token ${arg} revoked`);
      return 0;
    }
    default:
      throw new CliError(`unknown command "${key}": see qx --help`, 2);
  }
}

if (import.meta.main) {
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  runCli(process.argv.slice(2), process.env, undefined, abort.signal).then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(forTerminal(`qx: ${e instanceof CliError ? e.message : (e as Error).message}`)); // server text in it too
      process.exit(e instanceof CliError ? e.exitCode : 1);
    },
  );
}
