// An agent updated from the control plane, end to end with real bundles: version A runs under the
// shipped unit (through a fake systemd: none runs on this machine), the control plane serves B, an
// admin asks, and A downloads, verifies, swaps and exits; B starts and reports its version. A
// corrupted download leaves A running with an error event; a B that exits at once is rolled back
// to A by the next start.
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstallManifest } from "../../protocol/install.ts";
import { buildAgent } from "../../scripts/build-agent.ts";
import { buildInstallAssets } from "../../scripts/build-install.ts";
import { ControlPlane } from "../support/control-plane.ts";
import { UnitRunner } from "../support/unit-runner.ts";

const ROOT = join(import.meta.dirname, "../..");
const A = "0.1.0-update-a";
const B = "0.1.0-update-b";
const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

let work: string;
let assets: string;
let optDir: string;
let stateDir: string;
let bundleA: Buffer;
let bundleB: Buffer;
let manifestB: InstallManifest;
let cp: ControlPlane;
let nodeId: string;
let aliceToken: string;
let service: UnitRunner | null = null;

type NodeEvent = {
  actor: string;
  action: string;
  fromVersion: string | null;
  toVersion: string | null;
  message: string;
};

const node = async () =>
  ((await (await cp.api(`/api/nodes/${nodeId}`)).json()) as { node: { connected: boolean; agentVersion: string } })
    .node;
const events = async () =>
  ((await (await cp.api(`/api/nodes/${nodeId}/events`)).json()) as { events: NodeEvent[] }).events;
const installed = () => sha256(readFileSync(join(optDir, "quantix-agent.mjs")));

/** Serves `bundle` as the agent with `manifest` (written as given: a test may make them disagree). */
async function serve(bundle: Buffer, manifest: InstallManifest) {
  writeFileSync(join(assets, "install/quantix-agent.mjs"), bundle);
  writeFileSync(join(assets, "install/manifest.json"), JSON.stringify(manifest));
  await cp.restart(); // the assets are read when wrangler dev starts
}

/** Agent A installed afresh and running under the unit, connected. */
async function runA() {
  await service?.stop();
  writeFileSync(join(optDir, "quantix-agent.mjs"), bundleA, { mode: 0o755 });
  rmSync(join(optDir, "quantix-agent.previous.mjs"), { force: true });
  service = new UnitRunner(join(ROOT, "agent/quantix-agent.service"), {
    paths: { "/opt/quantix-agent": optDir, "/var/lib/quantix-agent": stateDir, "/usr/bin/node": process.execPath },
    env: {
      QX_SERVER: cp.url,
      QX_LIBVIRT_URI: "test:///default",
      QX_EVENTS: "off",
      QX_METRICS_INTERVAL_MS: "0",
      QX_BACKOFF_BASE: "200",
      QX_BACKOFF_CAP: "2000",
      QX_UPDATE_CONFIRM_MS: "20000",
    },
  });
  service.start();
  await expect
    .poll(
      async () => {
        const n = await node();
        return `${n.connected} ${n.agentVersion}`;
      },
      { timeout: 60_000 },
    )
    .toBe(`true ${A}`);
}

/** Asks for the update until the node's object has the new agent's link: the node row may still say
 *  connected from the agent stopped just before (409 node_offline until the new one is in). */
