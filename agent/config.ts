// The agent's configuration: command-line flags and their QX_* environment equivalents, each checked
// by a small function (zod would cost an idle agent megabytes of memory for this one parse).
// A bad value is a one-line message and exit status 2 (see ConfigError), never a stack trace.
import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { TRANSPORTS } from "./link/transport.ts";
import { cleartextServerProblem } from "./link/cleartext-server.ts";
import { UnsupportedUriError, resolveUri } from "./libvirt/index.ts";
import { METRICS_PACE_BYTES_PER_SECOND } from "./host/metrics.ts";

export const EXIT_BAD_CONFIG = 2;

export class ConfigError extends Error {}

/** A value refused, with why (the flag is put in front of it by loadConfig). */
class FieldError extends Error {}
type Field<T> = (v: unknown) => T;

const text =
  (min = 0, max = Infinity): Field<string> =>
  (v) => {
    if (typeof v !== "string") throw new FieldError("expected a string");
    if (v.length < min) throw new FieldError(min === 1 ? "must not be empty" : `at least ${min} characters`);
    if (v.length > max) throw new FieldError(`at most ${max} characters`);
    return v;
  };

const optional =
  <T>(field: Field<T>): Field<T | undefined> =>
  (v) =>
    v === undefined ? undefined : field(v);

const oneOf =
  <const T extends readonly string[]>(
    options: T,
    message = `expected one of ${options.join(", ")}`,
  ): Field<T[number]> =>
  (v) => {
    if (typeof v !== "string" || !options.includes(v)) throw new FieldError(message);
    return v;
  };

const flag: Field<boolean> = (v) => {
  if (typeof v !== "boolean") throw new FieldError("expected true or false");
  return v;
};

const hostPort: Field<{ host: string; port: number }> = (v) => {
  const raw = text()(v);
  // "8080" and ":8080" mean loopback: the local API is for the host itself unless asked otherwise.
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):)?(\d{1,5})$/.exec(raw.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new FieldError(`expected HOST:PORT, :PORT or PORT (got "${raw}")`);
  const host = (m[1] ?? "").replace(/^\[|\]$/g, "") || "127.0.0.1";
  return { host, port };
};

const serverUrl: Field<string> = (v) => {
  const raw = text()(v);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FieldError(`not a URL: "${raw}"`);
  }
  if (!["http:", "https:", "ws:", "wss:"].includes(url.protocol))
    throw new FieldError(`expected an http(s):// or ws(s):// URL (got "${raw}")`);
  if (url.username || url.password) throw new FieldError("the server URL must not carry credentials");
  // Keep only origin + base path: enrollment and the WebSocket paths are appended to it.
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, "")}`;
};

/** A switch given as a flag (true) or as an environment variable ("1"/"0", "true"/"false"). */
const onOff: Field<boolean> = (v) => {
  if (v === true || v === false) return v;
  if (typeof v === "string" && ["1", "true", "yes", "on"].includes(v)) return true;
  if (typeof v === "string" && ["0", "false", "no", "off"].includes(v)) return false;
  throw new FieldError("expected 1 or 0");
};

const bytesPerSecond =
  (min: number, max: number): Field<number> =>
  (v) => {
    const n = Number(v);
    if (typeof v === "boolean" || !Number.isSafeInteger(n)) throw new FieldError("must be a whole number of bytes");
    if (n < min) throw new FieldError(`must be at least ${min}`);
    if (n > max) throw new FieldError(`must be at most ${max}`);
    return n;
  };
const millis =
  (min: number, max: number): Field<number> =>
  (v) => {
    const n = Number(v);
    if (typeof v === "boolean" || !Number.isFinite(n)) throw new FieldError("must be a number of milliseconds");
    if (!Number.isSafeInteger(n)) throw new FieldError("must be a whole number of milliseconds");
    if (n < min) throw new FieldError(`must be at least ${min}`);
    if (n > max) throw new FieldError(`must be at most ${max}`);
    return n;
  };

/** Checked in this order; the first refused value is the one reported. */
const CONFIG = {
  server: optional(serverUrl),
  token: optional(text(1, 200)),
  stateDir: text(1),
  libvirtUri: text(1),
  logDir: text(1),
  listen: optional(hostPort),
  webDir: text(1),
  insecureHttp: onOff,
  rotateHostToken: flag,
  enrollOnly: flag,
  checkUpdate: flag,
  logLevel: oneOf(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
  pollIntervalMs: millis(100, 600_000),
  stopPollMs: millis(10, 60_000),
  followPollMs: millis(50, 60_000),
  connectTimeoutMs: millis(100, 120_000),
  backoffBaseMs: millis(1, 60_000),
  backoffCapMs: millis(1, 3_600_000),
  stableAfterMs: millis(1, 3_600_000),
  shutdownDeadlineMs: millis(100, 60_000),
  transport: oneOf(TRANSPORTS),
  pollWaitMs: millis(100, 120_000),
  websocketRetryMs: millis(100, 86_400_000),
  digestIntervalMs: millis(1_000, 86_400_000),
  progressIntervalMs: millis(100, 60_000),
  operationCapMs: millis(1_000, 86_400_000),
  metricsIntervalMs: (v: unknown) => {
    const ms = millis(0, 3_600_000)(v);
    if (ms !== 0 && ms < 1_000) throw new FieldError("must be 0 (off) or at least 1000 ms");
    return ms;
  },
  metricsBatchMs: millis(1_000, 3_600_000),
  metricsPace: bytesPerSecond(1_024, 1_073_741_824),
  events: oneOf(["auto", "off"], "expected auto or off"),
  updateConfirmMs: millis(1_000, 3_600_000),
};
export type AgentConfig = { [K in keyof typeof CONFIG]: ReturnType<(typeof CONFIG)[K]> };

export const USAGE = `usage: quantix-agent --server URL [--token JOIN_TOKEN] [--state-dir DIR] [--libvirt-uri URI]
                     [--log-dir DIR] [--listen HOST:PORT] [--web-dir DIR] [--log-level LEVEL]
                     [--poll-interval MS] [--connect-timeout MS] [--backoff-base MS] [--backoff-cap MS]
                     [--stable-after MS] [--stop-poll MS] [--follow-poll MS] [--shutdown-deadline MS]
                     [--transport auto|websocket|long-poll] [--poll-wait MS] [--websocket-retry MS]
                     [--digest-interval MS] [--progress-interval MS] [--operation-cap MS] [--insecure-http]
                     [--metrics-interval MS (0: off)] [--metrics-batch MS] [--metrics-pace BYTES/S] [--events auto|off]
       quantix-agent --rotate-host-token [--state-dir DIR]   (new host-view token, then exit)
       quantix-agent --enroll --server URL --token JOIN_TOKEN [--state-dir DIR]
                     (trade the join token for the node credential, then exit: 0 enrolled or already
                     enrolled with this token, 3 refused, 1 control plane unreachable)
       quantix-agent --check-update [--state-dir DIR]   (the unit's ExecStartPre, run from the previous
                     file: puts it back if the updated agent started once and never connected)
