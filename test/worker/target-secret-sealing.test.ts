// Webhook target secrets sealed at rest, inside workerd: the row D1 keeps holds neither the secret nor
// anything that opens without the Worker's key; a sealed secret opens only for its own target and key;
// SECRETS_KEYS is read strictly (a malformed entry is named, never guessed at).
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  DERIVED_KEY_ID,
  newKeyEntry,
  openSecret,
  parseKeyring,
  sealSecret,
  secretKeys,
  SecretUnreadable,
} from "../../worker/notifications/secret-box.ts";
import { api, json } from "./support.ts";

const SECRET = "hook secret — ✓ 7c1d";

describe("target secrets at rest", () => {
  it("D1 keeps the secret sealed under the Worker's first key (derived from ADMIN_TOKEN without SECRETS_KEYS)", async () => {
    const { target } = await json<{ target: { id: string } }>(
      await api("/api/notifications/targets", {
        json: { name: "sealed", url: "https://hooks.example.com/x", secret: SECRET, events: ["node.offline"] },
      }),
      201,
    );
    const row = await env.DB.prepare("SELECT * FROM notification_targets WHERE id = ?")
      .bind(target.id)
      .first<{ secret: string; secret_key_id: string }>();
    expect(JSON.stringify(row)).not.toContain(SECRET);
    const keys = await secretKeys(env);
    expect(row!.secret_key_id).toBe(env.SECRETS_KEYS ? keys[0].id : DERIVED_KEY_ID);
    expect(await openSecret(keys, target.id, { secret: row!.secret, secretKeyId: row!.secret_key_id })).toBe(SECRET);
  });

  it("a sealed secret opens only for its own target, with its own key; tampering is caught", async () => {
    const keys = await parseKeyring(`${newKeyEntry("new")},${newKeyEntry("old")}`);
    const sealed = await sealSecret(keys, "target-a", SECRET);
    expect(sealed.secretKeyId).toBe("new"); // the first key seals
    expect(await openSecret(keys, "target-a", sealed)).toBe(SECRET);
    await expect(openSecret(keys, "target-b", sealed)).rejects.toBeInstanceOf(SecretUnreadable);
    await expect(openSecret(keys.slice(1), "target-a", sealed)).rejects.toThrow(/key "new", not in SECRETS_KEYS/);
    const flipped = sealed.secret[5] === "A" ? "B" : "A";
    const tampered = { ...sealed, secret: sealed.secret.slice(0, 5) + flipped + sealed.secret.slice(6) };
    await expect(openSecret(keys, "target-a", tampered)).rejects.toBeInstanceOf(SecretUnreadable);
    // Every listed key opens: the old one still opens what it sealed.
    const byOld = await sealSecret(keys.slice(1), "target-a", SECRET);
    expect(await openSecret(keys, "target-a", byOld)).toBe(SECRET);
    // A row from before sealing holds the secret as given.
    expect(await openSecret(keys, "target-a", { secret: "plain", secretKeyId: null })).toBe("plain");
  });

  it("a malformed SECRETS_KEYS entry is refused, naming it", async () => {
    for (const bad of ["k1", "k1:c2hvcnQ=", "bad id:" + "A".repeat(44), `k1:${"A".repeat(43)}=:x`])
      await expect(parseKeyring(bad)).rejects.toThrow(/SECRETS_KEYS: ".*" is not <id>:<base64 of 32 bytes>/);
  });
});
