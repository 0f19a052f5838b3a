// Authentication for /api/* (bearer tokens, or Cloudflare Access sign-in) and the credentials we
// issue: API tokens (qxa_), join tokens (qxj_) and node credentials (qxn_). Only SHA-256 hashes of
// them are ever stored.
import { createMiddleware } from "hono/factory";
import { and, eq, isNull } from "drizzle-orm";
import { FOLLOW_SUBPROTOCOL, FOLLOW_TOKEN_PREFIX, roleRank, type Role } from "../protocol/api.ts";
import type { AppEnv, Principal } from "./app-env.ts";
import { accessAssertion, accessPrincipal, refuseCrossSite } from "./access/sign-in.ts";
import { ApiError } from "./errors.ts";
import { database } from "./db/client.ts";
import { apiTokens } from "./db/schema.ts";

export const TOKEN_PREFIX = { api: "qxa_", join: "qxj_", node: "qxn_" } as const;

const base64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");

/** 32 random bytes: `<prefix><43 base64url chars>`. */
export function newSecret(kind: keyof typeof TOKEN_PREFIX): string {
  return TOKEN_PREFIX[kind] + base64url(crypto.getRandomValues(new Uint8Array(32)));
}

export function newId(): string {
  return crypto.randomUUID();
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

export async function hashSecret(secret: string): Promise<string> {
  let hex = "";
  for (const b of await sha256(secret)) hex += HEX[b];
  return hex;
}

/** Compares digests so neither length nor content of ADMIN_TOKEN leaks through timing. */
async function sameSecret(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([sha256(given), sha256(expected)]);
  return crypto.subtle.timingSafeEqual(a, b);
}

export function bearer(header: string | undefined): string | null {
  const m = header?.match(/^Bearer\s+(\S{1,512})\s*$/i);
  return m ? m[1] : null;
}

// Token -> principal, per isolate, for one second: without it every API call pays a D1 round trip
// (and a SHA-256) before doing its own work, which halves the throughput of cheap reads such as
// `GET /api/vms/:id`. Keyed by the token as the request carried it, held in this isolate's memory
// only and never longer than a second. A revoked token must stop working everywhere within a second:
// revocation evicts its entries in this isolate at once (by hash, all that is stored of a token), and
// no other isolate trusts its copy longer than this.
export const TOKEN_CACHE_MS = 1_000;
// Bound: at most this many tokens; the cache is emptied when full (entries live a second anyway).
// Requests with the same token while it is looked up share that lookup: under load, a second's
// entry running out would otherwise send every request in flight to hash the token and read D1.
const TOKEN_CACHE_MAX = 1_000;
type CachedToken = { lookup: Promise<Principal | null>; hash: string | null; until: number };
const tokenCache = new Map<string, CachedToken>();

/** Entries in this isolate's token cache (the debug counts of a local soak run). */
export const tokenCacheSize = (): number => tokenCache.size;

export function forgetTokenHash(hash: string): void {
  for (const [token, entry] of tokenCache) if (entry.hash === hash) tokenCache.delete(token);
}

/** The principal a bearer token stands for, or null. */
export async function principalOf(env: Env, token: string): Promise<Principal | null> {
  // API tokens first (the common case, usually a cache hit); ADMIN_TOKEN is compared otherwise.
  // A node credential or join token is never a principal of /api/*.
  if (token.startsWith(TOKEN_PREFIX.api)) {
    const principal = await apiTokenPrincipal(env, token);
    if (principal) return principal;
  }
  if (env.ADMIN_TOKEN && (await sameSecret(token, env.ADMIN_TOKEN))) {
    return { id: "admin", name: "admin", role: "admin", actor: "admin", via: "token" };
  }
  return null;
}

async function apiTokenPrincipal(env: Env, token: string): Promise<Principal | null> {
  const now = Date.now();
  const cached = tokenCache.get(token);
  if (cached && cached.until > now) return cached.lookup;
  if (tokenCache.size >= TOKEN_CACHE_MAX) tokenCache.clear();
  const entry: CachedToken = { lookup: Promise.resolve(null), hash: null, until: now + TOKEN_CACHE_MS };
  entry.lookup = lookUpToken(env, token, entry);
  tokenCache.set(token, entry);
  // An unknown token is not kept (one created a moment later works at once), nor a failed lookup.
  const forget = () => tokenCache.get(token) === entry && tokenCache.delete(token);
  const principal = await entry.lookup.catch((err: unknown) => {
    forget();
    throw err;
  });
  if (!principal) forget();
  return principal;
}

async function lookUpToken(env: Env, token: string, entry: CachedToken): Promise<Principal | null> {
  const hash = await hashSecret(token);
  entry.hash = hash; // from now on a revocation in this isolate evicts the entry
  const row = await database(env.DB)
    .select({ id: apiTokens.id, name: apiTokens.name, role: apiTokens.role })
    .from(apiTokens)
    .where(and(eq(apiTokens.tokenHash, hash), isNull(apiTokens.revokedAt)))
    .get();
  if (!row) return null;
  return { id: row.id, name: row.name, role: row.role as Role, actor: `token:${row.name}`, via: "token" };
}

/** A browser WebSocket cannot carry an Authorization header and a token never goes in a URL: the
 *  live-follow socket offers `[FOLLOW_SUBPROTOCOL, "bearer.<token>"]` instead. Read only on upgrades
 *  that offer our subprotocol. */
export function subprotocolToken(req: { header(name: string): string | undefined }): string | null {
  if (req.header("upgrade")?.toLowerCase() !== "websocket") return null;
  const offered = (req.header("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
  if (!offered.includes(FOLLOW_SUBPROTOCOL)) return null;
  const entry = offered.find((p) => p.startsWith(FOLLOW_TOKEN_PREFIX));
  const token = entry?.slice(FOLLOW_TOKEN_PREFIX.length);
  return token && token.length <= 512 ? token : null;
}

/** Every /api route but health: 401 without a valid API token or, when Cloudflare Access sign-in
 *  is on, a valid Access assertion. A bearer token wins over an assertion (Access adds one to every
 *  request it lets through, also to those of a CLI with its own token). */
export const authenticate = createMiddleware<AppEnv>(async (c, next) => {
  const token = bearer(c.req.header("authorization")) ?? subprotocolToken(c.req);
  if (token) {
    const principal = await principalOf(c.env, token);
    if (!principal) throw new ApiError(401, "unauthorized", "invalid or revoked token");
    c.set("principal", principal);
    return next();
  }
  const assertion = accessAssertion(c);
  if (!assertion) throw new ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)");
  c.set("principal", await accessPrincipal(c.env, assertion));
  refuseCrossSite(c);
  await next();
});

/** 403 unless the caller's role is at least `role`. */
export const requireRole = (role: Role) =>
  createMiddleware<AppEnv>(async (c, next) => {
    const have = c.get("principal").role;
    if (roleRank[have] < roleRank[role])
      throw new ApiError(403, "forbidden", `this needs the ${role} role; your token is ${have}`);
    await next();
  });
