// Notification targets' API rules inside workerd (admin only, validation, the secret never shown
// again, delete), and sign-in with Access off: an assertion alone signs nobody in.
import { SELF } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import { api, BASE, createToken, expectError, json } from "./support.ts";

const target = (over: Record<string, unknown> = {}) => ({
  name: "ops hook",
  url: "https://hooks.example.com/qx",
  secret: "s3cret-✓",
  events: ["node.offline", "vm.stuck"],
  ...over,
});

let viewer: string;
let operator: string;
beforeAll(async () => {
  viewer = await createToken("viewer");
  operator = await createToken("operator");
});

describe("notification targets", () => {
  it("are for admins only: 403 for viewers and operators on every route", async () => {
    for (const token of [viewer, operator]) {
      await expectError(await api("/api/notifications/targets", { token }), 403, "forbidden");
      await expectError(await api("/api/notifications/targets", { token, json: target() }), 403, "forbidden");
      await expectError(await api("/api/notifications/deliveries", { token }), 403, "forbidden");
      await expectError(await api("/api/notifications/targets/x", { token, method: "DELETE" }), 403, "forbidden");
      await expectError(await api("/api/notifications/targets/x/test", { token, method: "POST" }), 403, "forbidden");
    }
  });

  it("create answers 201 {target} without the secret; the list never shows it; the format defaults to json", async () => {
    const created = await json(
      await api("/api/notifications/targets", { json: target({ name: "Ops — Zürich" }) }),
      201,
    );
    expect(created.target).toMatchObject({
      id: expect.any(String),
      name: "Ops — Zürich",
      url: "https://hooks.example.com/qx",
      events: ["node.offline", "vm.stuck"],
      format: "json",
      createdBy: "admin",
    });
    expect(JSON.stringify(created)).not.toContain("s3cret");
    const slack = await json(
      await api("/api/notifications/targets", {
        json: target({ format: "slack", events: ["node.online", "node.online"] }),
      }),
      201,
    );
    expect(slack.target).toMatchObject({ format: "slack", events: ["node.online"] });
    const listed = await json(await api("/api/notifications/targets"));
    expect(listed.targets.map((t: { id: string }) => t.id)).toEqual(
      expect.arrayContaining([created.target.id, slack.target.id]),
    );
    expect(JSON.stringify(listed)).not.toContain("s3cret");
  });

  it("refuses what it cannot deliver to with 400 naming the field", async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ url: "http://hooks.example.com/qx" }, /^url: .*https/],
      [{ url: "http://10.0.0.5/qx" }, /^url: .*https/],
      [{ url: "https://user:pw@hooks.example.com/qx" }, /^url: .*password/],
      [{ url: "not a url" }, /^url: is not a URL/],
      [{ events: ["vm.exploded"] }, /^events/],
      [{ events: [] }, /^events/],
      [{ secret: "" }, /^secret/],
      [{ name: " " }, /^name/],
      [{ format: "xml" }, /^format/],
    ];
    for (const [over, message] of cases)
      expect(
        (await expectError(await api("/api/notifications/targets", { json: target(over) }), 400, "invalid_request"))
          .message,
      ).toMatch(message);
    // Loopback receivers may use plain http.
    for (const url of ["http://127.0.0.1:8799/hook", "http://localhost:8799/hook", "http://[::1]:8799/hook"]) {
      expect((await api("/api/notifications/targets", { json: target({ url }) })).status).toBe(201);
    }
    await expectError(await api("/api/notifications/deliveries?limit=0"), 400, "invalid_request");
  });

  it("delete: gone from the list, a second delete or a test is 404", async () => {
    const { target: t } = await json(
      await api("/api/notifications/targets", { json: target({ name: "to delete" }) }),
      201,
    );
    expect(await json(await api(`/api/notifications/targets/${t.id}`, { method: "DELETE" }))).toEqual({
      success: true,
      id: t.id,
      deleted: true,
    });
    expect(
      (await json(await api("/api/notifications/targets"))).targets.map((x: { id: string }) => x.id),
    ).not.toContain(t.id);
    await expectError(await api(`/api/notifications/targets/${t.id}`, { method: "DELETE" }), 404, "not_found");
    await expectError(await api(`/api/notifications/targets/${t.id}/test`, { method: "POST" }), 404, "not_found");
  });
});

describe("with Cloudflare Access off", () => {
  it("an assertion header or cookie alone is no sign-in: 401 asking for a bearer token", async () => {
    const attempts: Record<string, string>[] = [
      { "cf-access-jwt-assertion": "eyJhbGciOiJSUzI1NiJ9.e30.sig" },
      { cookie: "CF_Authorization=eyJhbGciOiJSUzI1NiJ9.e30.sig" },
    ];
    for (const headers of attempts) {
      const err = await expectError(await SELF.fetch(`${BASE}/api/me`, { headers }), 401, "unauthorized");
      expect(err.message).toMatch(/bearer token/);
    }
  });
});
