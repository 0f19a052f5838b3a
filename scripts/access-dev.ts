// Try Cloudflare Access sign-in locally, without a Cloudflare account: a local team key set, a
// loopback server publishing it the way Access does, and assertions minted as Access signs them.
//   npm run access-dev -- keys                  key pair + audience in .state/access/ (git-ignored), prints .dev.vars lines;
//                                               run again, it rotates the key and keeps the audience
//   npm run access-dev -- serve [--port 8790]   publishes the keys at http://127.0.0.1:8790/cdn-cgi/access/certs
//   npm run access-dev -- mint --email alice@acme.test [--groups ops,dev] [--minutes 60]   prints an assertion
// QX_ACCESS_DEV_DIR puts the key set somewhere else than .state/access/ (tests use their own).
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from "jose";

const DIR = resolve(process.env.QX_ACCESS_DEV_DIR || join(import.meta.dirname, "../.state/access"));
const KEYS = join(DIR, "keys.json");
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

function serve(port: number) {
  const server = createServer((req, res) => {
    if (req.url !== "/cdn-cgi/access/certs") return void res.writeHead(404).end();
    const team = load(); // read each time: `keys` again rotates without a restart
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: publishedKeys(team) }));
  });
  server.listen(port, "127.0.0.1", () =>
    console.log(`serving the local team's keys at http://127.0.0.1:${port}/cdn-cgi/access/certs (Ctrl-C stops)`),
  );
}

async function mint(email: string, groups: string[], minutes: number) {
  const team = load();
  const key = await importJWK(team.privateJwk, "RS256");
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ email, ...(groups.length ? { groups } : {}), type: "app", country: "XX" })
    .setProtectedHeader({ alg: "RS256", kid: team.kid })
    .setIssuer(`https://${TEAM_DOMAIN}`)
    .setAudience(team.audience)
    .setSubject(crypto.randomUUID())
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + minutes * 60)
    .sign(key);
  console.log(token);
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: "string", default: "8790" },
    email: { type: "string" },
    groups: { type: "string", default: "" },
    minutes: { type: "string", default: "60" },
  },
});
const port = Number(values.port);
switch (positionals[0]) {
  case "keys":
    await keys(port);
    break;
  case "serve":
    serve(port);
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
      "usage: npm run access-dev -- keys | serve [--port 8790] | mint --email <email> [--groups a,b] [--minutes 60]",
    );
    process.exit(2);
}
