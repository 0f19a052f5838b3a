// An API token revoked is refused from the next request on in the isolate that revoked it, and
// within TOKEN_CACHE_MS (one second) in any other isolate still holding it; the live log follows
// opened with it are closed; power actions are rate limited per token. Requests with one token share
// its lookup while it runs; an unknown token is never kept.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { forgetTokenHash, hashSecret, principalOf, TOKEN_CACHE_MS } from "../../worker/auth.ts";
import { FOLLOW_CLOSE_REVOKED } from "../../protocol/api.ts";
import {
  agentsClosedAfterEach,
  api,
  createToken,
  eventually,
  expectError,
  FollowViewer,
  json,
  TestAgent,
  uuid,
  vmInfo,
} from "./support.ts";

const agents = agentsClosedAfterEach();

const tokenId = async (name: string) =>
  (await json(await api("/api/tokens"))).tokens.find((t: any) => t.name === name).id as string;

/** The test environment with its real D1, counting the statements prepared on it. */
function countingEnv() {
  const counted = { statements: 0 };
  const DB = new Proxy(env.DB, {
    get(target, key) {
      if (key === "prepare")
        return (sql: string) => {
          counted.statements++;
          return target.prepare(sql);
        };
      const value: unknown = Reflect.get(target, key);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { env: { ...env, DB }, counted };
}

describe("API token cache", () => {
  it("requests with one token while it is looked up share the lookup: one D1 read for twenty", async () => {
    const token = await createToken("viewer", "twenty-at-once");
    const { env: counting, counted } = countingEnv();
    const principals = await Promise.all(Array.from({ length: 20 }, () => principalOf(counting, token)));
    expect(principals.map((p) => p?.actor)).toEqual(Array(20).fill("token:twenty-at-once"));
    expect(counted.statements).toBe(1);
    // Kept: the next request reads nothing; evicted by its hash (a revocation here): read again.
    await principalOf(counting, token);
    expect(counted.statements).toBe(1);
    forgetTokenHash(await hashSecret(token));
    expect((await principalOf(counting, token))?.role).toBe("viewer");
    expect(counted.statements).toBe(2);
  });

  it("an unknown token is not kept: refused each time it is tried, by a fresh lookup", async () => {
    const { env: counting, counted } = countingEnv();
    const unknown = "qxa_not-a-token-anyone-was-given";
    expect(await Promise.all([principalOf(counting, unknown), principalOf(counting, unknown)])).toEqual([null, null]);
    expect(counted.statements).toBe(1);
    expect(await principalOf(counting, unknown)).toBeNull();
    expect(counted.statements).toBe(2);
  });
});

describe("API token revocation", () => {
  it("DELETE /api/tokens/:id: the very next request with the token is refused", async () => {
    const token = await createToken("operator", "revoke-me");
    // Used just before, so this isolate holds it in its cache.
    expect((await api("/api/vms", { token })).status).toBe(200);
    expect((await api("/api/me", { token })).status).toBe(200);
    const id = await tokenId("revoke-me");
    await json(await api(`/api/tokens/${id}`, { method: "DELETE" }));
    const answered = performance.now();
    await expectError(await api("/api/vms", { token }), 401, "unauthorized");
    const refusedAfter = performance.now() - answered;
    await expectError(await api("/api/me", { token }), 401, "unauthorized");
    console.log(
      `API token revocation, same isolate: the first request after the delete answer was refused (${refusedAfter.toFixed(1)} ms after it)`,
    );
  });

  it("revoked elsewhere (D1 changed, this isolate's copy not evicted): refused once its copy is a second old", async () => {
    const token = await createToken("viewer", "revoked-elsewhere");
    expect((await api("/api/vms", { token })).status).toBe(200);
    const id = await tokenId("revoked-elsewhere");
    // What another isolate's DELETE does to D1; this isolate's cache entry stays as it was.
    await env.DB.prepare("UPDATE api_tokens SET revoked_at = ? WHERE id = ?").bind(Date.now(), id).run();
    const revokedAt = performance.now();
    let status = 200;
    while (status === 200 && performance.now() - revokedAt < 10 * TOKEN_CACHE_MS) {
      const res = await api("/api/vms", { token });
      status = res.status;
      await res.arrayBuffer();
      if (status === 200) await new Promise((r) => setTimeout(r, 20));
    }
    const took = performance.now() - revokedAt;
    expect(status).toBe(401);
    console.log(
      `API token revocation, another isolate's copy: refused ${took.toFixed(0)} ms after the revocation reached D1 (cache ${TOKEN_CACHE_MS} ms)`,
    );
    expect(TOKEN_CACHE_MS).toBeLessThanOrEqual(1_000);
  });

  it("a live log follow opened with the token is closed by the revocation, before its answer", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    const vm = vmInfo(`followed-${s.name}`, "running");
    s.agent.inventory([vm]);
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    const token = await createToken("operator", "follower");
    const viewer = await FollowViewer.open(vm.uuid, token);
    const follow = await s.agent.next("vm.logs.follow");
    s.agent.reply(follow, "ack");
    s.agent.send({ type: "log.append", id: follow.id, payload: { seq: 0, text: "before revocation\n" } });
    await viewer.received(2);
    await json(await api(`/api/tokens/${await tokenId("follower")}`, { method: "DELETE" }));
    const answered = performance.now();
    const closed = await viewer.waitClosed();
    console.log(
      `API token revocation, open follow: closed ${(performance.now() - answered).toFixed(1)} ms after the delete answer`,
    );
    expect(closed.code).toBe(FOLLOW_CLOSE_REVOKED);
    expect(viewer.messages.at(-1)).toMatchObject({ type: "error", code: "token_revoked" });
    // The agent stops following a log nobody may watch any more.
    expect((await s.agent.next("vm.logs.unfollow")).id).toBe(follow.id);
    await expectError(await FollowViewer.request(vm.uuid, token), 401, "unauthorized");
  });
});

describe("power actions are rate limited per token", () => {
  it("start and stop: 120 a minute per token, then 429 with Retry-After and the JSON error; another token unaffected", async () => {
    const token = await createToken("operator", "power-hungry");
    const missing = uuid();
    const seen: Record<number, number> = {};
    let limited: { at: number; res: Response } | null = null;
    // The local limiter counts in fixed 60 s windows: up to twice the limit, for a window boundary mid-run.
    for (let i = 0; i < 260 && !limited; i++) {
      const res = await api(`/api/vms/${missing}/${i % 2 ? "stop" : "start"}`, { method: "POST", token });
      if (res.status === 429) limited = { at: i, res };
      else {
        seen[res.status] = (seen[res.status] ?? 0) + 1;
        await res.arrayBuffer();
      }
    }
    expect(limited, JSON.stringify(seen)).not.toBeNull();
    expect(limited!.at).toBeGreaterThanOrEqual(119);
    expect(Object.keys(seen)).toEqual(["404"]);
    expect(limited!.res.headers.get("retry-after")).toBeTruthy();
    const err = await expectError(limited!.res, 429, "rate_limited");
    expect(err.message).toMatch(/too many/);
    const other = await createToken("operator", "power-other");
    await expectError(await api(`/api/vms/${missing}/start`, { method: "POST", token: other }), 404, "not_found");
  }, 60_000);
});
