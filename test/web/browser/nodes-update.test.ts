// The Nodes page and agent versions, in Chromium against the real control plane: the version this
// control plane serves is shown, an agent older than it is marked, and an admin's Update agent has
// the real (bundled) agent download, verify and swap in the served bundle; a viewer sees the mark
// but no button.
import { createHash } from "node:crypto";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InstallManifest } from "../../../protocol/install.ts";
import { buildAgent } from "../../../scripts/build-agent.ts";
import { stopProcessGroup } from "../../support/process-group.ts";
import { expectAccessible } from "./axe.ts";
import { startDashboard, type DashboardFixture } from "./fixture.ts";

const OLD = "0.0.9-old";
let f: DashboardFixture;
let manifest: InstallManifest;
let bundle: string;
let oldAgent: ReturnType<typeof spawn>;
let output = "";
let nodeId: string;

const nodeOf = async () =>
  ((await (await f.cp.api(`/api/nodes/${nodeId}`)).json()) as { node: { connected: boolean; agentVersion: string } })
    .node;

beforeAll(async () => {
  f = await startDashboard({ tmpPrefix: "qx-web-update-", nodeName: "current-host" });
  manifest = InstallManifest.parse(await (await fetch(`${f.cp.url}/install/manifest.json`)).json());
  const opt = join(f.dir, "opt");
  bundle = await buildAgent(opt, { version: OLD });
  const res = await f.cp.api("/api/nodes", { method: "POST", json: { name: "old-host" } });
  const created = (await res.json()) as { node: { id: string }; joinToken: string };
  nodeId = created.node.id;
  const state = join(f.dir, "old-state");
  mkdirSync(state);
  oldAgent = spawn(process.execPath, [bundle, "--server", f.cp.url, "--state-dir", state], {
    env: {
      PATH: process.env.PATH,
      QX_TOKEN: created.joinToken,
      QX_LIBVIRT_URI: "test:///default",
      QX_EVENTS: "off",
      QX_METRICS_INTERVAL_MS: "0",
    },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  oldAgent.stdout!.on("data", (d) => (output += d));
  oldAgent.stderr!.on("data", (d) => (output += d));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const n = await nodeOf();
    if (n.connected && n.agentVersion === OLD) break;
    if (Date.now() > deadline) throw new Error(`the old agent did not connect in 60 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}, 180_000);

afterAll(async () => {
  if (oldAgent) await stopProcessGroup(oldAgent);
  await f?.dispose();
});

describe("Nodes page: agent versions", () => {
  it("a viewer sees the served version and the outdated agent marked, with no Update button", async () => {
    const viewer = (await (
      await f.cp.api("/api/tokens", { method: "POST", json: { name: "watcher", role: "viewer" } })
    ).json()) as { token: string };
    const s = await f.signedIn(viewer.token);
    await s.page.getByRole("link", { name: "Nodes" }).click();
    await expect.poll(() => s.page.getByTestId("served-agent-version").textContent()).toContain(manifest.version);
    const old = s.page.locator('tr[data-node-name="old-host"]');
    await expect.poll(() => old.getByTestId("node-agent-version").textContent()).toBe(OLD);
    expect(await old.getByTestId("agent-outdated").count()).toBe(1);
    expect(await s.page.locator('tr[data-node-name="current-host"]').getByTestId("agent-outdated").count()).toBe(0);
    expect(await s.page.getByRole("button", { name: /Update/ }).count()).toBe(0);
    f.expectClean(s);
  });

  it("an admin's Update agent has the agent fetch, verify and swap in the served bundle", async () => {
    const s = await f.signedIn();
    await s.page.getByRole("link", { name: "Nodes" }).click();
    const old = s.page.locator('tr[data-node-name="old-host"]');
    await old.getByTestId("agent-outdated").waitFor();
    await expectAccessible(s.page, "Nodes with an outdated agent", { anyImpact: true });
    await old.getByRole("button", { name: "Update agent" }).click();
    await expect
      .poll(() => s.page.getByTestId("toast-success").first().textContent())
      .toContain(`old-host: updating its agent to ${manifest.version}`);
    // Swapped in and exited for its service manager to start the new file (none here: it stays down).
    await expect.poll(() => oldAgent.exitCode, { timeout: 60_000 }).toBe(4);
    expect(createHash("sha256").update(readFileSync(bundle)).digest("hex")).toBe(manifest.sha256);
    const { events } = (await (await f.cp.api(`/api/nodes/${nodeId}/events`)).json()) as {
      events: { action: string; actor: string; toVersion: string }[];
    };
    expect(events[0]).toMatchObject({ action: "update_requested", actor: "admin", toVersion: manifest.version });
    expect(output).not.toContain("update failed");
    f.expectClean(s);
  });
});
