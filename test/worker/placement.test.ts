// A node's Durable Object is asked to start near its agent: the hint comes from where Cloudflare saw
// the agent's request arrive (request.cf), and an unknown place leaves the choice to the platform.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { locationHintFor } from "../../worker/session/placement.ts";
import { api, BASE, createNode, enroll, json } from "./support.ts";

describe("placement of a node's session", () => {
  it.each([
    ["Paris", { continent: "EU", country: "FR", longitude: "2.35" }, "weur"],
    ["Warsaw", { continent: "EU", country: "PL", longitude: "21.01" }, "eeur"],
    ["San Francisco", { continent: "NA", country: "US", longitude: "-122.42" }, "wnam"],
    ["New York", { continent: "NA", country: "US", longitude: "-74.01" }, "enam"],
    ["São Paulo", { continent: "SA", country: "BR", longitude: "-46.63" }, "sam"],
    ["Dubai", { continent: "AS", country: "AE", longitude: "55.27" }, "me"],
    ["Tokyo", { continent: "AS", country: "JP", longitude: "139.69" }, "apac"],
    ["Sydney", { continent: "OC", country: "AU", longitude: "151.21" }, "oc"],
    ["Lagos", { continent: "AF", country: "NG", longitude: "3.38" }, "afr"],
    ["Antarctica", { continent: "AN", country: "AQ" }, undefined],
    ["no cf at all", undefined, undefined],
    ["garbage", { continent: 7, longitude: "east" }, undefined],
  ])("%s -> %s", (_where, cf, hint) => {
    expect(locationHintFor(cf)).toBe(hint);
  });

  it("an agent whose request carries request.cf connects and is welcomed (the runtime takes the hint; where the object lands cannot be seen locally)", async () => {
    const { node, joinToken } = await createNode();
    const { credential } = await enroll(joinToken);
    const res = await SELF.fetch(`${BASE}/agent/connect`, {
      headers: { upgrade: "websocket", authorization: `Bearer ${credential}` },
      cf: { continent: "EU", country: "FR", longitude: "2.35" },
    });
    expect(res.status).toBe(101);
    const ws = res.webSocket!;
    ws.accept();
    const welcome = await new Promise<{ type: string; payload: { nodeId: string } }>((resolve) =>
      ws.addEventListener("message", (e) => resolve(JSON.parse(e.data as string))),
    );
    expect(welcome).toMatchObject({ type: "welcome", payload: { nodeId: node.id } });
    ws.close(1000, "done");
  });

  it("rotating and deleting a node that never connected both answer (its session is left alone, which locally shows only as no error)", async () => {
    const { node } = await createNode();
    const rotated = await json<{ joinToken: string }>(
      await api(`/api/nodes/${node.id}/rotate_token`, { method: "POST" }),
    );
    expect(rotated.joinToken).toBeTruthy();
    expect((await api(`/api/nodes/${node.id}`, { method: "DELETE" })).status).toBeLessThan(300);
    expect((await api(`/api/nodes/${node.id}`)).status).toBe(404);
  });
});
