// VM listing (filters, name search, keyset pages), requests, unknown routes, and a table of bad
// inputs for every parameter and body: each is a 4xx JSON envelope, never a 5xx or HTML.
import { env, SELF } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import { api, BASE, eventually, expectError, json, TestAgent, uuid, vmInfo } from "./support.ts";

let nodeId: string;
let otherNode: string;
const names = Array.from({ length: 25 }, (_, i) => `list-${String(i).padStart(2, "0")}${i % 5 === 0 ? "-DB" : ""}`);
beforeAll(async () => {
  const a = await TestAgent.forNewNode();
  const b = await TestAgent.forNewNode();
  nodeId = a.nodeId;
  otherNode = b.nodeId;
  a.agent.inventory(names.map((n, i) => vmInfo(n, i % 2 ? "running" : "shutoff")));
  b.agent.inventory([vmInfo("other-node-vm", "running")]);
  await eventually(async () => {
    const n = await env.DB.prepare("SELECT count(*) AS n FROM vms").first<{ n: number }>();
    expect(n?.n).toBeGreaterThanOrEqual(26);
  });
  a.agent.close();
  b.agent.close();
});

describe("GET /api/vms", () => {
  it("pages by name with an opaque cursor until nextCursor is null", async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const q: string = `/api/vms?node_id=${nodeId}&limit=7${cursor ? `&cursor=${cursor}` : ""}`;
      const body: { vms: any[]; nextCursor: string | null } = await json(await api(q));
      expect(body.vms.length).toBeLessThanOrEqual(7);
      seen.push(...body.vms.map((v) => v.name));
      cursor = body.nextCursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(4);
    expect(seen).toEqual([...names].sort());
  });

  it("filters by node, state and case-insensitive name substring", async () => {
    const running = await json(await api(`/api/vms?node_id=${nodeId}&state=RUNNING&limit=500`));
    expect(running.vms).toHaveLength(12);
    expect(running.vms.every((v: any) => v.state === "RUNNING" && v.node_id === nodeId)).toBe(true);
    const db = await json(await api(`/api/vms?q=-db`));
    expect(db.vms.map((v: any) => v.name)).toEqual(names.filter((n) => n.endsWith("-DB")).sort());
    const other = await json(await api(`/api/vms?node_id=${otherNode}`));
    expect(other.vms.map((v: any) => v.name)).toEqual(["other-node-vm"]);
    expect(other.nextCursor).toBeNull();
    const none = await json(await api(`/api/vms?q=${encodeURIComponent("%_'\"")}`));
    expect(none.vms).toEqual([]);
  });

  it("a VM has the documented fields", async () => {
    const { vms } = await json(await api(`/api/vms?node_id=${nodeId}&limit=1`));
    expect(vms[0]).toMatchObject({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      name: "list-00-DB",
      state: "STOPPED",
      node_id: nodeId,
      vcpus: 2,
      memoryMiB: 2048,
      stateUpdatedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      updatedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      missing: false,
    });
  });

  it("404 for unknown VMs, requests, nodes; events of a VM newest first", async () => {
    await expectError(await api(`/api/vms/${uuid()}`), 404, "not_found");
    await expectError(await api(`/api/vms/${uuid()}/events`), 404, "not_found");
    await expectError(await api(`/api/requests/${uuid()}`), 404, "not_found");
    const { vms } = await json(await api(`/api/vms?node_id=${nodeId}&limit=1`));
    const { events } = await json(await api(`/api/vms/${vms[0].id}/events`));
    expect(events[0]).toMatchObject({
      at: expect.any(String),
      actor: expect.stringMatching(/^agent:/),
      action: "discovered",
      fromState: null,
      toState: "STOPPED",
      source: "agent",
    });
  });
});

describe("limits on input", () => {
  it("a body over 64 KiB is refused with 413 JSON before it is parsed", async () => {
    await expectError(await api("/api/nodes", { json: { name: "x".repeat(70_000) } }), 413, "payload_too_large");
    const res = await SELF.fetch(`${BASE}/agent/enroll`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ joinToken: "y".repeat(70_000) }),
    });
    await expectError(res, 413, "payload_too_large");
  });

  it("blank filters mean no filter", async () => {
    const all = await json(await api("/api/vms?node_id=&state=&q=&cursor=&limit=500"));
    expect(all.vms.length).toBeGreaterThanOrEqual(26);
  });
});

describe("unknown routes and methods", () => {
  it("answer JSON 404, never HTML", async () => {
    for (const [method, path] of [
      ["GET", "/api/nope"],
      ["PUT", `/api/vms/${uuid()}`],
      ["PATCH", "/api/nodes"],
      ["GET", "/agent/nope"],
      ["DELETE", "/api/vms"],
    ] as const) {
      const res = await api(path, { method });
      expect(res.status, `${method} ${path}`).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      await expectError(res, res.status);
    }
  });
});

