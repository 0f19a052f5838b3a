// Secrets and isolation on the real control plane (wrangler dev, default rate limits) with a real
// agent and simulated agents (bench/fleet-agent.ts): a node credential against the REST API and
// against another node's requests and VMs (BOLA); join-token reuse and expiry; no token,
// credential or join token in plaintext anywhere in the persisted state (local D1 and Durable Object
// storage, read straight from disk after the run) nor in any line the control plane or agent
// printed; HTML in a VM name kept as text, a '/' in one refused by the protocol (log text in the dashboard is covered by
// test/web/browser/dashboard.test.ts); and the expensive routes answering a clear 429.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_ENROLL_PATH, CLOSE } from "../../protocol/wire.ts";
import { ControlPlane } from "../support/control-plane.ts";
import { AgentProcess } from "../support/agent.ts";
import {
  DEMO,
  DEMO_VM_COUNT,
  FAST_AGENT_ARGS,
  SHORT_DEADLINES,
  createNode,
  eventually,
  getVm,
  json,
  keptCredential,
  listVms,
  waitConnected,
} from "../e2e/journey.ts";
import { enroll, rawSocket, SimAgent, simVms } from "../../bench/fleet-agent.ts";

const JOIN_TTL_S = 6;
let cp: ControlPlane;
let agent: AgentProcess;
const secrets = new Set<string>();
const sims: SimAgent[] = [];

beforeAll(async () => {
  cp = await ControlPlane.start({ vars: { ...SHORT_DEADLINES, JOIN_TOKEN_TTL_SECONDS: String(JOIN_TTL_S) } });
  secrets.add(cp.adminToken);
  const { node, joinToken } = await createNode(cp, "real-host");
  secrets.add(joinToken);
  agent = AgentProcess.start({ server: cp.url, token: joinToken, args: [...FAST_AGENT_ARGS, "--log-level", "debug"] }); // the last --log-level wins
  await waitConnected(cp, node.id);
  await eventually("demo inventory", async () => (await listVms(cp, node.id)).length === DEMO_VM_COUNT);
  secrets.add(keptCredential(agent));
});
afterAll(async () => {
  await Promise.all(sims.map((s) => s.stop()));
  await agent?.dispose();
  await cp?.dispose();
});

async function simNode(name: string, hold = false) {
  const { node, joinToken } = await createNode(cp, `${name}-${Date.now()}`);
  secrets.add(joinToken);
  const { credential } = await enroll(cp.url, joinToken, name);
  secrets.add(credential);
  const sim = new SimAgent(cp.url, credential, simVms(2, name), { backoffBaseMs: 100, backoffCapMs: 500 });
  if (hold) sim.policy = () => "hold";
  sims.push(sim);
  await sim.start();
  await eventually(`${name} VMs`, async () => (await listVms(cp, node.id)).length === 2);
  return { nodeId: node.id, credential, sim, vms: [...sim.vms.values()] };
}

