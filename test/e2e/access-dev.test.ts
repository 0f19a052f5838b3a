// `npm run access-dev`, the local stand-in for a Cloudflare Access team, against the real control
// plane: its printed .dev.vars lines sign people in, and running `keys` again rotates the signing
// key while keeping the audience, so the running control plane takes new assertions without any
// edit or restart and assertions signed before the rotation keep working.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane, freePort } from "../support/control-plane.ts";
import { stopProcessGroup } from "../support/process-group.ts";
import { eventually, json } from "./journey.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const SCRIPT = join(ROOT, "scripts/access-dev.ts");

let dir: string;
let port: number;
let serve: ChildProcess | null = null;
let cp: ControlPlane | null = null;

const env = () => ({ ...process.env, QX_ACCESS_DEV_DIR: dir });

async function accessDev(...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [SCRIPT, ...args], { cwd: ROOT, env: env() });
  return stdout;
}

/** The `NAME=value` lines `keys` prints for .dev.vars. */
function devVars(stdout: string): Record<string, string> {
  return Object.fromEntries([...stdout.matchAll(/^(ACCESS_[A-Z_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
}

const kidOf = () => (JSON.parse(readFileSync(join(dir, "keys.json"), "utf8")) as { kid: string }).kid;

const me = (assertion: string) => fetch(`${cp!.url}/api/me`, { headers: { "cf-access-jwt-assertion": assertion } });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "qx-access-dev-"));
  port = await freePort();
}, 30_000);

afterAll(async () => {
  if (serve) await stopProcessGroup(serve);
  await cp?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe("npm run access-dev", () => {
  it("keys prints working .dev.vars lines; keys again rotates the key only, no edit and no restart needed", async () => {
    const first = devVars(await accessDev("keys", "--port", String(port)));
    expect(Object.keys(first)).toEqual([
      "ACCESS_TEAM_DOMAIN",
      "ACCESS_AUD",
      "ACCESS_CERTS_URL",
      "ACCESS_ADMINS",
      "ACCESS_OPERATORS",
    ]);
    const firstKid = kidOf();

    serve = spawn(process.execPath, [SCRIPT, "serve", "--port", String(port)], {
      cwd: ROOT,
      env: env(),
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    await new Promise<void>((ok, fail) => {
      serve!.stdout!.on("data", (d) => String(d).includes("serving") && ok());
      serve!.once("exit", (code) => fail(new Error(`access-dev serve exited ${code}`)));
    });
    // A short refetch pause so the rotation need not wait the default minute.
    cp = await ControlPlane.start({ vars: { ...first, ACCESS_KEYS_REFETCH_MS: "1000" } });

    const before = (await accessDev("mint", "--email", "alice@acme.test")).trim();
    expect(await json(await me(before))).toMatchObject({ role: "admin", name: "alice@acme.test", via: "access" });

    const rotated = await accessDev("keys", "--port", String(port));
    expect(devVars(rotated)).toEqual(first); // same audience: .dev.vars stays as it is
    expect(rotated).toContain("rotated the signing key");
    expect(kidOf()).not.toBe(firstKid);

    const after = (await accessDev("mint", "--email", "bob@acme.test")).trim();
    expect(JSON.parse(Buffer.from(after.split(".")[0]!, "base64url").toString()).kid).toBe(kidOf());
    // The same control plane, not restarted: the new key is fetched when an assertion first names it.
    await eventually(
      "an assertion signed with the new key to be accepted",
      async () => (await me(after)).status === 200,
      30_000,
      500,
    );
    expect(await json(await me(after))).toMatchObject({ role: "operator", name: "bob@acme.test" });
    // Signed before the rotation: still valid (the previous key stays published).
    expect((await me(before)).status).toBe(200);
  });
});
