// The host view's own token, with the real agent process (`--listen`) beside a loopback control
// plane: the local API takes the host token and refuses the node credential; the token lives in the
// state directory (0600) and is never logged; `--rotate-host-token` replaces it for the running agent.
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { HostTokenCheck, ensureHostToken, hostTokenPath, rotateHostToken } from "../../agent/local/host-token.ts";
import {
  LoopbackControlPlane,
  TEST_URI,
  VMS,
  spawnAgentProcess,
  tempDir,
  until,
  type AgentProcess,
} from "./helpers.ts";

const NODE_CREDENTIAL = "qxn_node-credential-of-this-host";
const FAST = ["--backoff-base", "50", "--backoff-cap", "200", "--poll-interval", "200", "--log-level", "debug"];

let cp: LoopbackControlPlane;
const cleanups: (() => void)[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  cp = await LoopbackControlPlane.start();
});
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});
afterAll(async () => {
  await cp?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function dir(prefix: string) {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}

function spawnAgent(args: string[]): AgentProcess {
  const agent = spawnAgentProcess(args);
  cleanups.push(agent.kill);
  return agent;
}

/** The local API's URL, from the agent's "local API listening" log line. */
async function localApiUrl(agent: AgentProcess): Promise<string> {
  let url: string | undefined;
  await until(() => {
    url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"[^\n]*"msg":"local API listening"/.exec(agent.out())?.[1];
    if (agent.child.exitCode !== null) throw new Error(`agent exited ${agent.child.exitCode}:\n${agent.out()}`);
    return !!url;
  }, 20_000);
  return url!;
}

const readToken = (stateDir: string) => readFileSync(hostTokenPath(stateDir), "utf8").trim();

async function vmsWith(url: string, bearer: string | null) {
  const res = await fetch(`${url}/api/v1/vms`, {
    headers: bearer === null ? {} : { authorization: `Bearer ${bearer}` },
  });
  return { status: res.status, body: (await res.json()) as { vms?: { name: string }[]; error?: { code: string } } };
}

/** `--rotate-host-token` as an operator runs it: a separate, one-shot process. */
async function rotate(stateDir: string) {
  const cmd = spawnAgentProcess(["--rotate-host-token", "--state-dir", stateDir]);
  cleanups.push(cmd.kill);
  return { code: await cmd.exit, out: cmd.out() };
}

describe("the host token on the agent's local API", () => {
  it("takes the host token, refuses the node credential and no token; the token is 0600 and never logged", async () => {
    cp.joinTokens.set("join-host-view", NODE_CREDENTIAL);
    const stateDir = join(dir("qx-host-token-"), "state");
    const logDir = dir("qx-host-logs-");
    writeFileSync(join(logDir, `${VMS.running.name}.log`), "boot\nqemu up\n");
    const agent = spawnAgent([
      "--server",
      cp.url,
      "--token",
      "join-host-view",
      "--state-dir",
      stateDir,
      "--libvirt-uri",
      TEST_URI,
      "--log-dir",
      logDir,
      "--listen",
      "127.0.0.1:0",
      ...FAST,
    ]);
    const url = await localApiUrl(agent);
    await cp.waitFor((m) => m.type === "hello");
    const token = readToken(stateDir);

    expect(token).toMatch(/^qxh_[A-Za-z0-9_-]{43}$/);
    expect(statSync(hostTokenPath(stateDir)).mode & 0o777).toBe(0o600);
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    const nodeFile = JSON.parse(readFileSync(join(stateDir, "node.json"), "utf8")) as { credential: string };
    expect(nodeFile.credential).toBe(NODE_CREDENTIAL);
    expect(token).not.toBe(nodeFile.credential);

    const ok = await vmsWith(url, token);
    expect(ok.status).toBe(200);
    expect(ok.body.vms).toHaveLength(8);
    const logs = await fetch(`${url}/api/v1/vms/${VMS.running.uuid}/logs?lines=5`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(logs.status).toBe(200);
    expect(((await logs.json()) as { qemuLog: string }).qemuLog).toBe("boot\nqemu up\n");

    for (const bearer of [NODE_CREDENTIAL, null, "", `${token}x`, token.slice(0, -1)]) {
      const refused = await vmsWith(url, bearer);
      expect(refused.status, String(bearer)).toBe(401);
      expect(refused.body).toMatchObject({ success: false, error: { code: "unauthorized" } });
    }
    const credOnLogs = await fetch(`${url}/api/v1/vms/${VMS.running.uuid}/logs`, {
      headers: { authorization: `Bearer ${NODE_CREDENTIAL}` },
    });
    expect(credOnLogs.status).toBe(401);

    // Where the token is, but never the token (nor the node credential) in the agent's output.
    expect(agent.out()).toContain(hostTokenPath(stateDir));
    expect(agent.out()).not.toContain(token);
    expect(agent.out()).not.toContain(NODE_CREDENTIAL);
  }, 60_000);

  it("--rotate-host-token writes a new token and exits 0; the running agent refuses the old one from its next request", async () => {
    const stateDir = join(dir("qx-host-rotate-"), "state");
    // --listen alone: the host view works on a host that was never enrolled (no node credential at all).
    const agent = spawnAgent([
      "--state-dir",
      stateDir,
      "--libvirt-uri",
      TEST_URI,
      "--log-dir",
      dir("qx-host-logs-"),
      "--listen",
      "127.0.0.1:0",
      "--log-level",
      "info",
    ]);
    const url = await localApiUrl(agent);
    const before = readToken(stateDir);
    expect((await vmsWith(url, before)).status).toBe(200);

    const rotated = await rotate(stateDir);
    expect(rotated.code).toBe(0);
    expect(rotated.out).toContain(hostTokenPath(stateDir));
    const after = readToken(stateDir);
    expect(after).not.toBe(before);
    expect(rotated.out).not.toContain(after);
    expect(statSync(hostTokenPath(stateDir)).mode & 0o777).toBe(0o600);

    expect((await vmsWith(url, before)).status).toBe(401);
    expect((await vmsWith(url, after)).status).toBe(200);
    expect(agent.child.exitCode).toBeNull(); // the agent kept running: no restart needed

    // A restart keeps the rotated token (it is made only when missing).
    agent.child.kill("SIGTERM");
    expect(await agent.exit).toBe(0);
    const again = spawnAgent([
      "--state-dir",
      stateDir,
      "--libvirt-uri",
      TEST_URI,
      "--log-dir",
      dir("qx-host-logs-"),
      "--listen",
      "127.0.0.1:0",
      "--log-level",
      "info",
    ]);
    const url2 = await localApiUrl(again);
    expect(readToken(stateDir)).toBe(after);
    expect((await vmsWith(url2, after)).status).toBe(200);
    expect(again.out()).not.toContain(after);
  }, 60_000);

  it("serves the host before its first enrollment, while the control plane cannot be reached", async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
    const unreachable = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise<void>((r) => closed.close(() => r())); // nothing answers there now
    const stateDir = join(dir("qx-host-offline-"), "state");
    const agent = spawnAgent([
      "--server",
      unreachable,
      "--token",
      "join-later",
      "--state-dir",
      stateDir,
      "--libvirt-uri",
      TEST_URI,
      "--log-dir",
      dir("qx-host-logs-"),
      "--listen",
      "127.0.0.1:0",
      ...FAST,
    ]);
    const url = await localApiUrl(agent);
    expect((await vmsWith(url, readToken(stateDir))).status).toBe(200);
    await until(() => agent.out().includes("enrollment failed; retrying"), 20_000);
    expect(agent.child.exitCode).toBeNull();
  }, 30_000);

  it("with --listen, a refused join token still ends the agent with status 3", async () => {
    const agent = spawnAgent([
      "--server",
      cp.url,
      "--token",
      "never-issued",
      "--state-dir",
      join(dir("qx-host-refused-"), "state"),
      "--libvirt-uri",
      TEST_URI,
      "--listen",
      "127.0.0.1:0",
      ...FAST,
    ]);
    expect(await agent.exit).toBe(3);
    expect(agent.out()).toMatch(/join token refused/);
  }, 30_000);

  it("a token file left readable by others is tightened to 0600 at start, and the agent says so", async () => {
    const stateDir = join(dir("qx-host-mode-"), "state");
    rotateHostToken(stateDir);
    chmodSync(hostTokenPath(stateDir), 0o644);
    const agent = spawnAgent([
      "--state-dir",
      stateDir,
      "--libvirt-uri",
      TEST_URI,
      "--log-dir",
      dir("qx-host-logs-"),
      "--listen",
      "127.0.0.1:0",
      "--log-level",
      "info",
    ]);
    await localApiUrl(agent);
    expect(statSync(hostTokenPath(stateDir)).mode & 0o777).toBe(0o600);
    expect(agent.out()).toMatch(/readable by others: its mode is 0600 again/);
  }, 30_000);
});

describe("HostTokenCheck", () => {
  it("refuses everything while the file is missing or damaged, and reports each trouble once", () => {
    const stateDir = join(dir("qx-host-check-"), "state");
    const { path, created } = ensureHostToken(stateDir);
    expect(created).toBe(true);
    const token = readToken(stateDir);
    const troubles: string[] = [];
    const check = new HostTokenCheck(path, (m) => troubles.push(m));
    expect(check.accepts(token)).toBe(true);
    expect(check.accepts("")).toBe(false);

    rmSync(path);
    expect(check.accepts(token)).toBe(false);
    expect(check.accepts(token)).toBe(false);
    expect(troubles).toHaveLength(1);
    expect(troubles[0]).toMatch(/is gone .*--rotate-host-token/);

    writeFileSync(path, "not a token\n", { mode: 0o600 });
    expect(check.accepts("not a token")).toBe(false);
    expect(troubles.at(-1)).toMatch(/does not hold a host token/);

    rotateHostToken(stateDir);
    expect(check.accepts(readToken(stateDir))).toBe(true);
    expect(check.accepts(token)).toBe(false);
  });

  it("ensureHostToken keeps an existing token and refuses a state-dir entry that is not a file", () => {
    const stateDir = join(dir("qx-host-keep-"), "state");
    rotateHostToken(stateDir);
    const token = readToken(stateDir);
    expect(ensureHostToken(stateDir)).toMatchObject({ created: false, modeFixed: false });
    expect(readToken(stateDir)).toBe(token);

    const other = join(dir("qx-host-dir-"), "state");
    mkdirSync(hostTokenPath(other), { recursive: true });
    expect(() => ensureHostToken(other)).toThrow(/not a regular file/);
  });
});