describe("node credentials (BOLA)", () => {
  it("a node credential opens no REST route", async () => {
    const credential = keptCredential(agent);
    for (const path of [
      "/api/me",
      "/api/nodes",
      "/api/vms",
      `/api/vms/${DEMO.web01}`,
      `/api/vms/${DEMO.web01}/logs`,
      "/api/tokens",
    ]) {
      const res = await cp.api(path, { token: credential });
      expect(res.status, path).toBe(401);
      expect(await json(res)).toMatchObject({ success: false, error: { code: expect.any(String) } });
    }
    for (const path of [
      `/api/vms/${DEMO.web01}/stop`,
      `/api/vms/${DEMO.web01}/reset_state`,
      "/api/nodes",
      "/api/tokens",
    ]) {
      expect(
        (await cp.api(path, { method: "POST", token: credential, json: { name: "x", role: "admin" } })).status,
        path,
      ).toBe(401);
    }
  });

  it("node A cannot answer node B's request, report B's VMs, or mark them missing", async () => {
    const a = await simNode("bola-a");
    const b = await simNode("bola-b", true); // B's host never answers
    const bVm = b.vms[0];
    const before = await getVm(cp, bVm.uuid);

    const reset = cp.api(`/api/vms/${bVm.uuid}/reset_state`, { method: "POST" });
    const cmd = await eventually("B got vm.state", async () => b.sim.received.find((c) => c.type === "vm.state"));
    // A forges B's answer with B's request id, and claims B's VM with another name and state.
    a.sim.send({ type: "result", id: cmd.id, payload: { state: "PAUSED", libvirtState: "paused" } });
    a.sim.send({
      type: "vm.changed",
      id: "forge",
      payload: { vms: [{ ...a.sim.info({ ...bVm, libvirtState: "crashed" }), name: "stolen" }], removed: [] },
    });
    a.sim.send({ type: "vm.changed", id: "forge2", payload: { vms: [], removed: [b.vms[1].uuid] } });
    const answer = await json(await reset);
    expect(answer.source).toBe("forced"); // B never answered; A's forged answer counted for nothing
    const after = await getVm(cp, bVm.uuid);
    expect(after).toMatchObject({ node_id: b.nodeId, name: before.name, missing: false });
    expect(after.state).not.toBe("PAUSED");
    expect((await getVm(cp, b.vms[1].uuid)).missing).toBe(false);
    expect((await listVms(cp, a.nodeId)).map((v) => v.id).sort()).toEqual(a.vms.map((v) => v.uuid).sort());
  });

  it("a credential's socket is its own node's: A's credential never receives B's commands", async () => {
    const a = await simNode("own-a", true);
    const b = await simNode("own-b");
    await cp.api(`/api/vms/${b.vms[0].uuid}/reset_state`, { method: "POST" });
    await new Promise((r) => setTimeout(r, 300));
    expect(a.sim.received.filter((c) => c.payload.vmId === b.vms[0].uuid)).toEqual([]);
    expect(b.sim.received.some((c) => c.payload.vmId === b.vms[0].uuid)).toBe(true);
  });
});

describe("join tokens", () => {
  it("are single-use", async () => {
    const { joinToken } = await createNode(cp, `reuse-${Date.now()}`);
    secrets.add(joinToken);
    secrets.add((await enroll(cp.url, joinToken)).credential);
    const again = await fetch(cp.url + AGENT_ENROLL_PATH, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ joinToken }),
    });
    expect(again.status).toBe(401);
    expect(await json(again)).toMatchObject({ success: false, error: { code: "join_token_invalid" } });
  });

  it(`expire (JOIN_TOKEN_TTL_SECONDS=${JOIN_TTL_S} here)`, async () => {
    const { joinToken } = await createNode(cp, `expire-${Date.now()}`);
    secrets.add(joinToken);
    await new Promise((r) => setTimeout(r, (JOIN_TTL_S + 1) * 1000));
    const late = await fetch(cp.url + AGENT_ENROLL_PATH, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ joinToken }),
    });
    expect(late.status).toBe(401);
  }, 20_000);
});

describe("untrusted text", () => {
  it("HTML in a VM name is kept as the literal name, served as JSON text; a name libvirt cannot hold ('/') is refused by the protocol", async () => {
    // Each node's simulated agent is stopped first: reconnecting, it would replace the raw socket.
    const { credential, sim } = await simNode("html-name");
    await sim.stop();
    const { ws } = await rawSocket(cp.url, credential);
    const vm = {
      uuid: crypto.randomUUID(),
      name: "<img src=x onerror=alert(1)>",
      state: "RUNNING",
      libvirtState: "running",
      vcpus: 1,
      memoryMiB: 1,
    };
    ws.send(JSON.stringify({ type: "vm.changed", id: "x", payload: { vms: [vm], removed: [] } }));
    const shown = await eventually("the VM listed", async () => {
      const res = await cp.api(`/api/vms/${vm.uuid}`);
      return res.ok ? res : undefined;
    });
    expect(shown.headers.get("content-type")).toContain("application/json");
    expect((await json(shown)).vm.name).toBe(vm.name);
    ws.close();

    const { credential: other, sim: otherSim } = await simNode("slash-name");
    await otherSim.stop();
    const second = await rawSocket(cp.url, other);
    const bad = { ...vm, uuid: crypto.randomUUID(), name: "../../etc/passwd" };
    second.ws.send(JSON.stringify({ type: "vm.changed", id: "y", payload: { vms: [bad], removed: [] } }));
    expect((await second.closed).code).toBe(CLOSE.protocolError);
    expect((await cp.api(`/api/vms/${bad.uuid}`)).status).toBe(404);
  });
});

