// Cloudflare Access sign-in against the real control plane (wrangler dev) and a team key set served
// on loopback by the test: each role, every way an assertion can be wrong (401 saying why, never a
// 500), key rotation without a restart, the cross-site guard, and events naming the person.
import { STUCK_AFTER_MS } from "../../protocol/api.ts";
import { execFile } from "node:child_process";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportSPKI, importJWK, SignJWT } from "jose";
import { ControlPlane } from "../support/control-plane.ts";
import { AccessTeam, teamKey, type TeamKey } from "../support/access-team.ts";
import type { AgentProcess } from "../support/agent.ts";
import { DEMO, enrollAgent, eventually, json, SHORT_DEADLINES } from "./journey.ts";

/** `GET /api/me` also says the stuck threshold in force (the control plane default here). */
const STUCK = STUCK_AFTER_MS;

const ALICE = "alice@acme.test"; // admin by email
const BOB = "bob@acme.test"; // operator through his group
const CAROL = "carol@acme.test"; // anyone else: viewer
/** short, so the rotation test need not wait the default minute */
const KEYS_REFETCH_MS = 3_000;

let team: AccessTeam;
let keyA: TeamKey;
let keyB: TeamKey;
let outsider: TeamKey;
let cp: ControlPlane;
let agent: AgentProcess;

beforeAll(async () => {
  [keyA, keyB, outsider] = await Promise.all([teamKey("key-a"), teamKey("key-b"), teamKey("key-outsider")]);
  team = await AccessTeam.start({ keys: [keyA] });
  cp = await ControlPlane.start({
    vars: {
      ...SHORT_DEADLINES,
      ...team.vars({
        ACCESS_ADMINS: `${ALICE}, someone@else.test`,
        ACCESS_OPERATORS: "Ops-Team",
        ACCESS_KEYS_REFETCH_MS: String(KEYS_REFETCH_MS),
      }),
    },
  });
  ({ agent } = await enrollAgent(cp, "access-node"));
}, 120_000);

afterAll(async () => {
  await agent?.stop();
  await cp?.dispose();
  await team?.stop();
});

/** A request carrying only an Access assertion (header, or Access's cookie). */
function asserted(
  path: string,
  assertion: string,
  init: { method?: string; headers?: Record<string, string>; json?: unknown; via?: "header" | "cookie" } = {},
) {
  const headers = new Headers(init.headers);
  if (init.via === "cookie") headers.set("cookie", `theme=dark; CF_Authorization=${assertion}`);
  else headers.set("cf-access-jwt-assertion", assertion);
  if (init.json !== undefined) headers.set("content-type", "application/json");
  return fetch(cp.url + path, {
    method: init.method ?? "GET",
    headers,
    body: init.json === undefined ? undefined : JSON.stringify(init.json),
  });
}

async function refusal(res: Response, status = 401): Promise<{ code: string; message: string }> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get("content-type")).toContain("application/json");
  const body = JSON.parse(text) as { success: boolean; error: { code: string; message: string } };
  expect(body.success).toBe(false);
  return body.error;
}

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

/** Rows of the control plane's local D1, read the supported way (`wrangler d1 execute --local`). */
async function d1Rows<T>(sql: string): Promise<T[]> {
  const root = resolve(import.meta.dirname, "../..");
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      join(root, "node_modules/wrangler/bin/wrangler.js"),
      "d1",
      "execute",
      "DB",
      "--local",
      "--persist-to",
      cp.persistDir,
      "--json",
      "--command",
      sql,
    ],
    {
      cwd: root,
      env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false" },
    },
  );
  return (JSON.parse(stdout) as { results: T[] }[])[0].results;
}

