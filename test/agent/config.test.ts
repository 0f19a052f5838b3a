// The agent's configuration, checked without zod: every refused value is a one-line ConfigError
// naming its flag, and the accepted ones come out as the agent uses them.
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, type AgentConfig } from "../../agent/config.ts";

const server = ["--server", "http://127.0.0.1:8787"];
const load = (argv: string[], env: NodeJS.ProcessEnv = {}) => loadConfig(argv, env) as AgentConfig;
const refusal = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
  try {
    loadConfig(argv, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${argv.join(" ")}`);
};

describe("agent configuration", () => {
  it("defaults, flags over environment variables, and the server URL kept as origin + base path", () => {
    const c = load(["--server", "https://qx.example.com/base//", "--poll-interval", "250"], {
      QX_POLL_INTERVAL: "900",
      QX_STOP_POLL: "20",
      QX_LOG_LEVEL: "debug",
      QX_INSECURE_HTTP: "yes",
      QX_TRANSPORT: "long-poll",
    });
    expect(c).toMatchObject({
      server: "https://qx.example.com/base",
      pollIntervalMs: 250,
      stopPollMs: 20,
      logLevel: "debug",
      insecureHttp: true,
      transport: "long-poll",
      libvirtUri: "qemu:///system",
      connectTimeoutMs: 10_000,
      metricsIntervalMs: 10_000,
      events: "auto",
    });
    expect(c.token).toBeUndefined();
    expect(load([...server, "--token", "join ✓"]).token).toBe("join ✓");
    expect(load([...server, "--insecure-http"]).insecureHttp).toBe(true);
    expect(load(server, { QX_INSECURE_HTTP: "0" }).insecureHttp).toBe(false);
  });

  it("--listen takes HOST:PORT, :PORT or PORT (loopback unless a host is named) and alone needs no server", () => {
    expect(load(["--listen", "8080"]).listen).toEqual({ host: "127.0.0.1", port: 8080 });
    expect(load(["--listen", ":0"]).listen).toEqual({ host: "127.0.0.1", port: 0 });
    expect(load(["--listen", "[::1]:9000"]).listen).toEqual({ host: "::1", port: 9000 });
    expect(load(["--listen", "0.0.0.0:65535"]).listen).toEqual({ host: "0.0.0.0", port: 65535 });
    expect(refusal(["--listen", "65536"])).toBe('--listen: expected HOST:PORT, :PORT or PORT (got "65536")');
  });

  it("each bad value is refused with its flag and why", () => {
    expect(refusal(["--server", "not a url"])).toBe('--server: not a URL: "not a url"');
    expect(refusal(["--server", "ftp://x"])).toMatch(/^--server: expected an http\(s\):\/\/ or ws\(s\):\/\/ URL/);
    expect(refusal(["--server", "https://u:p@x"])).toBe("--server: the server URL must not carry credentials");
    expect(refusal([...server, "--token", ""])).toBe("--token: must not be empty");
    expect(refusal([...server, "--token", "x".repeat(201)])).toBe("--token: at most 200 characters");
    expect(refusal([...server, "--poll-interval", "soon"])).toBe("--poll-interval: must be a number of milliseconds");
    expect(refusal([...server, "--poll-interval", "1.5"])).toBe(
      "--poll-interval: must be a whole number of milliseconds",
    );
    expect(refusal([...server, "--poll-interval", "99"])).toBe("--poll-interval: must be at least 100");
    expect(refusal([...server, "--backoff-cap", "3600001"])).toBe("--backoff-cap: must be at most 3600000");
    expect(refusal([...server, "--log-level", "loud"])).toBe(
      "--log-level: expected one of fatal, error, warn, info, debug, trace, silent",
    );
    expect(refusal([...server, "--transport", "pigeon"])).toBe(
      "--transport: expected one of auto, websocket, long-poll",
    );
    expect(refusal(server, { QX_INSECURE_HTTP: "maybe" })).toBe("--insecure-http: expected 1 or 0");
    expect(refusal([...server, "--backoff-base", "500", "--backoff-cap", "100"])).toBe(
      "--backoff-cap must not be below --backoff-base",
    );
    expect(refusal([])).toMatch(/^--server \(or QX_SERVER\) is required/);
    expect(refusal(["--bogus"])).toMatch(/bogus/);
  });
});
