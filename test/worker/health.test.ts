import { env, SELF } from "cloudflare:test";
import { expect, it } from "vitest";

it("answers health without a token", async () => {
  const res = await SELF.fetch("http://x/api/health");
  expect(res.status).toBe(200);
  expect(await res.json()).toMatchObject({ ok: true });
  const t = await env.DB.prepare("select count(*) as n from vms").first<{ n: number }>();
  expect(t?.n).toBe(0);
});
