// Webhook target secrets at rest, with the real control plane (wrangler dev, local D1): what D1 keeps
// of a target holds no secret in clear text (every file of the local database is searched), yet
// deliveries still carry the HMAC the receiver checks; `npm run rotate-secrets-key` seals every
// secret again under a new key (one kept from before sealing too) and old targets keep working.
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebhookReceiver } from "../../scripts/webhook-receiver.ts";
import { newKeyEntry } from "../../worker/notifications/secret-box.ts";
import { ControlPlane, freePort } from "../support/control-plane.ts";
import { json } from "./journey.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const run = promisify(execFile);

const receiver = new WebhookReceiver("hook secret ✓ 9f2c1e77a0b4");
const legacy = new WebhookReceiver("secret kept from before sealing 5d31");
let cp: ControlPlane;
let dir: string;
let devVars: string;

/** Every byte under the local D1's directory (database files and their journals). */
function storedBytes(root: string): Buffer {
  const parts: Buffer[] = [];
  const walk = (path: string) => {
    if (statSync(path).isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
    else parts.push(readFileSync(path));
  };
  walk(root);
  return Buffer.concat(parts);
}

async function d1(command: string): Promise<Record<string, unknown>[]> {
  const { stdout } = await run(
    process.execPath,
    [
      join(ROOT, "node_modules/wrangler/bin/wrangler.js"),
      "d1",
      "execute",
      "DB",
      "--local",
      "--persist-to",
      cp.persistDir,
      "--json",
      "--command",
      command,
    ],
    { cwd: ROOT, env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false" } },
  );
  return (JSON.parse(stdout) as { results: Record<string, unknown>[] }[])[0].results;
}

async function addTarget(name: string, r: WebhookReceiver): Promise<string> {
  const res = await cp.api("/api/notifications/targets", {
    method: "POST",
    json: { name, url: r.url, secret: r.secret, events: ["node.offline"] },
  });
  expect(res.status).toBe(201);
  return (await json<{ target: { id: string } }>(res)).target.id;
}

/** The test button: one delivery now; it must reach the receiver with a signature that verifies. */
async function deliversSigned(targetId: string, r: WebhookReceiver) {
  const before = r.received.length;
  const { delivery } = await json<{ delivery: { status: string; attempts: { error: string | null }[] } }>(
    await cp.api(`/api/notifications/targets/${targetId}/test`, { method: "POST" }),
  );
  expect(delivery.status, JSON.stringify(delivery.attempts)).toBe("delivered");
  expect(r.received.slice(before).map((d) => d.signatureOk)).toEqual([true]);
}

const keyIdOf = async (id: string) =>
  (await d1(`SELECT secret_key_id AS k FROM notification_targets WHERE id = '${id}'`))[0].k;

beforeAll(async () => {
  await receiver.up(await freePort());
  await legacy.up(await freePort());
  dir = mkdtempSync(join(tmpdir(), "qx-secrets-"));
  devVars = join(dir, ".dev.vars");
  const keys = newKeyEntry("k1");
  writeFileSync(devVars, `SECRETS_KEYS=${keys}\n`, { mode: 0o600 });
  cp = await ControlPlane.start({ vars: { SECRETS_KEYS: keys } });
}, 120_000);

afterAll(async () => {
  await cp?.dispose();
  await receiver.down();
  await legacy.down();
  rmSync(dir, { recursive: true, force: true });
});

describe("webhook target secrets at rest", () => {
  let target: string;
  let kept: string;

  it("D1 holds no secret in clear text, and deliveries still verify with the receiver's HMAC", async () => {
    target = await addTarget("sealed", receiver);
    const [row] = await d1(`SELECT secret, secret_key_id AS k FROM notification_targets WHERE id = '${target}'`);
    expect(row.k).toBe("k1");
    expect(row.secret).not.toContain(receiver.secret);
    await deliversSigned(target, receiver);
    // The whole local database, journals included: neither the secret nor its bytes as stored in UTF-8.
    expect(storedBytes(cp.persistDir).includes(Buffer.from(receiver.secret))).toBe(false);
  });

  it("a target kept as given before sealing still signs, and is sealed by the rotation", async () => {
    kept = crypto.randomUUID();
    await d1(
      "INSERT INTO notification_targets (id, name, url, secret, events, format, created_by, created_at) VALUES " +
        `('${kept}', 'from before', '${legacy.url}', '${legacy.secret}', '["node.offline"]', 'json', 'admin', ${Date.now()})`,
    );
    await deliversSigned(kept, legacy);
  });

  it("rotate-secrets-key seals every secret again under a new key; old targets keep working", async () => {
    const { stdout } = await run(
      process.execPath,
      [join(ROOT, "scripts/rotate-secrets-key.ts"), "--persist-to", cp.persistDir, "--dev-vars", devVars],
      { cwd: ROOT, env: { ...process.env, CI: "true" } },
    );
    expect(stdout).toContain("re-sealed 2 target secret(s)");
    const keys = readFileSync(devVars, "utf8").match(/^SECRETS_KEYS=(.*)$/m)![1];
    const newId = keys.split(":")[0];
    expect(keys.split(",")).toHaveLength(1); // the old key is dropped
    expect(newId).not.toBe("k1");
    expect(await keyIdOf(target)).toBe(newId);
    expect(await keyIdOf(kept)).toBe(newId);

    await cp.restart({ SECRETS_KEYS: keys });
    await deliversSigned(target, receiver);
    await deliversSigned(kept, legacy);
    const fresh = await addTarget("after rotation", receiver);
    expect(await keyIdOf(fresh)).toBe(newId);
    await deliversSigned(fresh, receiver);
    expect(storedBytes(cp.persistDir).includes(Buffer.from(receiver.secret))).toBe(false);
    // The one written in clear before sealing is gone from every row, so from any export of D1 (the
    // database file's free pages may still hold its old bytes until SQLite reuses them).
    const dump = JSON.stringify(await d1("SELECT * FROM notification_targets"));
    expect(dump).not.toContain(legacy.secret);
    expect(dump).not.toContain(receiver.secret);
  });
});
