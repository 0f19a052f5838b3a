// Try Cloudflare Access sign-in locally, without a Cloudflare account: a local team key set, a
// loopback server publishing it the way Access does, and assertions minted as Access signs them.
//   npm run access-dev -- keys                  key pair + audience in .state/access/ (git-ignored), prints .dev.vars lines;
//                                               run again, it rotates the key and keeps the audience
//   npm run access-dev -- serve [--port 8790] [--upstream http://127.0.0.1:8787]
//                                               publishes the keys at http://127.0.0.1:8790/cdn-cgi/access/certs and,
//                                               like Access in front of the app, passes every other request on to the
//                                               upstream, trading a service token's headers for an assertion
//   npm run access-dev -- mint --email alice@acme.test [--groups ops,dev] [--minutes 60]   prints an assertion
//   npm run access-dev -- service-token --name ci   a service token (client id + secret) for scripts and qx
// QX_ACCESS_DEV_DIR puts the key set somewhere else than .state/access/ (tests use their own).
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from "jose";

const DIR = resolve(process.env.QX_ACCESS_DEV_DIR || join(import.meta.dirname, "../.state/access"));
const KEYS = join(DIR, "keys.json");
const SERVICE_TOKENS = join(DIR, "service-tokens.json");
/** A made-up team: only this machine's control plane trusts it (through ACCESS_CERTS_URL). */
const TEAM_DOMAIN = "quantix-local.cloudflareaccess.com";

/** The signing key, the audience, and the key it replaced (still published, as Access publishes its
 *  previous key, so assertions signed before a rotation stay valid until they expire). */
type LocalTeam = { kid: string; audience: string; privateJwk: JWK; publicJwk: JWK; previousPublicJwk?: JWK };

const publishedKeys = (team: LocalTeam) => [
  team.publicJwk,
  ...(team.previousPublicJwk ? [team.previousPublicJwk] : []),
];

function load(): LocalTeam {
  if (!existsSync(KEYS)) {
    console.error("no local key set yet: run `npm run access-dev -- keys` first");
    process.exit(2);
  }
  return JSON.parse(readFileSync(KEYS, "utf8")) as LocalTeam;
}

/** A new signing key. The audience is the Access application's and a key rotation leaves it as it
 *  is, so .dev.vars and a running control plane need no change: it fetches the new key the first
 *  time an assertion names it. */
async function keys(port: number) {
  const previous = existsSync(KEYS) ? load() : null;
  const kid = `local-${Date.now().toString(36)}`;
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const team: LocalTeam = {
    kid,
    audience: previous?.audience ?? Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex"),
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg: "RS256" },
    publicJwk: { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" },
    ...(previous ? { previousPublicJwk: previous.publicJwk } : {}),
  };
  mkdirSync(DIR, { recursive: true, mode: 0o700 });
  writeFileSync(KEYS, JSON.stringify(team, null, 2), { mode: 0o600 });
  chmodSync(KEYS, 0o600);
  writeFileSync(join(DIR, "jwks.json"), JSON.stringify({ keys: publishedKeys(team) }, null, 2));
  console.log(`wrote ${KEYS} (private key, mode 0600) and ${join(DIR, "jwks.json")}`);
  if (previous) {
    console.log(
      `\nrotated the signing key (${previous.kid} -> ${kid}); the audience is unchanged, so .dev.vars and a running` +
        "\ncontrol plane need nothing: it fetches the new key the first time an assertion names it (at most once" +
        "\nper ACCESS_KEYS_REFETCH_MS). Assertions signed with the previous key stay valid until they expire.",
    );
    console.log("\nthe .dev.vars lines, unchanged:\n");
  } else {
    console.log("\nadd to .dev.vars, then restart npm start:\n");
  }
  console.log(`ACCESS_TEAM_DOMAIN=${TEAM_DOMAIN}`);
  console.log(`ACCESS_AUD=${team.audience}`);
  console.log(`ACCESS_CERTS_URL=http://127.0.0.1:${port}/cdn-cgi/access/certs`);
  console.log(`ACCESS_ADMINS=alice@acme.test`);
  console.log(`ACCESS_OPERATORS=bob@acme.test`);
}

/** A service token as Access keeps it: its client id and a hash of its secret. */
type ServiceToken = { name: string; clientId: string; secretSha256: string };

const sha256 = (text: string) => createHash("sha256").update(text).digest();

function serviceTokens(): ServiceToken[] {
  return existsSync(SERVICE_TOKENS) ? (JSON.parse(readFileSync(SERVICE_TOKENS, "utf8")) as ServiceToken[]) : [];
}

