// Nodes and enrollment: create (join token once), single-use expiring join tokens traded for a
// node credential, the agent endpoint's refusals, rotate and delete closing the live socket.
import { env, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CLOSE } from "../../protocol/wire.ts";
import { reconnectSpreadMs } from "../../worker/config.ts";
import {
  agentsClosedAfterEach,
  api,
  BASE,
  createNode,
  enroll,
  eventually,
  expectError,
  json,
  TestAgent,
  unique,
  uuid,
  vmInfo,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const enrollRaw = (body: unknown, ip = "10.1.1.1") =>
  SELF.fetch(`${BASE}/agent/enroll`, {
    method: "POST",
    headers: { "content-type": "application/json", "cf-connecting-ip": ip },
    body: JSON.stringify(body),
  });
const connectRaw = (headers: Record<string, string>) => SELF.fetch(`${BASE}/agent/connect`, { headers });

describe("nodes", () => {
  it("POST creates a node with a join token; 409 on a duplicate name; list and show it", async () => {
    const name = unique("edge");
    const created = await json(await api("/api/nodes", { json: { name } }), 201);
    expect(created.joinToken).toMatch(/^qxj_[A-Za-z0-9_-]{43}$/);
    expect(created.node).toEqual({
      id: expect.any(String),
      name,
      connected: false,
      lastSeenAt: null,
      hostname: null,
      agentVersion: null,
      libvirtVersion: null,
      vmCount: 0,
      flag: null,
    });
    await expectError(await api("/api/nodes", { json: { name } }), 409, "node_exists");
    const list = await json(await api("/api/nodes"));
    expect(list.nodes.map((n: any) => n.id)).toContain(created.node.id);
    expect((await json(await api(`/api/nodes/${created.node.id}`))).node.name).toBe(name);
    await expectError(await api(`/api/nodes/${uuid()}`), 404, "not_found");
    const row = await env.DB.prepare("SELECT join_token_hash FROM nodes WHERE id = ?")
      .bind(created.node.id)
      .first<{ join_token_hash: string }>();
    expect(row!.join_token_hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it("rotate_token: new join token, old credential refused, live socket closed with CLOSE.unauthorized", async () => {
    const { agent, nodeId, credential } = await TestAgent.forNewNode();
    agents.push(agent);
    const rotated = await json(await api(`/api/nodes/${nodeId}/rotate_token`, { method: "POST" }));
    expect(rotated.joinToken).toMatch(/^qxj_/);
    expect(rotated.node.id).toBe(nodeId);
    expect((await agent.waitClosed()).code).toBe(CLOSE.unauthorized);
    await expectError(
      await connectRaw({ upgrade: "websocket", authorization: `Bearer ${credential}` }),
      401,
      "credential_invalid",
    );
    const again = await enroll(rotated.joinToken);
    expect(again.nodeId).toBe(nodeId);
    const agent2 = await TestAgent.connect(again.credential);
    agents.push(agent2);
    await expectError(await api(`/api/nodes/${uuid()}/rotate_token`, { method: "POST" }), 404, "not_found");
  });

  it("DELETE closes the socket (CLOSE.nodeDeleted), removes the node, keeps its VMs with node_id null and an event", async () => {
    const { agent, nodeId, credential } = await TestAgent.forNewNode();
    agents.push(agent);
    const vm = vmInfo("orphan-to-be");
    agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    expect(await json(await api(`/api/nodes/${nodeId}`, { method: "DELETE" }))).toMatchObject({ success: true });
    expect((await agent.waitClosed()).code).toBe(CLOSE.nodeDeleted);
    await expectError(await api(`/api/nodes/${nodeId}`), 404);
    const kept = (await json(await api(`/api/vms/${vm.uuid}`))).vm;
    expect(kept.node_id).toBeNull();
    expect((await json(await api(`/api/vms/${vm.uuid}/events`))).events[0]).toMatchObject({ action: "node_deleted" });
    await expectError(await connectRaw({ upgrade: "websocket", authorization: `Bearer ${credential}` }), 401);
    await expectError(await api(`/api/nodes/${nodeId}`, { method: "DELETE" }), 404);
    // On no node: power actions are refused, logs say 409.
    await expectError(await api(`/api/vms/${vm.uuid}/logs`), 409, "vm_not_on_node");
  });
});

describe("enrollment", () => {
  it("trades a join token once for a node credential", async () => {
    const { node, joinToken } = await createNode();
    const res = await json(await enrollRaw({ joinToken, hostname: "kvm-01" }));
    expect(res.nodeId).toBe(node.id);
    expect(res.credential).toMatch(/^qxn_[A-Za-z0-9_-]{43}$/);
    await expectError(await enrollRaw({ joinToken, hostname: "kvm-01" }), 401, "join_token_invalid");
    const row = await env.DB.prepare("SELECT join_token_hash, credential_hash, hostname FROM nodes WHERE id = ?")
      .bind(node.id)
      .first<any>();
    expect(row).toMatchObject({ join_token_hash: null, hostname: "kvm-01" });
    expect(row.credential_hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it("refuses unknown and expired join tokens", async () => {
    await expectError(await enrollRaw({ joinToken: "qxj_unknown" }), 401, "join_token_invalid");
    const { node, joinToken } = await createNode();
    await env.DB.prepare("UPDATE nodes SET join_token_expires_at = ? WHERE id = ?")
      .bind(Date.now() - 1, node.id)
      .run();
    await expectError(await enrollRaw({ joinToken }), 401, "join_token_invalid");
  });

  it("concurrent uses of one join token: exactly one wins", async () => {
    const { joinToken } = await createNode();
    const results = await Promise.all(Array.from({ length: 5 }, () => enrollRaw({ joinToken })));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(results.filter((r) => r.status === 401)).toHaveLength(4);
  });

  it("enrollment is rate limited per IP with 429 rate_limited and Retry-After", async () => {
    const ip = `10.77.${Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}`;
    let limited: Response | null = null;
    // Room for two limits: the limiter's minute windows follow the clock, one may end mid-loop.
    for (let i = 0; i < 70 && !limited; i++) {
      const res = await enrollRaw({ joinToken: "qxj_nope" }, ip);
      if (res.status === 429) limited = res;
      else await expectError(res, 401);
    }
    expect(limited).not.toBeNull();
    expect(limited!.headers.get("retry-after")).toBeTruthy();
    await expectError(limited!, 429, "rate_limited");
    // Another IP is unaffected.
    await expectError(await enrollRaw({ joinToken: "qxj_nope" }, "10.200.0.1"), 401);
  });
});

describe("agent endpoint", () => {
  it("426 when not a WebSocket upgrade; 401 JSON before the upgrade when refused", async () => {
    await expectError(await connectRaw({}), 426, "upgrade_required");
    await expectError(await connectRaw({ upgrade: "websocket" }), 401);
    await expectError(
      await connectRaw({ upgrade: "websocket", authorization: "Bearer qxn_" + "B".repeat(43) }),
      401,
      "credential_invalid",
    );
    await expectError(await connectRaw({ upgrade: "websocket", authorization: "Bearer test-admin-token" }), 401);
  });

  it("a credential opens only its own node's session (isolation)", async () => {
    const a = await TestAgent.forNewNode();
    const b = await TestAgent.forNewNode();
    agents.push(a.agent, b.agent);
    expect(a.nodeId).not.toBe(b.nodeId);
    // The welcome names the node behind the credential, whatever else the client sends.
    const res = await SELF.fetch(`${BASE}/agent/connect?node=${b.nodeId}`, {
      headers: { upgrade: "websocket", authorization: `Bearer ${a.credential}`, "x-quantix-node-id": b.nodeId },
    });
    expect(res.status).toBe(101);
    const ws = res.webSocket!;
    ws.accept();
    const welcome = await new Promise<any>((r) =>
      ws.addEventListener("message", (e) => r(JSON.parse(e.data as string)), { once: true }),
    );
    expect(welcome.payload.nodeId).toBe(a.nodeId);
    ws.close();
    // b's session is untouched: still connected, not replaced.
    expect(b.agent.closed).toBeNull();
  });

  it("the welcome asks the agent to spread its reconnects over a window sized to the fleet (a client can't set it)", async () => {
    const a = await TestAgent.forNewNode();
    agents.push(a.agent);
    const res = await SELF.fetch(`${BASE}/agent/connect`, {
      headers: {
        upgrade: "websocket",
        authorization: `Bearer ${a.credential}`,
        "x-quantix-reconnect-spread": "600000",
      },
    });
    const ws = res.webSocket!;
    ws.accept();
    const welcome = await new Promise<any>((r) =>
      ws.addEventListener("message", (e) => r(JSON.parse(e.data as string)), { once: true }),
    );
    ws.close();
    // A handful of nodes (this file's): one second; 30 reconnects a second per FLEET_RECONNECTS_PER_SECOND.
    expect(welcome.payload.reconnectSpreadMs).toBe(1000);
    expect(reconnectSpreadMs(1000)).toBe(34_000);
    expect(reconnectSpreadMs(100_000)).toBe(45_000);
  });
});
