// Updating an agent from the control plane: admin only and audited, told over the link only to agents
// that announced `update` (a mixed fleet keeps working), the bundle fetched with the node credential,
// and the agent's report of how it went kept as a node event.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { InstallManifest } from "../../protocol/install.ts";
import { PROTOCOL_VERSION, WIRE_FEATURES } from "../../protocol/wire.ts";
import {
  agentsClosedAfterEach,
  api,
  BASE,
  createNode,
  createToken,
  enroll,
  eventually,
  expectError,
  json,
  TestAgent,
  unique,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
const served = async () => InstallManifest.parse(await json(await SELF.fetch(`${BASE}/install/manifest.json`)));

/** An agent connected for a new node, saying hello as `version` with these features. */
async function agentOf(version: string, features: readonly string[]) {
  const { joinToken } = await createNode(unique("upd"));
  const { nodeId, credential } = await enroll(joinToken);
  const agent = await TestAgent.connect(credential);
  agents.push(agent);
  agent.send({
    type: "hello",
    id: "h1",
    payload: {
      agentVersion: version,
      hostname: "h",
      libvirtVersion: "9.0.0",
      protocolVersion: PROTOCOL_VERSION,
      features,
    },
  });
  await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.agentVersion).toBe(version));
  return { agent, nodeId, credential };
}

const events = async (nodeId: string) =>
  (
    await json<{
      events: { actor: string; action: string; fromVersion: string; toVersion: string; message: string }[];
    }>(await api(`/api/nodes/${nodeId}/events`))
  ).events;

describe("agent updates", () => {
  it("only an admin may update an agent (403 for operator and viewer, 401 without a token)", async () => {
    const { nodeId, agent } = await agentOf("0.0.1", WIRE_FEATURES);
    for (const role of ["viewer", "operator"] as const) {
      await expectError(
        await api(`/api/nodes/${nodeId}/update`, { method: "POST", token: await createToken(role) }),
        403,
      );
    }
    await expectError(await api(`/api/nodes/${nodeId}/update`, { method: "POST", token: null }), 401);
    expect(agent.frames.filter((f) => f.type === "agent.update")).toEqual([]);
    expect(await events(nodeId)).toEqual([]);
  });

  it("tells the agent the served version and its SHA-256, and records who asked", async () => {
    const manifest = await served();
    const { nodeId, agent } = await agentOf("0.0.1", WIRE_FEATURES);
    const admin = await createToken("admin", unique("alice"));
    const res = await json(await api(`/api/nodes/${nodeId}/update`, { method: "POST", token: admin }), 202);
    expect(res).toMatchObject({ success: true, targetVersion: manifest.version, upToDate: false });
    const frame = await agent.next("agent.update");
    expect(frame.payload).toEqual({
      version: manifest.version,
      sha256: manifest.sha256,
      size: manifest.size,
      requestedBy: expect.stringContaining("alice"),
    });
    const [requested] = await events(nodeId);
    expect(requested).toMatchObject({ action: "update_requested", fromVersion: "0.0.1", toVersion: manifest.version });
    expect(requested.actor).toContain("alice");

    // The agent's report comes back as an event.
    agent.send({
      type: "agent.update.status",
      id: "s1",
      payload: {
        outcome: "failed",
        fromVersion: "0.0.1",
        toVersion: manifest.version,
        requestedBy: frame.payload.requestedBy,
        message: "the downloaded file's SHA-256 is not the expected one: refused",
      },
    });
    await eventually(async () =>
      expect((await events(nodeId))[0]).toMatchObject({
        action: "update_failed",
        actor: `agent:${nodeId}`,
        message: expect.stringContaining("alice"),
      }),
    );
  });

  it("a mixed fleet: an agent that did not announce `update` is never sent the frame (409 update_unsupported)", async () => {
    const { nodeId, agent } = await agentOf("0.0.1", ["progress", "digest"]);
    await expectError(await api(`/api/nodes/${nodeId}/update`, { method: "POST" }), 409, "update_unsupported");
    await expect(agent.next("agent.update", 500)).rejects.toThrow(/no agent.update/);
  });

  it("an agent already on the served version is left alone; an offline one is a 409", async () => {
    const { nodeId, agent } = await agentOf((await served()).version, WIRE_FEATURES);
    expect(await json(await api(`/api/nodes/${nodeId}/update`, { method: "POST" }))).toMatchObject({ upToDate: true });
    const offline = await createNode();
    await expectError(await api(`/api/nodes/${offline.node.id}/update`, { method: "POST" }), 409, "node_offline");
    await expect(agent.next("agent.update", 300)).rejects.toThrow();
  });

  it("the bundle for an update is served to a node credential only, byte for byte the manifest's", async () => {
    const manifest = await served();
    const { credential } = await agentOf("0.0.1", WIRE_FEATURES);
    const url = `${BASE}/agent/update/quantix-agent.mjs`;
    await expectError(await SELF.fetch(url), 401);
    await expectError(await SELF.fetch(url, { headers: { authorization: `Bearer qxn_${"x".repeat(43)}` } }), 401);
    const res = await SELF.fetch(url, { headers: { authorization: `Bearer ${credential}` } });
    expect(res.status).toBe(200);
    expect(hex(await crypto.subtle.digest("SHA-256", await res.arrayBuffer()))).toBe(manifest.sha256);
  });
});
