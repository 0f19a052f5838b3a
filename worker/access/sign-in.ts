// Who an Access-signed request is (the assertion header, else Access's cookie), and the guard that
// keeps other sites from acting with a signed-in browser's cookie.
import type { Context } from "hono";
import { getCookie } from "hono/cookie";
import type { AppEnv, Principal } from "../app-env.ts";
import { ApiError } from "../errors.ts";
import { accessRole, accessSettings } from "./settings.ts";
import { AccessRejected, verifyAccessAssertion } from "./verify.ts";

export const ACCESS_ASSERTION_HEADER = "cf-access-jwt-assertion";
export const ACCESS_COOKIE = "CF_Authorization";

/** The assertion of a request when Access sign-in is on: Access's header, else its cookie. */
export function accessAssertion(c: Context<AppEnv>): string | null {
  if (!accessSettings(c.env)) return null;
  return c.req.header(ACCESS_ASSERTION_HEADER)?.trim() || getCookie(c, ACCESS_COOKIE)?.trim() || null;
}

/** The principal behind a valid assertion: 401 saying why it is not one (503 if the keys are unreadable). */
export async function accessPrincipal(env: Env, assertion: string): Promise<Principal> {
  const settings = accessSettings(env)!;
  try {
    const identity = await verifyAccessAssertion(settings, assertion);
    const who = identity.email ?? identity.commonName!;
    const role = accessRole(settings, [who, ...identity.groups]);
    const actor = identity.email ? `user:${identity.email}` : `service:${identity.commonName}`;
    return {
      id: `access:${who}`,
      name: who,
      role,
      actor,
      via: "access",
      email: identity.email,
      roleNames: [who, ...identity.groups],
    };
  } catch (err) {
    if (!(err instanceof AccessRejected)) throw err;
    if (err.keysUnavailable) throw new ApiError(503, "access_keys_unavailable", err.message, { "retry-after": "10" });
    throw new ApiError(401, "unauthorized", `Cloudflare Access sign-in refused (${err.reason}): ${err.message}`);
  }
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const SAME_SITE_FETCH = new Set(["same-origin", "none"]);

/** Browsers send Access's cookie with requests other sites make, so a request that changes
 *  something (or opens a WebSocket, which reads logs) is refused when the browser says it comes
 *  from elsewhere. Clients that send neither header (CLI, scripts) are not browsers: not affected. */
export function refuseCrossSite(c: Context<AppEnv>): void {
  const upgrade = c.req.header("upgrade")?.toLowerCase() === "websocket";
  if (SAFE_METHODS.has(c.req.method) && !upgrade) return;
  const origin = c.req.header("origin");
  const site = c.req.header("sec-fetch-site")?.toLowerCase();
  const own = new URL(c.req.url).origin;
  if (origin !== undefined && origin !== own) {
    throw new ApiError(
      403,
      "cross_site",
      `refused: a request signed in through Access came from another origin (${origin.slice(0, 200)})`,
    );
  }
  if (site !== undefined && !SAME_SITE_FETCH.has(site)) {
    throw new ApiError(
      403,
      "cross_site",
      `refused: a request signed in through Access came from another site (Sec-Fetch-Site: ${site.slice(0, 40)})`,
    );
  }
}
