// GET /api/openapi.json: an OpenAPI 3.1 document generated from the routes' zod schemas, listing
// every route the app mounts (checked against Hono's own route table) with parameters, bodies,
// responses and the bearer security.
import { describe, expect, it } from "vitest";
import app from "../../worker/index.ts";
import { openApiPath } from "../../worker/openapi.ts";
import { api, json } from "./support.ts";

const doc = async () => json(await api("/api/openapi.json", { token: null }));

describe("OpenAPI document", () => {
  it("is served without a token, as OpenAPI 3.1 with the bearer scheme applied", async () => {
    const d = await doc();
    expect(d.openapi).toBe("3.1.0");
    expect(d.components.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer" });
    expect(d.security).toEqual([{ bearer: [] }]);
    expect(d.paths["/api/health"].get.security).toEqual([]);
    expect(d.paths["/api/vms/{id}/reset_state"].post.security).toEqual([{ bearer: [] }]);
    expect(d.paths["/agent/connect"].get.security).toEqual([{ nodeCredential: [] }]);
    expect(d.paths["/agent/poll"].post.security).toEqual([{ nodeCredential: [] }]);
    expect(
      d.paths["/agent/send"].post.requestBody.content["application/json"].schema.properties.messages.maxItems,
    ).toBe(64);
  });

  it("lists every route the app mounts, and nothing it does not", async () => {
    const d = await doc();
    const mounted = new Set(
      app.routes
        // The soak's debug route is no part of the API: a 404 unless a local soak run turns it on.
        .filter((r) => r.method !== "ALL" && r.path !== "/api/debug/counts")
        .map((r) => `${r.method.toLowerCase()} ${openApiPath(r.path)}`),
    );
    const documented = new Set(
      Object.entries(d.paths as Record<string, object>).flatMap(([path, ops]) =>
        Object.keys(ops).map((m) => `${m} ${path}`),
      ),
    );
    expect(mounted.size).toBe(42);
    expect([...mounted].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((r) => !mounted.has(r))).toEqual([]);
  });

  it("every operation has responses, path parameters for its {params}, and the auth errors its role implies", async () => {
    const d = await doc();
    for (const [path, ops] of Object.entries(d.paths as Record<string, Record<string, any>>)) {
      for (const [method, op] of Object.entries(ops)) {
        const where = `${method} ${path}`;
        expect(Object.keys(op.responses).length, where).toBeGreaterThan(0);
        for (const name of path.match(/\{(\w+)\}/g) ?? []) {
          expect(
            op.parameters.some((p: any) => p.in === "path" && `{${p.name}}` === name && p.required),
            `${where} ${name}`,
          ).toBe(true);
        }
        if (op.security.length && op.security[0].bearer) expect(op.responses["401"], where).toBeDefined();
        if (op["x-required-role"] === "operator" || op["x-required-role"] === "admin")
          expect(op.responses["403"], where).toBeDefined();
      }
    }
  });

  it("parameters and bodies come from the validators the routes use", async () => {
    const d = await doc();
    const list = d.paths["/api/vms"].get.parameters;
    expect(list.map((p: any) => p.name).sort()).toEqual(["cursor", "limit", "node_id", "q", "state"]);
    expect(list.find((p: any) => p.name === "state").schema.enum).toContain("STOPPING");
    expect(list.find((p: any) => p.name === "limit").schema.pattern).toBeDefined();
    const reset = d.paths["/api/vms/{id}/reset_state"].post;
    expect(reset.requestBody.required).toBe(false);
    expect(reset.requestBody.content["application/json"].schema.properties.reason).toMatchObject({
      type: "string",
      maxLength: 500,
    });
    expect(reset.parameters.find((p: any) => p.name === "force").schema.enum).toContain("true");
    expect(reset.responses["200"].content["application/json"].schema.properties.source.enum).toEqual([
      "hypervisor",
      "forced",
    ]);
    const node = d.paths["/api/nodes"].post.requestBody.content["application/json"].schema;
    expect(node).toMatchObject({
      type: "object",
      required: ["name"],
      properties: { name: { type: "string", maxLength: 64 } },
    });
    expect(d.paths["/api/vms/{id}/logs"].get.parameters.find((p: any) => p.name === "lines").description).toContain(
      "1 to 10000",
    );
    expect(
      d.paths["/api/vms/{id}"].get.responses["200"].content["application/json"].schema.properties.vm.properties,
    ).toHaveProperty("flag");
    expect(
      d.paths["/api/vms/{id}/events"].get.responses["200"].content["application/json"].schema.properties.events.items
        .properties,
    ).toHaveProperty("logExcerpt");
  });
});
