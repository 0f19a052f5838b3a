// A stand-in for a Cloudflare Access team in tests: RSA key pairs, a real HTTP server on loopback
// publishing the public keys the way Access does (`/cdn-cgi/access/certs`), and assertions minted
// with `jose` exactly as Access signs them (RS256, kid, aud, iss, exp).
import { createServer, type Server } from "node:http";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";

export type TeamKey = { kid: string; privateKey: CryptoKey; publicJwk: JWK };

export async function teamKey(kid: string): Promise<TeamKey> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" } };
}

export class AccessTeam {
  readonly domain: string;
  readonly audience: string;
  /** the keys the certs URL publishes now (tests add and remove keys to rotate) */
  published: TeamKey[];
  /** how often the key set was fetched */
  fetches = 0;
  /** answer 500 instead of the keys (Access's endpoint having a bad moment) */
  failing = false;
  private server: Server | null = null;
  private port = 0;

  private constructor(domain: string, audience: string, keys: TeamKey[]) {
    this.domain = domain;
    this.audience = audience;
    this.published = keys;
  }

  static async start(opts: { domain?: string; audience?: string; keys: TeamKey[] }): Promise<AccessTeam> {
    const team = new AccessTeam(
      opts.domain ?? "quantix-test.cloudflareaccess.com",
      opts.audience ?? "aud-" + "0123456789abcdef".repeat(4),
      opts.keys,
    );
    team.server = createServer((req, res) => {
      if (req.url !== "/cdn-cgi/access/certs") {
        res.writeHead(404).end();
        return;
      }
      team.fetches++;
      if (team.failing) return void res.writeHead(500).end("unavailable");
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ keys: team.published.map((k) => k.publicJwk) }));
    });
    await new Promise<void>((ok) => team.server!.listen(0, "127.0.0.1", ok));
    team.port = (team.server.address() as { port: number }).port;
    return team;
  }

  get certsUrl(): string {
    return `http://127.0.0.1:${this.port}/cdn-cgi/access/certs`;
  }

  get issuer(): string {
    return `https://${this.domain}`;
  }

  /** The control plane's vars for this team. */
  vars(extra: Record<string, string> = {}): Record<string, string> {
    return { ACCESS_TEAM_DOMAIN: this.domain, ACCESS_AUD: this.audience, ACCESS_CERTS_URL: this.certsUrl, ...extra };
  }

  /** An assertion as Access issues it; `claims` / `header` override any part. */
  async mint(
    key: TeamKey,
    claims: JWTPayload & { email?: string; groups?: string[] } = {},
    opts: { kid?: string; issuer?: string; audience?: string; expiresIn?: number; notBefore?: number } = {},
  ): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT({ type: "app", identity_nonce: "test", country: "XX", ...claims })
      .setProtectedHeader({ alg: "RS256", kid: opts.kid ?? key.kid })
      .setIssuer(opts.issuer ?? this.issuer)
      .setAudience(opts.audience ?? this.audience)
      .setSubject(claims.sub ?? crypto.randomUUID())
      .setIssuedAt(now)
      .setExpirationTime(now + (opts.expiresIn ?? 300));
    if (opts.notBefore !== undefined) jwt.setNotBefore(now + opts.notBefore);
    return jwt.sign(key.privateKey);
  }

  async stop(): Promise<void> {
    await new Promise((ok) => this.server?.close(ok));
  }
}
