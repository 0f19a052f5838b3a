// A local webhook receiver for Quantix Edge notifications: prints each delivery and checks its
// X-Quantix-Signature against the target's secret. `npm run webhook-receiver -- --secret S [--port 8799]`.
// The tests use the same class to receive real deliveries from the control plane.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { parseArgs } from "node:util";

export type Delivery = {
  /** X-Quantix-Delivery: the id receivers de-duplicate on */
  id: string;
  event: string;
  signatureOk: boolean;
  raw: string;
  body: unknown;
  headers: IncomingHttpHeaders;
  receivedAt: number;
  /** the HTTP status this receiver answered */
  answered: number;
};

/** True when `header` is `sha256=<hex HMAC-SHA256 of raw with secret>` (compared in constant time). */
export function signatureMatches(secret: string, raw: string, header: string | undefined): boolean {
  const expected = Buffer.from(`sha256=${createHmac("sha256", secret).update(raw).digest("hex")}`);
  const given = Buffer.from(header ?? "");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export class WebhookReceiver {
  readonly secret: string;
  readonly received: Delivery[] = [];
  /** what to answer a request: 401 to a bad signature (as a real receiver must), else 200; a test
   *  may answer 500 to make the control plane retry */
  answer: (d: Omit<Delivery, "answered">) => number = (d) => (d.signatureOk ? 200 : 401);
  onDelivery: (d: Delivery) => void = () => {};
  private server: Server | null = null;
  port = 0;

  constructor(secret: string) {
    this.secret = secret;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  /** Listens on `port` (0: any free one; again after down(): the same one). */
  async up(port = this.port): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        let body: unknown = null;
        try {
          body = JSON.parse(raw);
        } catch {
          // kept as raw
        }
        const seen = {
          id: String(req.headers["x-quantix-delivery"] ?? ""),
          event: String(req.headers["x-quantix-event"] ?? ""),
          signatureOk: signatureMatches(this.secret, raw, req.headers["x-quantix-signature"] as string | undefined),
          raw,
          body,
          headers: req.headers,
          receivedAt: Date.now(),
        };
        const status = this.answer(seen);
        const delivery = { ...seen, answered: status };
        this.received.push(delivery);
        this.onDelivery(delivery);
        res.writeHead(status, { "content-type": "text/plain" }).end(status < 300 ? "ok" : "not now");
      });
    });
    await new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen(port, "127.0.0.1", ok);
    });
    this.server = server;
    this.port = (server.address() as { port: number }).port;
  }

  /** Stops listening (connections refused) until up() again. */
  async down(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise((ok) => server.close(ok));
  }
}

async function main() {
  const { values } = parseArgs({
    options: { secret: { type: "string" }, port: { type: "string", default: "8799" }, fail: { type: "string" } },
  });
  if (!values.secret) {
    console.error("usage: npm run webhook-receiver -- --secret <the target's secret> [--port 8799] [--fail 500]");
    process.exit(2);
  }
  const receiver = new WebhookReceiver(values.secret);
  const fail = values.fail ? Number(values.fail) : null;
  if (fail !== null) receiver.answer = () => fail;
  receiver.onDelivery = (d) => {
    const mark = d.signatureOk ? "signature ok" : "SIGNATURE MISMATCH";
    console.log(
      `${new Date(d.receivedAt).toISOString()} ${d.event} delivery ${d.id} (${mark}) -> answered ${d.answered}`,
    );
    console.log(`  ${d.raw}`);
  };
  await receiver.up(Number(values.port));
  console.log(`listening on ${receiver.url}`);
  console.log(`create a target: npm run qx -- notifications add local ${receiver.url} --secret <secret> --events all`);
}

if (import.meta.main) await main();