async function update(token = aliceToken) {
  let answer = "";
  await expect
    .poll(
      async () => {
        const res = await cp.api(`/api/nodes/${nodeId}/update`, { method: "POST", token });
        answer = await res.text();
        return res.status === 409 && answer.includes("node_offline") ? "offline" : `${res.status} ${answer}`;
      },
      { timeout: 30_000 },
    )
    .toMatch(/^202 /);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "qx-update-"));
  assets = join(work, "assets");
  optDir = join(work, "opt");
  stateDir = join(work, "state");
  mkdirSync(stateDir, { mode: 0o700 });
  // A: the installed agent.
  await buildAgent(optDir, { version: A });
  bundleA = readFileSync(join(optDir, "quantix-agent.mjs"));
  // B: what the control plane serves.
  mkdirSync(assets);
  manifestB = await buildInstallAssets(assets, { version: B });
  bundleB = readFileSync(join(assets, "install/quantix-agent.mjs"));
  cp = await ControlPlane.start({ assetsDir: assets });
  const created = (await (await cp.api("/api/nodes", { method: "POST", json: { name: "updated-host" } })).json()) as {
    node: { id: string };
    joinToken: string;
  };
  nodeId = created.node.id;
  const enrolled = spawnSync(
    process.execPath,
    [join(optDir, "quantix-agent.mjs"), "--enroll", "--server", cp.url, "--state-dir", stateDir],
    { env: { ...process.env, QX_TOKEN: created.joinToken }, encoding: "utf8" },
  );
  expect(enrolled.status, enrolled.stderr).toBe(0);
  aliceToken = (
    (await (await cp.api("/api/tokens", { method: "POST", json: { name: "alice", role: "admin" } })).json()) as {
      token: string;
    }
  ).token;
}, 300_000);

afterAll(async () => {
  await service?.stop();
  await cp?.dispose();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("agent update from the control plane", () => {
  it("A to B: the agent swaps in B, restarts through the unit, B reports its version; events name the admin", async () => {
    await runA();
    await update();
    await expect
      .poll(
        async () => {
          const n = await node();
          return `${n.connected} ${n.agentVersion}`;
        },
        { timeout: 60_000 },
      )
      .toBe(`true ${B}`);
    expect(installed()).toBe(manifestB.sha256);
    expect(service!.runs[0]).toEqual({ code: 4, signal: null }); // A exited for the restart
    await expect.poll(async () => (await events()).map((e) => e.action)).toEqual(["updated", "update_requested"]);
    const [updated, requested] = await events();
    expect(requested).toMatchObject({ actor: "token:alice", fromVersion: A, toVersion: B });
    expect(updated).toMatchObject({ actor: `agent:${nodeId}`, fromVersion: A, toVersion: B });
    expect(updated.message).toContain("alice");
    expect(existsSync(join(optDir, "quantix-agent.previous.mjs"))).toBe(false); // confirmed: nothing to roll back to
  });

  it("a corrupted download leaves A running and raises an error event; the file on disk stays A", async () => {
    const corrupted = Buffer.from(bundleB);
    corrupted[corrupted.length - 10] ^= 0x20;
    await serve(corrupted, manifestB);
    await runA();
    const runsBefore = service!.runs.length;
    await update();
    await expect.poll(async () => (await events())[0]?.action, { timeout: 30_000 }).toBe("update_failed");
    const [failed] = await events();
    expect(failed.message).toMatch(/SHA-256 [0-9a-f]{64} .* is not the expected [0-9a-f]{64}.*refused/);
    expect(failed.message).toContain(manifestB.sha256);
    expect(installed()).toBe(sha256(bundleA));
    expect(service!.runs.length).toBe(runsBefore); // never exited
    await expect.poll(node, { timeout: 30_000 }).toMatchObject({ connected: true, agentVersion: A });
    expect(readdirSync(optDir).filter((f) => f.includes("download"))).toEqual([]);
  });

  it("a B that exits at once is rolled back to A by the next start", async () => {
    const broken = Buffer.from("#!/usr/bin/env node\nprocess.exit(1);\n");
    await serve(broken, { version: B, sha256: sha256(broken), size: broken.length });
    await runA();
    await update();
    await expect.poll(async () => (await events())[0]?.action, { timeout: 60_000 }).toBe("update_rolled_back");
    await expect.poll(node, { timeout: 30_000 }).toMatchObject({ connected: true, agentVersion: A });
    expect(installed()).toBe(sha256(bundleA));
    // A exited 4 to start B; B exited 1; the next start put A back and A runs on.
    expect(service!.runs.slice(-2)).toEqual([
      { code: 4, signal: null },
      { code: 1, signal: null },
    ]);
    expect(service!.output).toContain("did not connect: rolled back to");
  });
});