describe("bad inputs -> 4xx JSON", () => {
  const vmId = uuid();
  const huge = "x".repeat(100_000);
  const cases: [string, string, { json?: unknown; body?: string; headers?: Record<string, string> }?][] = [
    // bodies
    ["POST", "/api/nodes", { body: "{not json", headers: { "content-type": "application/json" } }],
    ["POST", "/api/nodes", { body: "", headers: { "content-type": "application/json" } }],
    ["POST", "/api/nodes", { json: {} }],
    ["POST", "/api/nodes", { json: { name: 42 } }],
    ["POST", "/api/nodes", { json: { name: "" } }],
    ["POST", "/api/nodes", { json: { name: huge } }],
    ["POST", "/api/nodes", { json: { name: "../etc" } }],
    ["POST", "/api/nodes", { json: { name: "a b" } }],
    ["POST", "/api/nodes", { json: ["name"] }],
    ["POST", "/api/nodes", { json: null }],
    ["POST", "/api/nodes", { body: "name=x", headers: { "content-type": "application/x-www-form-urlencoded" } }],
    ["POST", "/api/tokens", { json: { name: "t", role: "root" } }],
    ["POST", "/api/tokens", { json: { name: "t" } }],
    ["POST", "/api/tokens", { json: { name: huge, role: "viewer" } }],
    ["POST", "/api/tokens", { json: { name: 1, role: 2 } }],
    ["POST", "/api/tokens", { body: "[[[[", headers: { "content-type": "application/json" } }],
    ["POST", `/api/vms/${vmId}/reset_state`, { body: "{oops", headers: { "content-type": "application/json" } }],
    ["POST", `/api/vms/${vmId}/reset_state`, { json: { reason: huge } }],
    ["POST", `/api/vms/${vmId}/reset_state`, { json: { force: "yes" } }],
    ["POST", `/api/vms/${vmId}/reset_state`, { json: { unknown: 1 } }],
    ["POST", "/agent/enroll", { body: "{", headers: { "content-type": "application/json" } }],
    ["POST", "/agent/enroll", { json: { joinToken: 5 } }],
    ["POST", "/agent/enroll", { json: { joinToken: huge } }],
    ["POST", "/agent/enroll", { json: {} }],
    ["POST", "/agent/enroll", { json: { joinToken: "qxj_x", hostname: huge } }],
    // queries
    ["GET", "/api/vms?limit=0"],
    ["GET", "/api/vms?limit=501"],
    ["GET", "/api/vms?limit=-1"],
    ["GET", "/api/vms?limit=2.5"],
    ["GET", "/api/vms?limit=abc"],
    ["GET", "/api/vms?limit=99999999999999999999"],
    ["GET", "/api/vms?state=running"],
    ["GET", "/api/vms?state=EXPLODED"],
    ["GET", "/api/vms?cursor=not-a-cursor"],
    ["GET", `/api/vms?cursor=${btoa('{"a":1}')}`],
    ["GET", `/api/vms?cursor=${huge}`],
    ["GET", `/api/vms?q=${huge.slice(0, 300)}`],
    ["GET", `/api/vms?node_id=${huge.slice(0, 300)}`],
    ["POST", `/api/vms/${vmId}/stop?force=maybe`],
    ["POST", `/api/vms/${vmId}/start?wait=2`],
    ["POST", `/api/vms/${vmId}/reset_state?force=nope`],
    ["GET", `/api/vms/${vmId}/logs?lines=0`],
    ["GET", `/api/vms/${vmId}/logs?lines=10001`],
    ["GET", `/api/vms/${vmId}/logs?lines=-1`],
    ["GET", `/api/vms/${vmId}/logs?lines=1.5`],
    ["GET", `/api/vms/${vmId}/logs?lines=%00`],
    // odd ids
    ["GET", `/api/vms/${"z".repeat(300)}`],
    ["GET", "/api/vms/%00"],
    ["GET", "/api/vms/..%2F..%2Fetc%2Fpasswd"],
    ["GET", "/api/vms/' OR 1=1 --"],
    ["GET", "/api/nodes/%E2%80%AE"],
    ["GET", `/api/requests/${"9".repeat(500)}`],
    ["DELETE", "/api/tokens/%F0%9F%92%A5"],
    ["POST", `/api/nodes/${"n".repeat(200)}/rotate_token`],
    ["POST", "/api/vms/not-a-vm/start"],
    ["GET", "/api/vms/not-a-vm/logs?lines=5"],
  ];
  for (const [method, path, init] of cases) {
    it(`${method} ${path.slice(0, 90)}${init?.json !== undefined ? " " + JSON.stringify(init.json).slice(0, 60) : ""}${init?.body !== undefined ? ` body=${init.body.slice(0, 20)}` : ""}`, async () => {
      const res = path.startsWith("/agent/")
        ? await SELF.fetch(`${BASE}${path}`, {
            method,
            headers: {
              "content-type": "application/json",
              "cf-connecting-ip": `10.5.${Math.floor(Math.random() * 250)}.1`,
              ...init?.headers,
            },
            body: init?.json !== undefined ? JSON.stringify(init.json) : init?.body,
          })
        : await api(path, { method, ...init });
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      await expectError(res, res.status);
    });
  }
});
