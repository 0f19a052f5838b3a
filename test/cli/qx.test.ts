// The qx CLI against the real control plane (wrangler dev) and a real agent on the demo test-driver node.
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, newLinesSince, CliError } from "../../cli/qx.ts";
import { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess, DEMO_LOG_DIR } from "../support/agent.ts";

const WEB_01 = "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f01"; // running, has a log
const SCRATCH = "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f08"; // shut off, no log file
const ANALYTICS = "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f05"; // its log is replaced by HOSTILE_LOG below

/** A log whose text tries to drive the terminal it is printed on, each line with what qx shows for it. */
const HOSTILE: [written: string, shown: string][] = [
  ["\x1b[31mERROR\x1b[0m disk full", "ERROR disk full"], // colours: removed, text kept
  ["\x1b]0;pwned title\x07visible after title", "visible after title"], // window title (OSC, BEL)
  ["\x1b]52;c;cm0gLXJmIH4=\x1b\\clip", "clip"], // clipboard write (OSC 52, ST)
  ["\x1b[2J\x1b[Hcleared", "cleared"], // clear screen, cursor home
  ["\u009b31mC1 csi", "C1 csi"], // 8-bit CSI
  ["\x1bc reset", " reset"], // full terminal reset (RIS)
  ["\x1bPqsixel\x1b\\after dcs", "after dcs"], // DCS
  ["innocent\rmalicious", "innocent\\x0dmalicious"], // CR would overwrite the line
  ["abc\b\b\bxyz", "abc\\x08\\x08\\x08xyz"], // backspaces would hide text
  ["bell\x07 and \x7f del", "bell\\x07 and \\x7f del"],
  ["invoice\u202egpj.exe", "invoice\\u202egpj.exe"], // right-to-left override reorders what is shown
  ["\x1b]8;;http://evil.example/", "\\x1b]8;;http://evil.example/"], // unterminated OSC: shown, inert
  ["col1\tcol2 тест-вм", "col1\tcol2 тест-вм"], // tabs and Unicode text are text
  ["crlf line\r", "crlf line"], // the CR of CRLF
];
const HOSTILE_LOG = HOSTILE.map(([w]) => w).join("\n") + "\n";

let cp: ControlPlane;
let agent: AgentProcess;
let env: NodeJS.ProcessEnv;
let logDir: string;

async function qx(...args: string[]) {
  const lines: string[] = [];
  const errs: string[] = [];
  const code = await runCli(args, env, { log: (l) => lines.push(l), err: (l) => errs.push(l) });
  return { code, out: lines.join("\n"), err: errs.join("\n") };
}

async function qxFails(...args: string[]): Promise<CliError> {
  try {
    await qx(...args);
  } catch (e) {
    if (e instanceof CliError) return e;
    throw e;
  }
  throw new Error(`qx ${args.join(" ")} did not fail`);
}

beforeAll(async () => {
  cp = await ControlPlane.start();
  env = { QX_CONFIG: join(mkdtempSync(join(tmpdir(), "qx-cli-")), "config.json") };
  await runCli(["login", "--url", cp.url, "--token", cp.adminToken], env, { log: () => {}, err: () => {} });
  const { joinToken } = (await (await cp.api("/api/nodes", { method: "POST", json: { name: "cli-node" } })).json()) as {
    joinToken: string;
  };
  logDir = mkdtempSync(join(tmpdir(), "qx-cli-logs-"));
  cpSync(DEMO_LOG_DIR, logDir, { recursive: true });
  writeFileSync(join(logDir, "analytics.log"), HOSTILE_LOG);
  agent = AgentProcess.start({
    server: cp.url,
    token: joinToken,
    logDir,
    env: { QX_METRICS_INTERVAL_MS: "1000", QX_METRICS_BATCH_MS: "6000" },
  });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { vms } = (await (await cp.api("/api/vms?limit=50")).json()) as { vms: unknown[] };
    if (vms.length === 8) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error("demo inventory never arrived");
}, 120_000);

