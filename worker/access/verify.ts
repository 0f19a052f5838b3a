// Verifies a Cloudflare Access assertion (an RS256 JWT) against the team's published keys with
// `jose`, and says in words why one is refused.
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose";
import type { AccessSettings } from "./settings.ts";

/** Access's own assertions are about 1 KiB; anything far larger is not one. */
export const MAX_ASSERTION_CHARS = 8192;
/** Clock difference tolerated on `exp` / `nbf` between Access and this Worker. */
export const CLOCK_LEEWAY_SECONDS = 30;

/** header.payload.signature in base64url: anything else is refused before any parsing. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export type AccessIdentity = { email: string | null; commonName: string | null; groups: string[] };

/** A refused assertion: 401 with `message`; `keysUnavailable` means the team's keys could not be read (503). */
export class AccessRejected extends Error {
  readonly reason: string;
  readonly keysUnavailable: boolean;
  constructor(reason: string, message: string, keysUnavailable = false) {
    super(message);
    this.reason = reason;
    this.keysUnavailable = keysUnavailable;
  }
}

// One key set per certs URL and isolate: jose caches the keys (10 minutes) and fetches again on an
// unknown `kid` only after the cooldown since its last fetch.
// Bound: one entry per (certs URL, refetch) pair of the configuration, which an isolate reads once.
const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();

/** Key sets held by this isolate (the debug counts of a local soak run). */
export const keySetsSize = (): number => keySets.size;

function keySet(settings: AccessSettings) {
  const key = `${settings.certsUrl} ${settings.keysRefetchMs}`;
  let set = keySets.get(key);
  if (!set) {
    set = createRemoteJWKSet(new URL(settings.certsUrl), {
      cooldownDuration: settings.keysRefetchMs,
      cacheMaxAge: 10 * 60_000,
      timeoutDuration: 5_000,
    });
    keySets.set(key, set);
  }
  return set;
}

function groupNames(claim: unknown): string[] {
  if (!Array.isArray(claim)) return [];
  return claim.flatMap((g): string[] => {
    if (typeof g === "string") return [g];
    if (g && typeof g === "object")
      return ["name", "email", "id"]
        .map((k) => (g as Record<string, unknown>)[k])
        .filter((v): v is string => typeof v === "string");
    return [];
  });
}

function identityOf(payload: JWTPayload): AccessIdentity {
  const email = typeof payload.email === "string" && payload.email.includes("@") ? payload.email.toLowerCase() : null;
  // Service tokens carry the token's client id instead of an email.
  const commonName = typeof payload.common_name === "string" && payload.common_name ? payload.common_name : null;
  if (!email && !commonName)
    throw new AccessRejected("no_identity", "the Access assertion names no email and no service token");
  return { email, commonName, groups: groupNames(payload.groups) };
}

/** The identity in a valid assertion; throws AccessRejected for anything else. */
export async function verifyAccessAssertion(settings: AccessSettings, assertion: string): Promise<AccessIdentity> {
  if (assertion.length > MAX_ASSERTION_CHARS)
    throw new AccessRejected("too_large", `the Access assertion is over ${MAX_ASSERTION_CHARS} characters`);
  if (!COMPACT_JWS.test(assertion))
    throw new AccessRejected("malformed", "the Access assertion is not a well-formed signed JWT");
  const keys = keySet(settings);
  // Failures of the key set itself (unreachable, not a key set) are ours, not the caller's.
  const teamKey: JWTVerifyGetKey = async (header, token) => {
    try {
      return await keys(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      console.warn(`Access keys from ${settings.certsUrl} could not be read: ${(err as Error).message}`);
      throw new AccessRejected("keys_unavailable", "the team's Access keys could not be read; try again shortly", true);
    }
  };
  try {
    const { payload } = await jwtVerify(assertion, teamKey, {
      algorithms: ["RS256"],
      audience: settings.audience,
      issuer: settings.issuer,
      clockTolerance: CLOCK_LEEWAY_SECONDS,
      requiredClaims: ["exp"],
    });
    return identityOf(payload);
  } catch (err) {
    throw rejection(err);
  }
}

function rejection(err: unknown): AccessRejected {
  if (err instanceof AccessRejected) return err;
  if (err instanceof errors.JWTExpired)
    return new AccessRejected("expired", "the Access assertion has expired; reload the page to sign in again");
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === "aud")
      return new AccessRejected("wrong_audience", "the Access assertion is for another application (wrong audience)");
    if (err.claim === "iss")
      return new AccessRejected("wrong_issuer", "the Access assertion was issued by another team (wrong issuer)");
    if (err.claim === "nbf")
      return new AccessRejected("not_yet_valid", "the Access assertion is not valid yet (nbf in the future)");
    return new AccessRejected("invalid_claims", `the Access assertion's ${err.claim} claim is invalid: ${err.reason}`);
  }
  if (err instanceof errors.JOSEAlgNotAllowed)
    return new AccessRejected("wrong_algorithm", "the Access assertion is not signed with RS256");
  if (err instanceof errors.JWKSNoMatchingKey)
    return new AccessRejected(
      "unknown_key",
      "the Access assertion is signed with a key the team does not publish (unknown key)",
    );
  if (err instanceof errors.JWKSMultipleMatchingKeys)
    return new AccessRejected("unknown_key", "the Access assertion names no single key of the team");
  if (err instanceof errors.JWSSignatureVerificationFailed)
    return new AccessRejected("bad_signature", "the Access assertion's signature does not verify (bad signature)");
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid || err instanceof errors.JOSENotSupported) {
    return new AccessRejected("malformed", "the Access assertion is not a well-formed signed JWT");
  }
  if (err instanceof errors.JOSEError)
    return new AccessRejected("invalid", `the Access assertion was refused: ${err.message}`);
  // jose's own checks of the input throw TypeErrors for bytes that decode to nonsense.
  return new AccessRejected("malformed", "the Access assertion is not a well-formed signed JWT");
}
