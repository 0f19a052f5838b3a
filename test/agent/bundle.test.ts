// `npm run build:agent` makes a bundle that runs on its own: one JavaScript file, copied away from
// the repo (no node_modules beside it, no native addon), it enrolls, connects, reports the test-driver host and serves the host
// view + local API from the web/ copied beside it.
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AGENT_NODE_FLAGS, buildAgent } from "../../scripts/build-agent.ts";
import { LoopbackControlPlane, TEST_URI, VMS, tempDir, until } from "./helpers.ts";

const stops: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const s of stops.reverse()) await s();
});

describe("bundled agent", () => {
  it("runs from a directory of its own against the control plane, with the local API", async () => {
    const built = tempDir("qx-bundle-build-");
    const out = await buildAgent(built);
    // One JavaScript file, no native addon beside it (the agent speaks libvirt's protocol itself).
    expect(
      readdirSync(built)
        .filter((f) => f !== "web")
        .sort(),
    ).toEqual(["quantix-agent.mjs", "quantix-agent.service"]);
    expect(existsSync(join(built, "quantix-agent.service"))).toBe(true);
    const host = tempDir("qx-bundle-host-"); // nothing but the bundle's own files here
    cpSync(built, host, { recursive: true });
    // The host view: the real web build if present, else a stand-in page (the web build is not this test's subject).
    if (!existsSync(join(host, "web/host.html"))) {
      mkdirSync(join(host, "web"), { recursive: true });
      writeFileSync(join(host, "web/host.html"), "<!doctype html><title>host view</title>");
    }
    const logDir = tempDir("qx-bundle-logs-");
    writeFileSync(join(logDir, `${VMS.running.name}.log`), "hello from the bundle\n");

    const cp = await LoopbackControlPlane.start();
    stops.push(() => cp.close());
    cp.joinTokens.set("join-bundle", "cred-bundle");
    // Run as a host runs it: the file itself, through its shebang (`env -S node <V8 flags>`), with
    // Node 22 first on PATH.
    const child = spawn(
      join(host, out.split("/").at(-1)!),
      [
        "--server",
        cp.url,
        "--token",
        "join-bundle",
        "--state-dir",
        join(host, "state"),
        "--libvirt-uri",
        TEST_URI,
        "--log-dir",
        logDir,
        "--listen",
        "127.0.0.1:0",
      ],
      {
        cwd: host,
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` },
      },
    );
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
    stops.push(() => void (child.exitCode === null && child.kill("SIGKILL")));

    const inv = await cp
      .waitFor((m) => m.type === "inventory", 15_000)
      .catch((e) => {
        throw new Error(`${e.message}; agent output:\n${output}`);
      });
    expect((inv.payload as { vms: unknown[] }).vms).toHaveLength(8);
    const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, "utf8").split("\0");
    for (const flag of AGENT_NODE_FLAGS) expect(cmdline).toContain(flag);

    await until(() => output.includes("local API listening"));
    const base = /"url":"(http:\/\/127\.0\.0\.1:\d+)"[^\n]*local API listening/.exec(output)![1];
    const hostToken = readFileSync(join(host, "state", "host-token"), "utf8").trim();
    const auth = { authorization: `Bearer ${hostToken}` };
    expect((await fetch(`${base}/api/v1/vms`, { headers: { authorization: "Bearer cred-bundle" } })).status).toBe(401);
    const logs = await fetch(`${base}/api/v1/vms/${VMS.running.uuid}/logs?lines=5`, { headers: auth });
    expect(await logs.json()).toMatchObject({ qemuLog: "hello from the bundle\n", linesReturned: 1 });
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html|<!doctype/i);

    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 60_000);
});