function newServiceToken(name: string) {
  load(); // a team first
  const clientId = `${randomBytes(16).toString("hex")}.access`;
  const secret = randomBytes(32).toString("hex");
  const tokens = [...serviceTokens(), { name, clientId, secretSha256: sha256(secret).toString("hex") }];
  writeFileSync(SERVICE_TOKENS, JSON.stringify(tokens, null, 2), { mode: 0o600 });
  console.log(`service token "${name}" (the secret is shown once). For qx or a script:\n`);
  console.log(`QX_ACCESS_CLIENT_ID=${clientId}`);
  console.log(`QX_ACCESS_CLIENT_SECRET=${secret}`);
  console.log(
    `\nIts assertions name it by its client id: give it a role by adding ${clientId} to ACCESS_OPERATORS` +
      "\nor ACCESS_ADMINS in .dev.vars (then restart npm start); otherwise it is a viewer. Send its requests" +
      "\nthrough serve's port, which plays Access in front of the control plane (--upstream).",
  );
}

/** The client id of a request's valid service-token headers; null without them; "refused" for wrong ones. */
function serviceTokenOf(req: IncomingMessage): string | null | "refused" {
  const id = req.headers["cf-access-client-id"];
  const secret = req.headers["cf-access-client-secret"];
  if (id === undefined && secret === undefined) return null;
  const token = serviceTokens().find((t) => t.clientId === id);
  if (!token || typeof secret !== "string") return "refused";
  return timingSafeEqual(sha256(secret), Buffer.from(token.secretSha256, "hex")) ? token.clientId : "refused";
}

/** An assertion signed with the team's current key, as Access signs them. */
async function assertion(claims: Record<string, unknown>, minutes: number): Promise<string> {
  const team = load();
  const key = await importJWK(team.privateJwk, "RS256");
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ...claims, type: "app", country: "XX" })
    .setProtectedHeader({ alg: "RS256", kid: team.kid })
    .setIssuer(`https://${TEAM_DOMAIN}`)
    .setAudience(team.audience)
    .setSubject(typeof claims.email === "string" ? crypto.randomUUID() : "")
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + minutes * 60)
    .sign(key);
}

function refuse(res: ServerResponse, status: number, code: string, message: string) {
  if (res.headersSent) return void res.destroy();
  res
    .writeHead(status, { "content-type": "application/json" })
    .end(JSON.stringify({ success: false, error: { code, message } }));
}

/** Access in front of the app: a request with a valid service token goes on with an assertion naming
 *  it (`common_name`, no email); one with a wrong token is refused here, as Access refuses it; any
 *  other goes on as it came (a browser brings its own cookie, a script its bearer token). */
async function passOn(upstream: URL, req: IncomingMessage, res: ServerResponse) {
  const service = serviceTokenOf(req);
  if (service === "refused")
    return refuse(res, 403, "access_denied", "Cloudflare Access (local): the service token was refused");
  const headers: IncomingHttpHeaders = { ...req.headers, host: upstream.host };
  delete headers["cf-access-client-id"];
  delete headers["cf-access-client-secret"];
  if (service) headers["cf-access-jwt-assertion"] = await assertion({ common_name: service }, 5);
  const out = request(new URL(req.url ?? "/", upstream), { method: req.method, headers }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  out.on("error", (err) => refuse(res, 502, "upstream_unreachable", `${upstream.origin}: ${err.message}`));
  req.pipe(out);
}

function serve(port: number, upstream: URL) {
  const server = createServer((req, res) => {
    if (req.url === "/cdn-cgi/access/certs") {
      const team = load(); // read each time: `keys` again rotates without a restart
      return void res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ keys: publishedKeys(team) }));
    }
    passOn(upstream, req, res).catch((err: Error) => refuse(res, 500, "access_dev_error", err.message));
  });
  server.listen(port, "127.0.0.1", () =>
    console.log(
      `serving the local team's keys at http://127.0.0.1:${port}/cdn-cgi/access/certs, and Access in front of ` +
        `${upstream.origin} at http://127.0.0.1:${port}/ (Ctrl-C stops)`,
    ),
  );
}

async function mint(email: string, groups: string[], minutes: number) {
  console.log(await assertion({ email, ...(groups.length ? { groups } : {}) }, minutes));
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: "string", default: "8790" },
    email: { type: "string" },
    groups: { type: "string", default: "" },
    minutes: { type: "string", default: "60" },
    upstream: { type: "string", default: "http://127.0.0.1:8787" },
    name: { type: "string" },
  },
});
const port = Number(values.port);
switch (positionals[0]) {
  case "keys":
    await keys(port);
    break;
  case "serve":
    serve(port, new URL(values.upstream));
    break;
  case "service-token":
    if (!values.name) {
      console.error("service-token needs --name");
      process.exit(2);
    }
    newServiceToken(values.name);
    break;
  case "mint":
    if (!values.email) {
      console.error("mint needs --email");
      process.exit(2);
    }
    await mint(
      values.email,
      values.groups
        .split(",")
        .map((g) => g.trim())
        .filter(Boolean),
      Number(values.minutes),
    );
    break;
  default:
    console.error(
      "usage: npm run access-dev -- keys | serve [--port 8790] [--upstream URL] | mint --email <email> [--groups a,b] [--minutes 60] | service-token --name <name>",
    );
    process.exit(2);
}
