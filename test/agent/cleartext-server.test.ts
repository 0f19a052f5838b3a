// A plain http:// (or ws://) control plane off this host would carry the join token and the node
// credential in clear text: the agent refuses it unless told --insecure-http. Loopback stays allowed.
// No test here sends anything to a non-loopback address: the refusal happens before any connection.
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../agent/config.ts";
import { isLoopbackHost } from "../../agent/link/cleartext-server.ts";
import { spawnAgentProcess, tempDir } from "./helpers.ts";

const base = ["--state-dir", "/nonexistent/qx-state"];
const serverOf = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
  const config = loadConfig([...base, ...argv], env);
  if (config === "help") throw new Error("unexpected --help");
  return config.server;
};
const refusal = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
  try {
    loadConfig([...base, ...argv], env);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  return null;
};

const REMOTE_PLAIN = [
  "http://192.0.2.10:8787",
  "ws://edge.example.com",
  "http://10.0.0.5",
  "http://[2001:db8::1]:8787",
  "http://127.0.0.1.example.com",
  "http://localhost.example.com",
  "http://[::2]",
];
const LOOPBACK_PLAIN = [
  "http://127.0.0.1:8787",
  "http://127.8.9.10",
  "http://localhost:8787",
  "http://LOCALHOST",
  "http://[::1]:8787",
  "ws://127.0.0.1:8787",
  "http://[::ffff:127.0.0.1]:8787",
  "http://0x7f000001:8787",
];

describe("clear-text control planes", () => {
  it.each(REMOTE_PLAIN)("refuses %s, saying credentials would travel in clear text", (server) => {
    const message = refusal(["--server", server]);
    expect(message).toMatch(/^--server: .* is not encrypted: the join token, the node credential .* clear text/);
    expect(message).toMatch(/--insecure-http \(QX_INSECURE_HTTP=1\)/);
  });

  it.each(REMOTE_PLAIN)("accepts %s with --insecure-http or QX_INSECURE_HTTP=1", (server) => {
    const { protocol, host } = new URL(server);
    expect(serverOf(["--server", server, "--insecure-http"])).toBe(`${protocol}//${host}`);
    expect(serverOf(["--server", server], { QX_INSECURE_HTTP: "1" })).toBe(`${protocol}//${host}`);
    expect(serverOf([], { QX_SERVER: server, QX_INSECURE_HTTP: "true" })).toBe(`${protocol}//${host}`);
    expect(refusal(["--server", server], { QX_INSECURE_HTTP: "0" })).toMatch(/clear text/);
  });

  it.each(LOOPBACK_PLAIN)("allows loopback %s without the flag", (server) => {
    expect(refusal(["--server", server])).toBeNull();
  });

  it("allows https:// and wss:// anywhere", () => {
    expect(serverOf(["--server", "https://edge.example.com"])).toBe("https://edge.example.com");
    expect(serverOf(["--server", "wss://192.0.2.10:443/base/"])).toBe("wss://192.0.2.10/base");
  });

  it("says what a bad QX_INSECURE_HTTP value should be", () => {
    expect(refusal(["--server", "https://edge.example.com"], { QX_INSECURE_HTTP: "maybe" })).toMatch(
      /^--insecure-http: expected 1 or 0/,
    );
  });

  it("knows loopback as URL spells it", () => {
    for (const host of ["localhost", "127.0.0.1", "127.255.255.254", "[::1]", "[::ffff:7f00:1]"])
      expect(isLoopbackHost(host), host).toBe(true);
    for (const host of [
      "128.0.0.1",
      "10.127.0.1",
      "[::]",
      "0.0.0.0",
      "localhost.localdomain",
      "[fe80::1]",
      "[::ffff:a00:1]",
    ])
      expect(isLoopbackHost(host), host).toBe(false);
  });

  it("the agent process exits 2 with the reason, before connecting anywhere", async () => {
    const agent = spawnAgentProcess(["--server", "http://192.0.2.10:8787", "--state-dir", tempDir()]);
    expect(await agent.exit).toBe(2);
    const out = agent.out().trim();
    expect(out.split("\n")).toHaveLength(1);
    expect(out).toMatch(
      /^quantix-agent: --server: http:\/\/192\.0\.2\.10:8787 is not encrypted: .*clear text.*--insecure-http/,
    );
  }, 30_000);
});