describe("secrets at rest and in logs", () => {
  it("no token, credential or join token in plaintext in any persisted file or any log line", async () => {
    for (const role of ["viewer", "operator", "admin"]) {
      const { token } = await json<{ token: string }>(
        await cp.api("/api/tokens", { method: "POST", json: { name: `t-${role}`, role } }),
      );
      secrets.add(token);
      expect((await cp.api("/api/me", { token })).status).toBe(200);
    }
    const rotated = await json<{ joinToken: string }>(
      await cp.api(`/api/nodes/${(await createNode(cp, `rot-${Date.now()}`)).node.id}/rotate_token`, {
        method: "POST",
      }),
    );
    secrets.add(rotated.joinToken);
    // Wrong tokens are "secrets" too: an attempt must not be echoed into the logs.
    const wrong = `qxa_wrong${crypto.randomUUID()}`;
    secrets.add(wrong);
    expect((await cp.api("/api/nodes", { token: wrong })).status).toBe(401);
    await cp.api(`/api/vms/${DEMO.web01}/logs?lines=5`);

    // Persisted state, read straight from disk once workerd has stopped (so its writes are flushed).
    const logs = cp.logs + agent.output;
    await cp.stop();
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir)) {
        const p = join(dir, e);
        if (statSync(p).isDirectory()) walk(p);
        else files.push(p);
      }
    };
    walk(cp.persistDir);
    const contents = files.map((f) => readFileSync(f));
    expect(contents.some((c) => c.includes("real-host"))).toBe(true); // the scan does see D1's rows
    let secretsChecked = 0;
    for (const secret of secrets) {
      secretsChecked++;
      for (const [i, c] of contents.entries())
        expect(c.includes(secret), `${files[i]} holds a plaintext secret`).toBe(false);
      expect(logs.includes(secret), "a secret appears in the logs").toBe(false);
    }
    expect(secretsChecked).toBeGreaterThanOrEqual(14);
    expect(logs.length).toBeGreaterThan(0); // the agent logged at debug level: there was output to scan
    await cp.boot();
  });
});

describe("rate limits (Workers Rate Limiting bindings, local)", () => {
  const expect429 = async (res: Response) => {
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBeTruthy();
    expect(await json(res)).toMatchObject({
      success: false,
      error: { code: "rate_limited", message: expect.stringMatching(/too many/) },
    });
  };

  it("logs (120/min per token), reset_state (60/min per token) and enrollment (30/min per IP) answer 429", async () => {
    await waitConnected(
      cp,
      (await json(await cp.api("/api/nodes"))).nodes.find((n: { name: string }) => n.name === "real-host").id,
      true,
      30_000,
    );
    const { token } = await json<{ token: string }>(
      await cp.api("/api/tokens", { method: "POST", json: { name: "limited", role: "operator" } }),
    );
    // The local limiter counts in fixed 60 s windows: allow for one window boundary mid-run.
    const seen: Record<string, number> = {};
    const firstOver = async (n: number, call: () => Promise<Response>) => {
      for (let i = 0; i < n; i++) {
        const res = await call();
        if (res.status === 429) return { at: i, res };
        seen[res.status] = (seen[res.status] ?? 0) + 1;
        await res.arrayBuffer();
      }
      throw new Error(`no 429 in ${n} calls: ${JSON.stringify(seen)}`);
    };
    const logs = await firstOver(280, () => cp.api(`/api/vms/${DEMO.web01}/logs?lines=1`, { token }));
    expect(logs?.at).toBeGreaterThanOrEqual(100);
    await expect429(logs.res);
    const reset = await firstOver(140, () =>
      cp.api(`/api/vms/${DEMO.web01}/reset_state?force=true`, { method: "POST", token }),
    );
    expect(reset?.at).toBeGreaterThanOrEqual(50);
    await expect429(reset.res);
    const enrollment = await firstOver(70, () =>
      fetch(cp.url + AGENT_ENROLL_PATH, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ joinToken: "qxj_nope" }),
      }),
    );
    await expect429(enrollment.res);
    // Another token is not starved by this one's logs budget.
    expect((await cp.api(`/api/vms/${DEMO.web01}/logs?lines=1`)).status).toBe(200);
  }, 120_000);
});
