// Authentication and roles: health is open, every other /api route needs a valid API
// token; viewer < operator < admin; node credentials and join tokens are not API tokens.
import { SELF } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import { ADMIN, api, BASE, createNode, createToken, enroll, expectError, json, uuid } from "./support.ts";

const someId = uuid();
/** Every /api route with the least role it needs. */
const ROUTES: [method: string, path: string, role: "viewer" | "operator" | "admin"][] = [
  ["GET", "/api/me", "viewer"],
  ["GET", "/api/nodes", "viewer"],
  ["GET", `/api/nodes/${someId}`, "viewer"],
  ["POST", "/api/nodes", "admin"],
  ["POST", `/api/nodes/${someId}/rotate_token`, "admin"],
  ["DELETE", `/api/nodes/${someId}`, "admin"],
  ["GET", "/api/vms", "viewer"],
  ["GET", `/api/vms/${someId}`, "viewer"],
  ["GET", `/api/vms/${someId}/events`, "viewer"],
  ["POST", `/api/vms/${someId}/start`, "operator"],
  ["POST", `/api/vms/${someId}/stop`, "operator"],
  ["POST", `/api/vms/${someId}/reset_state`, "operator"],
  ["GET", `/api/vms/${someId}/logs`, "operator"],
  ["GET", `/api/requests/${someId}`, "viewer"],
  ["GET", "/api/tokens", "admin"],
  ["POST", "/api/tokens", "admin"],
  ["DELETE", `/api/tokens/${someId}`, "admin"],
];
const rank = { viewer: 0, operator: 1, admin: 2 };

let tokens: Record<"viewer" | "operator" | "admin", string>;
let nodeCredential: string;
let joinToken: string;
beforeAll(async () => {
  tokens = {
    viewer: await createToken("viewer"),
    operator: await createToken("operator"),
    admin: await createToken("admin"),
  };
  nodeCredential = (await enroll((await createNode()).joinToken)).credential;
  joinToken = (await createNode()).joinToken;
});

describe("authentication", () => {
  it("health needs no token", async () => {
    const body = await json(await api("/api/health", { token: null }));
    expect(body).toEqual({ ok: true, version: expect.any(String) });
  });

  it("/api/me tells role and name, and the stuck threshold the dashboard marks VMs by (wrangler.toml's STUCK_AFTER_MS)", async () => {
    expect(await json(await api("/api/me"))).toEqual({ role: "admin", name: "admin", stuckAfterMs: 120_000 });
    const t = await createToken("operator", "ops-bot");
    expect(await json(await api("/api/me", { token: t }))).toEqual({
      role: "operator",
      name: "ops-bot",
      stuckAfterMs: 120_000,
    });
  });

  for (const [method, path] of ROUTES) {
    it(`${method} ${path}: 401 without a token, with a wrong one, with a node credential or a join token`, async () => {
      await expectError(await api(path, { method, token: null }), 401, "unauthorized");
      await expectError(await api(path, { method, token: "qxa_" + "A".repeat(43) }), 401, "unauthorized");
      await expectError(await api(path, { method, token: ADMIN + "x" }), 401, "unauthorized");
      await expectError(await api(path, { method, token: nodeCredential }), 401, "unauthorized");
      await expectError(await api(path, { method, token: joinToken }), 401, "unauthorized");
    });
  }

  it("a malformed Authorization header is a 401, not a 500", async () => {
    for (const header of ["Basic abc", "Bearer", "Bearer ", "bearer a b c", "x".repeat(5000)]) {
      await expectError(await SELF.fetch(`${BASE}/api/vms`, { headers: { authorization: header } }), 401);
    }
  });
});

describe("roles", () => {
  for (const [method, path, need] of ROUTES) {
    for (const role of ["viewer", "operator"] as const) {
      if (rank[role] >= rank[need]) continue;
      it(`${method} ${path}: 403 for ${role}`, async () => {
        const err = await expectError(
          await api(path, { method, token: tokens[role], json: method === "GET" ? undefined : {} }),
          403,
          "forbidden",
        );
        expect(err.message).toContain(need);
      });
    }
    it(`${method} ${path}: allowed for ${need} (not 401/403)`, async () => {
      const res = await api(path, {
        method,
        token: tokens[need],
        json: method === "GET" || method === "DELETE" ? undefined : {},
      });
      expect([401, 403]).not.toContain(res.status);
      expect(res.status).toBeLessThan(500);
    });
  }
});

describe("API tokens", () => {
  it("are shown once, stored hashed, listed without the secret, and revocable", async () => {
    const created = await json(await api("/api/tokens", { json: { name: "ci", role: "viewer" } }), 201);
    expect(created).toMatchObject({ name: "ci", role: "viewer", id: expect.any(String) });
    expect(created.token).toMatch(/^qxa_[A-Za-z0-9_-]{43}$/);
    const list = await json(await api("/api/tokens"));
    const listed = list.tokens.find((t: any) => t.id === created.id);
    expect(listed).toMatchObject({ id: created.id, name: "ci", role: "viewer", revokedAt: null });
    expect(JSON.stringify(list)).not.toContain(created.token);
    const { env } = await import("cloudflare:test");
    const row = await env.DB.prepare("SELECT token_hash FROM api_tokens WHERE id = ?")
      .bind(created.id)
      .first<{ token_hash: string }>();
    expect(row!.token_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(row!.token_hash).not.toContain(created.token);

    expect((await api("/api/vms", { token: created.token })).status).toBe(200);
    await json(await api(`/api/tokens/${created.id}`, { method: "DELETE" }));
    await expectError(await api("/api/vms", { token: created.token }), 401, "unauthorized");
    const after = (await json(await api("/api/tokens"))).tokens.find((t: any) => t.id === created.id);
    expect(after.revokedAt).not.toBeNull();
    await expectError(await api(`/api/tokens/${uuid()}`, { method: "DELETE" }), 404, "not_found");
  });

  it("an admin token can do admin things", async () => {
    const admin2 = await createToken("admin");
    expect((await api("/api/nodes", { token: admin2, json: { name: "made-by-admin-token" } })).status).toBe(201);
  });
});
