// Webhook target secrets at rest: AES-256-GCM through WebCrypto, under a key held as a Worker secret
// (SECRETS_KEYS), so a copy of D1 holds no secret that signs. Each row keeps the id of the key that
// sealed it, so the key can rotate: the first key of SECRETS_KEYS seals, every listed key opens.
// Plain WebCrypto, so scripts/rotate-secrets-key.ts runs the same code in Node.

/** `SECRETS_KEYS`: `<id>:<base64 of 32 random bytes>`, comma-separated, the sealing key first. */
export const SECRETS_KEYS_VAR = "SECRETS_KEYS";
/** Without SECRETS_KEYS the key is derived from ADMIN_TOKEN (HKDF), under this id. */
export const DERIVED_KEY_ID = "admin-token";
const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;
const IV_BYTES = 12;

export type SecretKey = { id: string; key: CryptoKey };
export type SealedSecret = { secret: string; secretKeyId: string };

/** A secret that cannot be sealed or opened: no key, a malformed SECRETS_KEYS, the row's key not (or
 *  no longer) configured, or a sealed secret that was tampered with. */
export class SecretUnreadable extends Error {}

const toBase64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));
const fromBase64 = (text: string) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const aes = (raw: Uint8Array<ArrayBuffer>) =>
  crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);

/** A fresh `<id>:<key>` entry for SECRETS_KEYS. */
export function newKeyEntry(id: string): string {
  if (!KEY_ID.test(id)) throw new Error(`a key id is 1-32 letters, digits, - or _: ${JSON.stringify(id)}`);
  return `${id}:${toBase64(crypto.getRandomValues(new Uint8Array(32)))}`;
}

async function derivedKey(adminToken: string): Promise<SecretKey> {
  const base = await crypto.subtle.importKey("raw", new TextEncoder().encode(adminToken), "HKDF", false, ["deriveKey"]);
  const key = await crypto.subtle.deriveKey(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt: new Uint8Array(0),
      info: new TextEncoder().encode("quantix-edge webhook target secrets"),
    },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
  return { id: DERIVED_KEY_ID, key };
}

/** The keys in `keyring` (SECRETS_KEYS), sealing key first; a malformed entry is an error naming it. */
export async function parseKeyring(keyring: string): Promise<SecretKey[]> {
  const keys: SecretKey[] = [];
  for (const entry of keyring
    .split(",")
    .map((e) => e.trim())
    .filter(Boolean)) {
    const [id, b64, extra] = entry.split(":");
    let raw: Uint8Array<ArrayBuffer> | null = null;
    try {
      raw = b64 ? fromBase64(b64) : null;
    } catch {
      raw = null;
    }
    if (!id || !KEY_ID.test(id) || extra !== undefined || raw?.length !== 32)
      throw new SecretUnreadable(`${SECRETS_KEYS_VAR}: "${id ?? ""}:…" is not <id>:<base64 of 32 bytes>`);
    keys.push({ id, key: await aes(raw) });
  }
  return keys;
}

const cache = new Map<string, Promise<SecretKey[]>>();

/** The Worker's keys: SECRETS_KEYS, or else the one derived from ADMIN_TOKEN; parsed once per isolate. */
export function secretKeys(env: { SECRETS_KEYS?: string; ADMIN_TOKEN?: string }): Promise<SecretKey[]> {
  const keyring = env.SECRETS_KEYS?.trim() ?? "";
  const source = keyring ? `keys ${keyring}` : `admin ${env.ADMIN_TOKEN ?? ""}`;
  let keys = cache.get(source);
  if (!keys) {
    keys = keyring
      ? parseKeyring(keyring)
      : env.ADMIN_TOKEN
        ? derivedKey(env.ADMIN_TOKEN).then((k) => [k])
        : Promise.resolve([]);
    cache.clear(); // one configuration at a time
    cache.set(source, keys);
  }
  return keys;
}

/** Seals a target's secret with the first key, bound to the target's id (a sealed secret copied to
 *  another row does not open there). */
export async function sealSecret(keys: SecretKey[], targetId: string, plain: string): Promise<SealedSecret> {
  const sealing = keys[0];
  if (!sealing) throw new SecretUnreadable(`no key to seal with: set ${SECRETS_KEYS_VAR} (or ADMIN_TOKEN)`);
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(targetId) },
      sealing.key,
      new TextEncoder().encode(plain),
    ),
  );
  const out = new Uint8Array(IV_BYTES + sealed.length);
  out.set(iv);
  out.set(sealed, IV_BYTES);
  return { secret: toBase64(out), secretKeyId: sealing.id };
}

/** The secret of a row; a row without a key id predates sealing and holds it as given. */
export async function openSecret(
  keys: SecretKey[],
  targetId: string,
  row: { secret: string; secretKeyId: string | null },
): Promise<string> {
  if (row.secretKeyId === null) return row.secret;
  const key = keys.find((k) => k.id === row.secretKeyId);
  if (!key)
    throw new SecretUnreadable(
      `the target's secret is sealed with key "${row.secretKeyId}", not in ${SECRETS_KEYS_VAR}`,
    );
  try {
    const bytes = fromBase64(row.secret);
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: bytes.slice(0, IV_BYTES), additionalData: new TextEncoder().encode(targetId) },
      key.key,
      bytes.slice(IV_BYTES),
    );
    return new TextDecoder().decode(plain);
  } catch {
    throw new SecretUnreadable(`the target's secret does not open with key "${row.secretKeyId}"`);
  }
}