env: QX_SERVER, QX_TOKEN, QX_STATE_DIR, QX_LIBVIRT_URI, QX_LOG_DIR, QX_LISTEN, QX_WEB_DIR, QX_LOG_LEVEL,
     QX_TRANSPORT (default auto: WebSocket, long-poll over HTTPS after 5 WebSocket failures in a row)
     QX_METRICS_INTERVAL_MS (default 10000), QX_EVENTS (auto: libvirt lifecycle events, with the
     poll as the safety net; off: polling only)
     QX_UPDATE_CONFIRM_MS (default 120000: an updated agent not connected by then exits, and the
     next start rolls it back)
     QX_INSECURE_HTTP=1 (allow a plain http:// server that is not on loopback: credentials in clear text)
--server may be left out only with --listen: the agent then serves the local API alone, guarded by
the host token it keeps in <state dir>/host-token (made on the first --listen run).`;

/** The host view's files: web/dist of the repo, or web/ beside the bundled agent. */
function defaultWebDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, "web"), resolve(here, "../web/dist")];
  return candidates.find((d) => existsSync(join(d, "host.html"))) ?? candidates[1];
}

const OPTIONS = {
  server: { type: "string", env: "QX_SERVER" },
  token: { type: "string", env: "QX_TOKEN" },
  "state-dir": { type: "string", env: "QX_STATE_DIR" },
  "libvirt-uri": { type: "string", env: "QX_LIBVIRT_URI" },
  "log-dir": { type: "string", env: "QX_LOG_DIR" },
  listen: { type: "string", env: "QX_LISTEN" },
  "web-dir": { type: "string", env: "QX_WEB_DIR" },
  "insecure-http": { type: "boolean", env: "QX_INSECURE_HTTP" },
  "rotate-host-token": { type: "boolean" },
  enroll: { type: "boolean" },
  "check-update": { type: "boolean" },
  "log-level": { type: "string", env: "QX_LOG_LEVEL" },
  "poll-interval": { type: "string", env: "QX_POLL_INTERVAL" },
  "stop-poll": { type: "string", env: "QX_STOP_POLL" },
  "follow-poll": { type: "string", env: "QX_FOLLOW_POLL" },
  "connect-timeout": { type: "string", env: "QX_CONNECT_TIMEOUT" },
  "backoff-base": { type: "string", env: "QX_BACKOFF_BASE" },
  "backoff-cap": { type: "string", env: "QX_BACKOFF_CAP" },
  "stable-after": { type: "string", env: "QX_STABLE_AFTER" },
  "shutdown-deadline": { type: "string", env: "QX_SHUTDOWN_DEADLINE" },
  transport: { type: "string", env: "QX_TRANSPORT" },
  "poll-wait": { type: "string", env: "QX_POLL_WAIT" },
  "websocket-retry": { type: "string", env: "QX_WEBSOCKET_RETRY" },
  "digest-interval": { type: "string", env: "QX_DIGEST_INTERVAL_MS" },
  "progress-interval": { type: "string", env: "QX_PROGRESS_INTERVAL_MS" },
  "operation-cap": { type: "string", env: "QX_OPERATION_CAP_MS" },
  "metrics-interval": { type: "string", env: "QX_METRICS_INTERVAL_MS" },
  "metrics-batch": { type: "string", env: "QX_METRICS_BATCH_MS" },
  "metrics-pace": { type: "string", env: "QX_METRICS_PACE" },
  events: { type: "string", env: "QX_EVENTS" },
  "update-confirm": { type: "string", env: "QX_UPDATE_CONFIRM_MS" },
  help: { type: "boolean", short: "h" },
} as const;

const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Flags win over environment variables; throws ConfigError with a one-line message. */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): AgentConfig | "help" {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: Object.fromEntries(
        Object.entries(OPTIONS).map(([k, o]) => [k, { type: o.type, ...("short" in o ? { short: o.short } : {}) }]),
      ),
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (values.help) return "help";
  const raw: Record<string, unknown> = {
    stateDir: "/var/lib/quantix-agent",
    libvirtUri: "qemu:///system",
    logDir: "/var/log/libvirt/qemu",
    webDir: defaultWebDir(),
    insecureHttp: false,
    rotateHostToken: values["rotate-host-token"] ?? false,
    enrollOnly: values.enroll ?? false,
    checkUpdate: values["check-update"] ?? false,
    logLevel: "info",
    pollIntervalMs: 3_000,
    stopPollMs: 500,
    followPollMs: 500,
    connectTimeoutMs: 10_000,
    backoffBaseMs: 1_000,
    backoffCapMs: 30_000,
    stableAfterMs: 30_000,
    shutdownDeadlineMs: 5_000,
    transport: "auto",
    pollWaitMs: 25_000,
    websocketRetryMs: 600_000,
    digestIntervalMs: 60_000,
    progressIntervalMs: 3_000,
    operationCapMs: 600_000,
    metricsIntervalMs: 10_000,
    metricsBatchMs: 3_600_000,
    metricsPace: METRICS_PACE_BYTES_PER_SECOND,
    events: "auto",
    updateConfirmMs: 120_000,
  };
  for (const [flag, o] of Object.entries(OPTIONS)) {
    if (!("env" in o)) continue;
    const v = values[flag] ?? (env[o.env] === "" ? undefined : env[o.env]);
    if (v !== undefined)
      raw[
        camel(flag).replace(
          /^(pollInterval|stopPoll|followPoll|connectTimeout|backoffBase|backoffCap|stableAfter|shutdownDeadline|pollWait|websocketRetry|digestInterval|progressInterval|operationCap|metricsInterval|metricsBatch|updateConfirm)$/,
          "$1Ms",
        )
      ] = v;
  }
  const config = {} as Record<string, unknown>;
  for (const [key, field] of Object.entries(CONFIG)) {
    try {
      config[key] = (field as Field<unknown>)(raw[key]);
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      const flag = Object.keys(OPTIONS).find((f) => camel(f) === key || `${camel(f)}Ms` === key) ?? key;
      throw new ConfigError(`--${flag}: ${err.message}`);
    }
  }
  return checked(config as AgentConfig, env);
}

/** What no single value shows: the flags that need each other, the server in clear text, the URI. */
function checked(config: AgentConfig, env: NodeJS.ProcessEnv): AgentConfig {
  if (config.rotateHostToken || config.checkUpdate) return config; // one-shot commands: the rest does not apply
  if (config.enrollOnly && (!config.server || !config.token))
    throw new ConfigError("--enroll needs --server and --token (or QX_SERVER and QX_TOKEN)");
  if (!config.server && !config.listen)
    throw new ConfigError("--server (or QX_SERVER) is required, unless --listen is given alone");
  const cleartext = config.server && !config.insecureHttp ? cleartextServerProblem(config.server) : null;
  if (cleartext) throw new ConfigError(`--server: ${cleartext}`);
  if (config.backoffCapMs < config.backoffBaseMs)
    throw new ConfigError("--backoff-cap must not be below --backoff-base");
  try {
    resolveUri(config.libvirtUri, env); // a URI the agent cannot speak is refused now, not at each call
  } catch (err) {
    if (err instanceof UnsupportedUriError) throw new ConfigError(`--libvirt-uri: ${err.message}`);
    throw err;
  }
  return config;
}
