// The install door: the installer, the agent bundle and its manifest served without sign-in from the
// Worker's assets (built by `npm run build`), and the one-line install command create and rotate answer.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { InstallManifest } from "../../protocol/install.ts";
import { ADMIN, api, BASE, createNode, expectError, json } from "./support.ts";

const hex = (buf: ArrayBuffer) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");

describe("install door", () => {
  it("serves install.sh without sign-in, with the URL it was fetched from filled in", async () => {
    for (const origin of [BASE, "https://edge.example.com"]) {
      const res = await SELF.fetch(`${origin}/install.sh`);
      const text = await res.text();
      expect(res.status, text).toBe(200);
      expect(res.headers.get("content-type")).toContain("text/x-shellscript");
      expect(text.startsWith("#!/bin/sh\n")).toBe(true);
      expect(text).toContain(`\nSERVER='${origin}'\n`);
      expect(text).not.toContain("@QX_"); // every build-time and serve-time marker filled in
      expect(text).toContain("ExecStart=/usr/bin/node"); // the unit, inlined
    }
  });

  it("serves the manifest and an agent bundle whose SHA-256 and size match it", async () => {
    const manifest = InstallManifest.parse(await json(await SELF.fetch(`${BASE}/install/manifest.json`)));
    const res = await SELF.fetch(`${BASE}/install/quantix-agent.mjs`);
    expect(res.status).toBe(200);
    const bytes = await res.arrayBuffer();
    expect(bytes.byteLength).toBe(manifest.size);
    expect(hex(await crypto.subtle.digest("SHA-256", bytes))).toBe(manifest.sha256);
    expect(new TextDecoder().decode(bytes.slice(0, 24))).toMatch(/^#!\/usr\/bin\/env -S node/);
  });

  it("carries no secret: no token of any kind in the script or the manifest", async () => {
    const { joinToken } = await createNode();
    const texts = [
      await (await SELF.fetch(`${BASE}/install.sh`)).text(),
      await (await SELF.fetch(`${BASE}/install/manifest.json`)).text(),
    ];
    for (const text of texts) {
      expect(text).not.toMatch(/qx[ajn]_[A-Za-z0-9_-]{20,}/);
      expect(text).not.toContain(ADMIN);
      expect(text).not.toContain(joinToken);
    }
  });

  it("answers a JSON 404 for an install file that does not exist, never the dashboard page", async () => {
    await expectError(await SELF.fetch(`${BASE}/install/passwd`), 404, "not_found");
    await expectError(await SELF.fetch(`${BASE}/install/..%2Fwrangler.toml`), 404);
  });

  it("POST /api/nodes and rotate_token answer the install command for the request's own origin", async () => {
    const created = await createNode();
    expect((created as { installCommand?: string }).installCommand).toBe(
      `curl -fsSL ${BASE}/install.sh | sh -s -- --token ${created.joinToken}`,
    );
    const res = await SELF.fetch(`https://edge.example.com/api/nodes/${created.node.id}/rotate_token`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    const rotated = await json<{ joinToken: string; installCommand: string }>(res);
    expect(rotated.joinToken).not.toBe(created.joinToken);
    expect(rotated.installCommand).toBe(
      `curl -fsSL https://edge.example.com/install.sh | sh -s -- --token ${rotated.joinToken}`,
    );
    // Listing and showing nodes never repeat it: the join token is shown once.
    expect(JSON.stringify(await json(await api(`/api/nodes/${created.node.id}`)))).not.toContain("installCommand");
  });
});