describe("Access sign-in", () => {
  it("each identity gets its role: admin by email, operator by group, anyone else viewer; header or cookie", async () => {
    const alice = await team.mint(keyA, { email: ALICE });
    expect(await json(await asserted("/api/me", alice))).toEqual({
      role: "admin",
      name: ALICE,
      via: "access",
      email: ALICE,
      stuckAfterMs: STUCK,
    });
    const bob = await team.mint(keyA, { email: BOB, groups: ["ops-team"] });
    expect(await json(await asserted("/api/me", bob, { via: "cookie" }))).toEqual({
      role: "operator",
      name: BOB,
      via: "access",
      email: BOB,
      stuckAfterMs: STUCK,
    });
    const carol = await team.mint(keyA, { email: "Carol@Acme.test" });
    expect(await json(await asserted("/api/me", carol))).toEqual({
      role: "viewer",
      name: CAROL,
      via: "access",
      email: CAROL,
      stuckAfterMs: STUCK,
    });

    // Roles hold on the routes: a viewer cannot reset, an operator cannot make tokens, an admin can.
    expect(
      (await refusal(await asserted(`/api/vms/${DEMO.web01}/reset_state?force=true`, carol, { method: "POST" }), 403))
        .code,
    ).toBe("forbidden");
    expect(
      (await refusal(await asserted("/api/tokens", bob, { method: "POST", json: { name: "x", role: "viewer" } }), 403))
        .code,
    ).toBe("forbidden");
    expect(
      (await asserted("/api/tokens", alice, { method: "POST", json: { name: "made-by-alice", role: "viewer" } }))
        .status,
    ).toBe(201);
  });

  it("an operator's reset is recorded under the person's email, in the events and in the request rows", async () => {
    const bob = await team.mint(keyA, { email: BOB, groups: ["ops-team"] });
    // Without force the reset asks the hypervisor: a request row (vm.state) made for bob.
    const res = await asserted(`/api/vms/${DEMO.scratch}/reset_state`, bob, {
      method: "POST",
      json: { reason: "checking Access" },
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const { events } = await json<{ events: { action: string; actor: string; reason: string | null }[] }>(
      await cp.api(`/api/vms/${DEMO.scratch}/events`),
    );
    expect(events.find((e) => e.action === "reset_state")).toMatchObject({
      actor: `user:${BOB}`,
      reason: "checking Access",
    });
    // A finished query's row reaches D1 with the session's next batch of kept rows, about a second later.
    const rows = await eventually(
      "bob's vm.state row in D1",
      async () => {
        const found = await d1Rows<{ kind: string; requested_by: string }>(
          `SELECT kind, requested_by FROM requests WHERE vm_id = '${DEMO.scratch}'`,
        );
        return found.some((r) => r.kind === "vm.state" && r.requested_by === `user:${BOB}`) ? found : undefined;
      },
      15_000,
      500,
    );
    expect(rows).toContainEqual({ kind: "vm.state", requested_by: `user:${BOB}` });
  });

  it("a bearer token keeps working, and wins over an assertion", async () => {
    const carol = await team.mint(keyA, { email: CAROL });
    expect(await json(await cp.api("/api/me", { headers: { "cf-access-jwt-assertion": carol } }))).toEqual({
      role: "admin",
      name: "admin",
      stuckAfterMs: STUCK,
    });
  });

  it("every kind of bad assertion is a 401 that says why, never a 500", async () => {
    const now = Math.floor(Date.now() / 1000);
    const publicPem = await exportSPKI((await importJWK(keyA.publicJwk, "RS256")) as CryptoKey);
    const cases: [what: string, assertion: string, why: RegExp][] = [
      ["expired", await team.mint(keyA, { email: ALICE }, { expiresIn: -120 }), /expired/],
      ["not yet valid", await team.mint(keyA, { email: ALICE }, { notBefore: 600 }), /not valid yet/],
      ["wrong audience", await team.mint(keyA, { email: ALICE }, { audience: "another-app" }), /wrong audience/],
      [
        "wrong issuer",
        await team.mint(keyA, { email: ALICE }, { issuer: "https://evil.cloudflareaccess.com" }),
        /wrong issuer/,
      ],
      ["unknown key", await team.mint(outsider, { email: ALICE }), /unknown key/],
      ["another key's signature", await team.mint(outsider, { email: ALICE }, { kid: keyA.kid }), /bad signature/],
      [
        "alg none",
        `${b64url({ alg: "none", kid: keyA.kid })}.${b64url({ email: ALICE, aud: team.audience, iss: team.issuer, exp: now + 300 })}.`,
        /not signed with RS256/,
      ],
      [
        "HS256 keyed with the public key",
        await new SignJWT({ email: ALICE })
          .setProtectedHeader({ alg: "HS256", kid: keyA.kid })
          .setIssuer(team.issuer)
          .setAudience(team.audience)
          .setExpirationTime(now + 300)
          .sign(new TextEncoder().encode(publicPem)),
        /not signed with RS256/,
      ],
      ["garbage", "this is not a JWT", /not a well-formed/],
      ["three parts of garbage", "a.b.c", /not a well-formed/],
      ["JSON that is no JWT", `${b64url([1, 2])}.${b64url("x")}.AAAA`, /not a well-formed|refused/],
      ["no email, no service token", await team.mint(keyA, {}), /no email/],
      ["oversized", "e".repeat(20_000), /over 8192 characters/],
    ];
    const table: string[] = [];
    for (const [what, assertion, why] of cases) {
      for (const via of ["header", "cookie"] as const) {
        if (what === "oversized" && via === "cookie") continue;
        const res = await asserted("/api/vms", assertion, { via });
        const error = await refusal(res, 401);
        expect(error.code, what).toBe("unauthorized");
        expect(error.message, what).toMatch(why);
        if (via === "header") table.push(`${what}: ${res.status} ${error.message}`);
      }
    }
    console.log(`Access negative cases:\n${table.join("\n")}`);
  });

  it("a new key (rotation) is picked up without a restart, and unknown keys refetch the set at most once per interval", async () => {
    const before = team.fetches;
    // Unknown kids in a burst: at most one extra fetch of the key set.
    for (let i = 0; i < 5; i++)
      await refusal(await asserted("/api/me", await team.mint(outsider, { email: ALICE }, { kid: `forged-${i}` })));
    expect(team.fetches - before).toBeLessThanOrEqual(1);

    team.published = [keyA, keyB]; // Access publishes the next key before signing with it
    const signedWithB = await team.mint(keyB, { email: ALICE });
    const me = await eventually(
      "an assertion signed with the new key accepted",
      async () => {
        const res = await asserted("/api/me", signedWithB);
        return res.status === 200 ? json(res) : undefined;
      },
      KEYS_REFETCH_MS * 5,
      250,
    );
    expect(me).toEqual({ role: "admin", name: ALICE, via: "access", email: ALICE, stuckAfterMs: STUCK });

    team.published = [keyB]; // the old key retired: still cached until the set is read again
    expect((await asserted("/api/me", await team.mint(keyB, { email: CAROL }))).status).toBe(200);
    team.published = [keyA];
  });

  it("keys that cannot be read: cached keys keep working, an unknown key is a 503 (not a 401, not a 500)", async () => {
    team.failing = true;
    try {
      await new Promise((r) => setTimeout(r, KEYS_REFETCH_MS + 200)); // past the cooldown, so an unknown kid fetches
      expect((await asserted("/api/me", await team.mint(keyB, { email: ALICE }))).status).toBe(200);
      const error = await refusal(
        await asserted("/api/me", await team.mint(outsider, { email: ALICE }, { kid: "rotated-in-later" })),
        503,
      );
      expect(error).toMatchObject({
        code: "access_keys_unavailable",
        message: expect.stringMatching(/keys could not be read/),
      });
    } finally {
      team.failing = false;
    }
  });
});

describe("cross-site guard", () => {
  it("refuses a state-changing Access request from another origin or site; same-origin, non-browser and bearer requests pass", async () => {
    const bob = await team.mint(keyA, { email: BOB, groups: ["ops-team"] });
    const path = `/api/vms/${DEMO.web02}/reset_state?force=true`;
    const other = await refusal(
      await asserted(path, bob, { method: "POST", headers: { origin: "https://evil.example" } }),
      403,
    );
    expect(other).toMatchObject({ code: "cross_site" });
    expect(
      (await refusal(await asserted(path, bob, { method: "POST", headers: { "sec-fetch-site": "cross-site" } }), 403))
        .code,
    ).toBe("cross_site");
    expect(
      (await refusal(await asserted(path, bob, { method: "POST", headers: { "sec-fetch-site": "same-site" } }), 403))
        .code,
    ).toBe("cross_site");
    expect(
      (await refusal(await asserted(path, bob, { method: "POST", via: "cookie", headers: { origin: "null" } }), 403))
        .code,
    ).toBe("cross_site");

    expect(
      (await asserted(path, bob, { method: "POST", headers: { origin: cp.url, "sec-fetch-site": "same-origin" } }))
        .status,
    ).toBe(200);
    expect((await asserted(path, bob, { method: "POST" })).status).toBe(200); // no browser headers: a script
    // Reads are not guarded (nothing changes); bearer tokens are never guarded.
    expect(
      (await asserted("/api/vms", bob, { headers: { origin: "https://evil.example", "sec-fetch-site": "cross-site" } }))
        .status,
    ).toBe(200);
    expect(
      (
        await cp.api(path, {
          method: "POST",
          headers: { origin: "https://evil.example", "sec-fetch-site": "cross-site" },
        })
      ).status,
    ).toBe(200);
  });
});
