// `npm run access-dev`, the local stand-in for a Cloudflare Access team, against the real control
// plane. Its printed .dev.vars lines sign people in, and running `keys` again rotates the signing key
// while keeping the audience, so the running control plane takes new assertions without any edit or
// restart and assertions signed before the rotation keep working. In front of the control plane it
// plays Access for service tokens: `qx` with a token's client id and secret (no bearer token) acts
// as `service:<client id>`, with the role the ACCESS_* lists give that id.
import { execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliError, runCli } from "../../cli/qx.ts";
import { spawnOwned } from "../../scripts/child-processes.ts";
import type { AgentProcess } from "../support/agent.ts";
import { ControlPlane, freePort } from "../support/control-plane.ts";
import { stopProcessGroup } from "../support/process-group.ts";
import { DEMO, enrollAgent, eventually, json } from "./journey.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const SCRIPT = join(ROOT, "scripts/access-dev.ts");

let dir: string;
let port: number;
let devVars: Record<string, string>;
let ci: { id: string; secret: string };
let serve: ChildProcess | null = null;
let cp: ControlPlane | null = null;
let agent: AgentProcess | null = null;

const env = () => ({ ...process.env, QX_ACCESS_DEV_DIR: dir });

async function accessDev(...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [SCRIPT, ...args], { cwd: ROOT, env: env() });
  return stdout;
}

/** The `NAME=value` lines the script prints. */
const printedVars = (stdout: string, prefix: string): Record<string, string> =>
  Object.fromEntries([...stdout.matchAll(new RegExp(`^(${prefix}[A-Z_]+)=(.*)$`, "gm"))].map((m) => [m[1], m[2]]));

async function serviceToken(name: string) {
  const printed = printedVars(await accessDev("service-token", "--name", name), "QX_ACCESS_");
  return { id: printed.QX_ACCESS_CLIENT_ID, secret: printed.QX_ACCESS_CLIENT_SECRET };
}

const kidOf = () => (JSON.parse(readFileSync(join(dir, "keys.json"), "utf8")) as { kid: string }).kid;

const me = (assertion: string) => fetch(`${cp!.url}/api/me`, { headers: { "cf-access-jwt-assertion": assertion } });

/** qx as a script behind Access runs it: the URL of Access's front, a service token, no bearer token. */
async function qx(token: { id: string; secret: string }, ...args: string[]) {
  const out: string[] = [];
  const code = await runCli(
    args,
    {
      QX_CONFIG: join(dir, "no-config.json"),
      QX_URL: `http://127.0.0.1:${port}`,
      QX_ACCESS_CLIENT_ID: token.id,
      QX_ACCESS_CLIENT_SECRET: token.secret,
    },
    { log: (l) => out.push(l), err: (l) => out.push(l) },
  );
  return { code, out: out.join("\n") };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "qx-access-dev-"));
  port = await freePort();
  devVars = printedVars(await accessDev("keys", "--port", String(port)), "ACCESS_");
  ci = await serviceToken("ci");
  // The service token's client id is listed like an email; a short refetch pause so the rotation
  // test need not wait the default minute.
  cp = await ControlPlane.start({
    vars: { ...devVars, ACCESS_OPERATORS: `${devVars.ACCESS_OPERATORS}, ${ci.id}`, ACCESS_KEYS_REFETCH_MS: "1000" },
  });
  serve = spawnOwned(process.execPath, [SCRIPT, "serve", "--port", String(port), "--upstream", cp.url], {
    cwd: ROOT,
    env: env(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  await new Promise<void>((ok, fail) => {
    serve!.stdout!.on("data", (d) => String(d).includes("serving") && ok());
    serve!.once("exit", (code) => fail(new Error(`access-dev serve exited ${code}`)));
  });
  ({ agent } = await enrollAgent(cp, "access-dev-node"));
}, 180_000);

afterAll(async () => {
  await agent?.dispose();
  if (serve) await stopProcessGroup(serve);
  await cp?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe("npm run access-dev", () => {
  it("keys prints working .dev.vars lines; keys again rotates the key only, no edit and no restart needed", async () => {
    expect(Object.keys(devVars)).toEqual([
      "ACCESS_TEAM_DOMAIN",
      "ACCESS_AUD",
      "ACCESS_CERTS_URL",
      "ACCESS_ADMINS",
      "ACCESS_OPERATORS",
    ]);
    const firstKid = kidOf();
    const before = (await accessDev("mint", "--email", "alice@acme.test")).trim();
    expect(await json(await me(before))).toMatchObject({ role: "admin", name: "alice@acme.test", via: "access" });

    const rotated = await accessDev("keys", "--port", String(port));
    expect(printedVars(rotated, "ACCESS_")).toEqual(devVars); // same audience: .dev.vars stays as it is
    expect(rotated).toContain("rotated the signing key");
    expect(kidOf()).not.toBe(firstKid);

    const after = (await accessDev("mint", "--email", "bob@acme.test")).trim();
    expect(JSON.parse(Buffer.from(after.split(".")[0], "base64url").toString()).kid).toBe(kidOf());
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

  it("qx with a service token: whoami names service:<client id>, a reset's event names it too", async () => {
    expect((await qx(ci, "whoami")).out).toBe(`service:${ci.id} (operator) via Cloudflare Access`);
    expect(await json(await cp!.api("/api/me"))).toMatchObject({ name: "admin" }); // bearer still works

    const reset = await qx(ci, "vms", "reset-state", DEMO.files01, "--reason", "service token check");
    expect(reset.code).toBe(0);
    expect(reset.out).toMatch(/^files-01: \w+ -> \w+ \(hypervisor\)/);
    const { events } = await json<{ events: { actor: string; action: string }[] }>(
      await cp!.api(`/api/vms/${DEMO.files01}/events`),
    );
    expect(events[0]).toMatchObject({ actor: `service:${ci.id}` });
  });

  it("a service token no list names is a viewer; a wrong secret is refused by Access", async () => {
    const other = await serviceToken("reporting");
    expect((await qx(other, "whoami")).out).toBe(`service:${other.id} (viewer) via Cloudflare Access`);
    await expect(qx(other, "vms", "reset-state", DEMO.files01)).rejects.toThrow(/^forbidden: .*operator/);
    const wrong = qx({ id: ci.id, secret: other.secret }, "whoami");
    await expect(wrong).rejects.toBeInstanceOf(CliError);
    await expect(wrong).rejects.toThrow(/access_denied: .*service token was refused/);
  });
});