afterAll(async () => {
  await agent?.dispose();
  await cp?.dispose();
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

describe("qx", () => {
  it("login keeps the token in a 0600 config file and whoami reads it back", async () => {
    const saved = JSON.parse(readFileSync(env.QX_CONFIG!, "utf8"));
    expect(saved).toEqual({ url: cp.url, token: cp.adminToken });
    expect(statSync(env.QX_CONFIG!).mode & 0o777).toBe(0o600);
    expect((await qx("whoami")).out).toMatch(/\(admin\)$/);
  });

  it("lists nodes and VMs with filters, as a table and as JSON", async () => {
    expect((await qx("nodes", "list")).out).toMatch(/cli-node\s+online/);
    const running = JSON.parse((await qx("vms", "list", "--state", "running", "--json")).out) as {
      name: string;
      state: string;
    }[];
    expect(running.map((v) => v.name).sort()).toEqual(["db-01", "files-01", "web-01", "web-02"]);
    expect(running.every((v) => v.state === "RUNNING")).toBe(true);
    const table = (await qx("vms", "list", "--search", "web")).out.split("\n");
    expect(table[0]).toMatch(/^ID\s+NAME\s+STATE/);
    expect(table.slice(1).map((l) => l.split(/\s+/)[1])).toEqual(["web-01", "web-02"]);
    const paged = JSON.parse((await qx("vms", "list", "--limit", "3", "--all", "--json")).out) as unknown[];
    expect(paged).toHaveLength(8);
  });

  it("prints a VM's and its node's metrics as a compact table (test driver: synthetic CPU time); a bad range is a usage error", async () => {
    const deadline = Date.now() + 30_000;
    let answer: { range: string; points: { cpuPct: number | null }[] } = { range: "", points: [] };
    while (Date.now() < deadline && !answer.points.some((p) => p.cpuPct !== null)) {
      answer = JSON.parse((await qx("vms", "metrics", WEB_01, "--json")).out);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(answer.range).toBe("1h");
    expect(answer.points.some((p) => p.cpuPct !== null && p.cpuPct > 0)).toBe(true);
    const lines = (await qx("vms", "metrics", WEB_01, "--range", "24h")).out.split("\n");
    expect(lines[0]).toMatch(/^TIME \(UTC\)\s+CPU %\s+MEM USED/);
    expect(lines.length).toBeLessThanOrEqual(25);
    expect(lines.slice(1).some((l) => /^\d\d:\d\d\s+\d+\.\d/.test(l))).toBe(true);
    const { vm } = (await (await cp.api(`/api/vms/${WEB_01}`)).json()) as { vm: { node_id: string } };
    expect((await qx("nodes", "metrics", vm.node_id, "--range", "1h")).out).toMatch(/^TIME \(UTC\)/);
    expect((await qxFails("vms", "metrics", WEB_01, "--range", "2h")).exitCode).toBe(2);
  });

  it("prints the last N lines of a VM's QEMU log, like the API", async () => {
    const { out } = await qx("vms", "logs", WEB_01, "-n", "5");
    const api = (await (await cp.api(`/api/vms/${WEB_01}/logs?lines=5`)).json()) as { qemuLog: string };
    expect(out.split("\n")).toHaveLength(5);
    expect(out).toBe(api.qemuLog.replace(/\n$/, ""));
    expect((await qxFails("vms", "logs", SCRATCH)).message).toMatch(/^log_not_found:/);
    expect((await qxFails("vms", "logs", WEB_01, "-n", "0")).message).toMatch(/invalid_request: .*1 to 10000/);
  });

  it("never lets a log drive the terminal: escape sequences removed, other controls shown escaped; --raw keeps them", async () => {
    const api = (await (await cp.api(`/api/vms/${ANALYTICS}/logs?lines=100`)).json()) as { qemuLog: string };
    expect(api.qemuLog).toBe(HOSTILE_LOG);

    const shown = (await qx("vms", "logs", ANALYTICS, "-n", "100")).out;
    expect(shown.split("\n")).toEqual(HOSTILE.map(([, s]) => s));
    expect(shown).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);

    const raw = (await qx("vms", "logs", ANALYTICS, "-n", "100", "--raw")).out;
    expect(raw).toBe(HOSTILE_LOG.replace(/\n$/, ""));

    // --json: the same value, with nothing a terminal acts on left raw in the printed text.
    const json = (await qx("vms", "logs", ANALYTICS, "-n", "100", "--json")).out;
    expect((JSON.parse(json) as { qemuLog: string }).qemuLog).toBe(HOSTILE_LOG);
    expect(json).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]/);
  });

  it("resets a VM's state from the hypervisor and by force, and shows both in the events", async () => {
    const fromHv = (await qx("vms", "reset-state", WEB_01, "--reason", "cli test")).out;
    expect(fromHv).toMatch(/^web-01: RUNNING -> RUNNING \(hypervisor\)/);
    const forced = (await qx("vms", "reset-state", WEB_01, "--force")).out;
    expect(forced).toMatch(/^web-01: RUNNING -> STOPPED \(forced\)/);
    const events = JSON.parse((await qx("vms", "events", WEB_01, "--json")).out) as {
      action: string;
      source: string;
      toState: string;
    }[];
    // The forced STOPPED is checked with the hypervisor at once (web-01 runs: flagged, not stopped),
    // which adds events of its own after these two.
    expect(
      events
        .filter((e) => e.action === "reset_state")
        .slice(0, 2)
        .map((e) => [e.action, e.source, e.toState]),
    ).toEqual([
      ["reset_state", "forced", "STOPPED"],
      ["reset_state", "hypervisor", "RUNNING"],
    ]);
  });

  it("enrolls, rotates and removes a node, and manages tokens; a viewer token cannot act", async () => {
    const added = (await qx("nodes", "add", "cli-extra")).out;
    const token = /join token \(shown once\): (qxj_\S+)/.exec(added)?.[1];
    expect(token).toBeDefined();
    expect(added).toContain(`curl -fsSL ${cp.url}/install.sh | sh -s -- --token ${token}`);
    const nodes = JSON.parse((await qx("nodes", "list", "--json")).out) as { id: string; name: string }[];
    const extra = nodes.find((n) => n.name === "cli-extra")!;
    const rotated = (await qx("nodes", "rotate", extra.id)).out;
    const newToken = /new join token \(shown once\): (qxj_\S+)/.exec(rotated)?.[1];
    expect(newToken).not.toBe(token);
    expect(rotated).toContain(`curl -fsSL ${cp.url}/install.sh | sh -s -- --token ${newToken}`);
    await qx("nodes", "rm", extra.id);
    expect((await qx("nodes", "list")).out).not.toContain("cli-extra");

    const created = JSON.parse((await qx("tokens", "create", "reader", "--role", "viewer", "--json")).out) as {
      token: string;
      id: string;
    };
    const asViewer = { ...env, QX_API_TOKEN: created.token };
    const viewerOut: string[] = [];
    await runCli(["whoami"], asViewer, { log: (l) => viewerOut.push(l), err: () => {} });
    expect(viewerOut).toEqual(["reader (viewer)"]);
    await expect(
      runCli(["vms", "reset-state", WEB_01, "--force"], asViewer, { log: () => {}, err: () => {} }),
    ).rejects.toThrow(/^forbidden|403|role/);
    await qx("tokens", "revoke", created.id);
    await expect(runCli(["whoami"], asViewer, { log: () => {}, err: () => {} })).rejects.toThrow(
      /unauthorized|401|token/i,
    );
  });

  it("nodes update: an agent on the served version is left alone, offline ones are skipped, only admins may ask", async () => {
    const served = ((await (await fetch(`${cp.url}/install/manifest.json`)).json()) as { version: string }).version;
    const nodes = JSON.parse((await qx("nodes", "list", "--json")).out) as { id: string; name: string }[];
    const node = nodes.find((n) => n.name === "cli-node")!;
    expect((await qx("nodes", "update", node.id)).out).toBe(`cli-node: runs ${served} already`);
    await qx("nodes", "add", "cli-offline");
    const all = await qx("nodes", "update", "--all");
    expect(all.out).toBe(`cli-node: runs ${served} already`);
    expect(all.err).toBe("cli-offline: offline, skipped");
    expect((await qx("nodes", "events", node.id)).out).toMatch(/^AT\s+ACTION\s+FROM\s+TO\s+BY\s+MESSAGE/);
    const viewer = JSON.parse((await qx("tokens", "create", "update-viewer", "--role", "viewer", "--json")).out) as {
      token: string;
    };
    const asViewer = { ...env, QX_API_TOKEN: viewer.token };
    const printed: string[] = [];
    const code = await runCli(["nodes", "update", node.id], asViewer, { log: (l) => printed.push(l), err: () => {} });
    expect(code).toBe(1);
    expect(printed.join("\n")).toMatch(/^cli-node: not updated: forbidden/);
  });

  it("says what is missing instead of guessing", async () => {
    await expect(runCli(["vms", "list"], {}, { log: () => {}, err: () => {} })).rejects.toThrow(/no control plane URL/);
    expect((await qxFails("vms", "show")).message).toMatch(/missing <vm-id>/);
    expect((await qxFails("vms", "frobnicate")).message).toMatch(/unknown command "vms frobnicate"/);
    expect((await qxFails("vms", "show", "00000000-0000-0000-0000-000000000000")).message).toMatch(/^not_found:/);
  });
});

describe("follow", () => {
  it("prints only the lines after the overlap with what was shown", () => {
    expect(newLinesSince(["a", "b", "c"], ["b", "c", "d", "e"])).toEqual(["d", "e"]);
    expect(newLinesSince(["a", "b"], ["a", "b"])).toEqual([]);
    expect(newLinesSince([], ["x"])).toEqual(["x"]);
    expect(newLinesSince(["a", "b"], ["z"])).toEqual(["z"]);
  });
});
