// Cloudflare Access sign-in settings from wrangler vars: off unless both the team domain and the
// application's audience tag are set.
import type { Role } from "../../protocol/api.ts";

export type AccessSettings = {
  teamDomain: string;
  audience: string;
  issuer: string;
  certsUrl: string;
  /** the shortest time between two key-set fetches caused by an unknown `kid` */
  keysRefetchMs: number;
  admins: Set<string>;
  operators: Set<string>;
};

/** One minute between refetches on an unknown key: a flood of forged `kid`s costs one fetch a minute. */
export const ACCESS_KEYS_REFETCH_MS = 60_000;

const list = (v: string | undefined) =>
  new Set(
    (v ?? "")
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );

/** `https://acme.cloudflareaccess.com/` and `acme.cloudflareaccess.com` name the same team. */
const bareHost = (v: string) =>
  v
    .trim()
    .replace(/^https?:\/\//i, "")
    .replace(/\/+$/, "")
    .toLowerCase();

export function accessSettings(
  env: Partial<
    Pick<
      Env,
      | "ACCESS_TEAM_DOMAIN"
      | "ACCESS_AUD"
      | "ACCESS_CERTS_URL"
      | "ACCESS_ADMINS"
      | "ACCESS_OPERATORS"
      | "ACCESS_KEYS_REFETCH_MS"
    >
  >,
): AccessSettings | null {
  const teamDomain = bareHost(env.ACCESS_TEAM_DOMAIN ?? "");
  const audience = (env.ACCESS_AUD ?? "").trim();
  if (!teamDomain || !audience) return null;
  const refetch = Number(env.ACCESS_KEYS_REFETCH_MS);
  return {
    teamDomain,
    audience,
    issuer: `https://${teamDomain}`,
    certsUrl: env.ACCESS_CERTS_URL?.trim() || `https://${teamDomain}/cdn-cgi/access/certs`,
    keysRefetchMs: Number.isFinite(refetch) && refetch > 0 ? refetch : ACCESS_KEYS_REFETCH_MS,
    admins: list(env.ACCESS_ADMINS),
    operators: list(env.ACCESS_OPERATORS),
  };
}

/** The role of a verified identity: listed by email or by one of its groups, else viewer. */
export function accessRole(settings: AccessSettings, names: string[]): Role {
  const lower = names.map((n) => n.toLowerCase());
  if (lower.some((n) => settings.admins.has(n))) return "admin";
  if (lower.some((n) => settings.operators.has(n))) return "operator";
  return "viewer";
}
