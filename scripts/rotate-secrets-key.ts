// `npm run rotate-secrets-key`: a new key for the webhook target secrets kept sealed in D1
// (worker/notifications/secret-box.ts), every live target's secret opened with its old key and
// sealed again with the new one, and the old keys dropped.
//   npm run rotate-secrets-key                 local: the D1 of `npm start` and SECRETS_KEYS in .dev.vars
//                                              (stop npm start first, or restart it afterwards)
//   npm run rotate-secrets-key -- --remote     deployed: the current SECRETS_KEYS from the environment;
//                                              the new key is put with `wrangler secret put` before
//                                              anything is re-sealed, the old ones dropped after
//   --persist-to DIR, --dev-vars FILE          another local D1 directory / vars file (tests)
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  DERIVED_KEY_ID,
  newKeyEntry,
  openSecret,
  parseKeyring,
  SECRETS_KEYS_VAR,
  sealSecret,
  secretKeys,
  type SecretKey,
} from "../worker/notifications/secret-box.ts";
import { runOwned } from "./child-processes.ts";

const ROOT = resolve(import.meta.dirname, "..");
const WRANGLER = join(ROOT, "node_modules/wrangler/bin/wrangler.js");
const WRANGLER_ENV = { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false" };

const { values } = parseArgs({
  options: {
    remote: { type: "boolean", default: false },
    "persist-to": { type: "string", default: ".wrangler/state" },
    "dev-vars": { type: "string", default: ".dev.vars" },
  },
  allowPositionals: false,
});
const devVarsPath = resolve(ROOT, values["dev-vars"]);
const where = values.remote ? ["--remote"] : ["--local", "--persist-to", resolve(ROOT, values["persist-to"])];

const say = (line: string) => console.log(`[rotate-secrets-key] ${line}`);

/** A `NAME=value` line of .dev.vars (quotes around the value allowed). */
function devVar(text: string, name: string): string | undefined {
  return text.match(new RegExp(`^\\s*${name}\\s*=\\s*"?([^"\\r\\n]*)"?\\s*$`, "m"))?.[1];
}

function withDevVar(text: string, name: string, value: string): string {
  const line = `${name}=${value}`;
  const re = new RegExp(`^\\s*${name}\\s*=.*$`, "m");
  return re.test(text) ? text.replace(re, line) : `${text}${text === "" || text.endsWith("\n") ? "" : "\n"}${line}\n`;
}

/** The keyring in force now (its entries as text, for writing back) and its keys. */
async function currentKeys(): Promise<{ entries: string[]; keys: SecretKey[] }> {
  const source = values.remote
    ? process.env
    : Object.fromEntries(
        [SECRETS_KEYS_VAR, "ADMIN_TOKEN"].map((n) => [
          n,
          existsSync(devVarsPath) ? devVar(readFileSync(devVarsPath, "utf8"), n) : undefined,
        ]),
      );
  const keyring = source[SECRETS_KEYS_VAR]?.trim() ?? "";
  if (keyring)
    return {
      entries: keyring
        .split(",")
        .map((e) => e.trim())
        .filter(Boolean),
      keys: await parseKeyring(keyring),
    };
  // Sealed so far with the key derived from ADMIN_TOKEN (no SECRETS_KEYS yet): it opens the old rows.
  const keys = await secretKeys({ ADMIN_TOKEN: source.ADMIN_TOKEN });
  if (keys.length === 0 && values.remote)
    say(`no ${SECRETS_KEYS_VAR} or ADMIN_TOKEN in the environment: only secrets kept from before sealing can be read`);
  return { entries: [], keys };
}

async function d1(args: string[]): Promise<string> {
  try {
    return (
      await runOwned(process.execPath, [WRANGLER, "d1", "execute", "DB", ...where, ...args], {
        cwd: ROOT,
        env: WRANGLER_ENV,
      })
    ).stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`wrangler d1 execute failed:\n${e.stdout ?? ""}${e.stderr ?? ""}`);
  }
}

/** Sets the keyring where the control plane reads it: .dev.vars, or the deployed Worker's secret. */
async function putKeyring(entries: string[]): Promise<void> {
  const value = entries.join(",");
  if (!values.remote) {
    const text = existsSync(devVarsPath) ? readFileSync(devVarsPath, "utf8") : "";
    writeFileSync(devVarsPath, withDevVar(text, SECRETS_KEYS_VAR, value), { mode: 0o600 });
    return;
  }
  await new Promise<void>((ok, fail) => {
    // The value goes on stdin, never on a command line.
    const child = spawn(process.execPath, [WRANGLER, "secret", "put", SECRETS_KEYS_VAR], {
      cwd: ROOT,
      env: WRANGLER_ENV,
      stdio: ["pipe", "inherit", "inherit"],
    });
    child.stdin.end(value);
    child.once("exit", (code) => (code === 0 ? ok() : fail(new Error(`wrangler secret put exited ${code}`))));
  });
}

const sql = (v: string | null) => (v === null ? "NULL" : `'${v.replaceAll("'", "''")}'`);

async function main() {
  const old = await currentKeys();
  const entry = newKeyEntry(`k${Date.now().toString(36)}`);
  const [fresh] = await parseKeyring(entry);
  // 1. The new key first, the old ones still listed: whatever is sealed meanwhile opens.
  await putKeyring([entry, ...old.entries]);
  say(
    `new key ${fresh.id} put first in ${SECRETS_KEYS_VAR}${values.remote ? " (deployed Worker)" : ` (${values["dev-vars"]})`}`,
  );

  // 2. Every live target's secret, opened with the key that sealed it and sealed with the new one.
  const out = await d1([
    "--json",
    "--command",
    "SELECT id, secret, secret_key_id AS secretKeyId FROM notification_targets WHERE deleted_at IS NULL AND secret <> ''",
  ]);
  const rows = (JSON.parse(out) as { results: { id: string; secret: string; secretKeyId: string | null }[] }[])[0]
    .results;
  const updates: string[] = [];
  const unreadable: string[] = [];
  for (const row of rows) {
    try {
      const plain = await openSecret(old.keys, row.id, row);
      const sealed = await sealSecret([fresh], row.id, plain);
      updates.push(
        `UPDATE notification_targets SET secret = ${sql(sealed.secret)}, secret_key_id = ${sql(sealed.secretKeyId)} ` +
          `WHERE id = ${sql(row.id)} AND secret_key_id IS ${sql(row.secretKeyId)};`,
      );
    } catch (err) {
      unreadable.push(`${row.id}: ${(err as Error).message}`);
    }
  }
  if (updates.length) {
    const dir = mkdtempSync(join(tmpdir(), "qx-rotate-"));
    try {
      const file = join(dir, "reseal.sql");
      writeFileSync(file, `${updates.join("\n")}\n`, { mode: 0o600 });
      await d1(["--file", file]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  say(`re-sealed ${updates.length} target secret(s) with key ${fresh.id}`);

  // 3. The old keys go, unless a secret they sealed could not be re-sealed.
  if (unreadable.length) {
    say(`kept the old keys: ${unreadable.length} secret(s) could not be opened:\n  ${unreadable.join("\n  ")}`);
  } else {
    await putKeyring([entry]);
    const dropped = old.entries
      .map((e) => e.split(":")[0])
      .concat(old.entries.length ? [] : old.keys.length ? [DERIVED_KEY_ID] : []);
    say(dropped.length ? `dropped the old key(s): ${dropped.join(", ")}` : "no old key to drop");
  }
  if (!values.remote) say("restart npm start so the control plane uses the new key");
  if (unreadable.length) process.exitCode = 1;
}

await main();
