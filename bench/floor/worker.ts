// The floor probe's Worker: the platform hops a product route is made of (a Worker answering, a D1
// point read, a D1 write, a Durable Object RPC, a frame over a hibernatable WebSocket to a Node
// client and back, a client's WebSocket frame echoed by a Durable Object or relayed through it to the
// Node client and back), each with no product code around it, so the bench can tell ours from workerd's.
// Plain fetch handler on purpose: no router, no validation, no JSON beyond what a route must send.
import { DurableObject } from "cloudflare:workers";

type FloorEnv = { DB: D1Database; ECHO_SESSION: DurableObjectNamespace<EchoSession> };

/** How the echo client answers: `plain` one frame `<id> <text>`; `json` the product's shape (one
 *  JSON result frame holding the text); `chunked` the shape before it, and an older agent's (a JSON
 *  log.chunk frame, then a JSON result frame). `kept` is plain plus the product's per-command
 *  Durable Object storage: an in-flight entry and a deadline alarm written before the frame leaves,
 *  the entry deleted on the answer; `put` and `alarm` are each half of that. `stored` is plain plus
 *  the answer's text written to the object's storage as it is handed back (as a logs answer is kept
 *  as the VM's last-known log). */
export type EchoMode = "plain" | "json" | "chunked" | "kept" | "put" | "alarm" | "stored";
const ECHO_MODES: readonly string[] = [
  "plain",
  "json",
  "chunked",
  "kept",
  "put",
  "alarm",
  "stored",
] satisfies EchoMode[];
const JSON_MODES: readonly string[] = ["json", "chunked"] satisfies EchoMode[];

/** Socket tags: the echo client, a client whose frames are echoed, one whose frames are relayed. */
const CLIENT_TAG = "client";
const ECHO_TAG = "ws-echo";
const RELAY_TAG = "ws-relay";

const ITEM_COLUMNS = 7;
/** Rows per seed statement: 7 bound parameters each, under D1's 100 per statement. */
const SEED_ROWS_PER_STATEMENT = Math.floor(100 / ITEM_COLUMNS);

/** The id of seed row `n`, also used by the bench to pick the row it reads. */
export const itemId = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;

const ok = () => Response.json({ ok: true });

async function sha256Hex(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}
/** What an auth cache would hold: token hash -> principal (filled on first sight). */
const principals = new Map<string, { role: string }>();

async function seed(env: FloorEnv, from: number, count: number): Promise<Response> {
  const statements: D1PreparedStatement[] = [];
  const now = Date.now();
  for (let start = from; start < from + count; start += SEED_ROWS_PER_STATEMENT) {
    const n = Math.min(SEED_ROWS_PER_STATEMENT, from + count - start);
    const placeholders = Array.from({ length: n }, () => `(${Array(ITEM_COLUMNS).fill("?").join(", ")})`).join(", ");
    const params = Array.from({ length: n }, (_, i) => {
      const k = start + i;
      return [
        itemId(k),
        `vm-${k} (bench)`,
        `node-${k % 100}`,
        "RUNNING",
        1,
        now,
        `seed row ${k}: about as wide as a VM record`,
      ];
    }).flat();
    statements.push(env.DB.prepare(`INSERT OR REPLACE INTO items VALUES ${placeholders}`).bind(...params));
  }
  await env.DB.batch(statements);
  return Response.json({ seeded: count });
}

const writeOne = (env: FloorEnv, itemIdValue: string) =>
  env.DB.prepare("INSERT INTO writes (item_id, at) VALUES (?, ?)").bind(itemIdValue, Date.now()).run();

/** A reset's write shape: an event row and the record's update, one batch (one D1 call). */
const writeBatch = (env: FloorEnv, itemIdValue: string) =>
  env.DB.batch([
    env.DB.prepare("INSERT INTO writes (item_id, at) SELECT id, ? FROM items WHERE id = ? RETURNING id").bind(
      Date.now(),
      itemIdValue,
    ),
    env.DB.prepare("UPDATE items SET generation = generation + 1, updated_at = ? WHERE id = ? RETURNING *").bind(
      Date.now(),
      itemIdValue,
    ),
  ]);

export default {
  async fetch(request: Request, env: FloorEnv): Promise<Response> {
    const url = new URL(request.url);
    const session = () => env.ECHO_SESSION.get(env.ECHO_SESSION.idFromName("node"));
    const bytes = Number(url.searchParams.get("bytes") ?? 0);
    const [, route, arg] = url.pathname.split("/");
    switch (route) {
      case "trivial":
        return ok();
      case "auth": {
        // The hashing and lookup a bearer-token check does per request, without a database.
        const hash = await sha256Hex(request.headers.get("authorization") ?? "");
        if (!principals.has(hash)) principals.set(hash, { role: "operator" });
        return Response.json({ ok: true, role: principals.get(hash)!.role });
      }
      case "items": {
        const item = await env.DB.prepare("SELECT * FROM items WHERE id = ?")
          .bind(arg ?? "")
          .first();
        return item ? Response.json({ item }) : Response.json({ error: "no such item" }, { status: 404 });
      }
      case "write":
        await writeOne(env, itemId(0));
        return ok();
      case "write-batch":
        await writeBatch(env, itemId(0));
        return ok();
      case "seed":
        return seed(env, Number(url.searchParams.get("from")), Number(url.searchParams.get("count")));
      case "connect":
        return session().fetch(request);
      case "ws-echo":
        // A client's WebSocket to an object of its own, which sends every frame straight back.
        return env.ECHO_SESSION.get(env.ECHO_SESSION.idFromName("ws-echo")).fetch(request);
      case "ws-relay":
        // A client's WebSocket to the object the echo client holds: each frame goes to the echo
        // client and its answer back to the socket (the hops a console's keystroke makes).
        return session().fetch(request);
      case "rpc":
        return Response.json({ ok: await session().ping() });
      case "echo": {
        // /echo/<mode>: plain when none is named
        const mode = (arg ?? "plain") as EchoMode;
        if (!ECHO_MODES.includes(mode) || JSON_MODES.includes(mode))
          return Response.json({ error: `no echo mode ${mode}` }, { status: 404 });
        return new Response(await session().echo(bytes, mode));
      }
      case "echo-json": {
        // The product's answer shape: the text inside a JSON document. /echo-json/chunked: the agent's
        // answer in two frames
        const mode = arg === "chunked" ? "chunked" : "json";
        return Response.json({ text: await session().echo(bytes, mode), capturedAt: new Date().toISOString() });
      }
      case "echo-write": {
        // /echo-write/kept: with the per-command storage of `kept`
        await session().echo(bytes, arg === "kept" ? "kept" : "plain");
        await writeOne(env, itemId(0));
        return ok();
      }
      default:
        return Response.json({ error: `no route ${url.pathname}` }, { status: 404 });
    }
  },
};

export class EchoSession extends DurableObject<FloorEnv> {
  // In memory only, like the product's waiters: an RPC still running keeps the object awake.
  private readonly waiters = new Map<string, { resolve: (text: string) => void; mode: EchoMode; chunks: string[] }>();
  private next = 0;

  async fetch(request: Request): Promise<Response> {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket")
      return new Response("expected a WebSocket upgrade", { status: 426 });
    const [client, server] = Object.values(new WebSocketPair());
    const path = new URL(request.url).pathname;
    if (path === "/ws-echo" || path === "/ws-relay") {
      this.ctx.acceptWebSocket(server, [path === "/ws-echo" ? ECHO_TAG : RELAY_TAG]);
      return new Response(null, { status: 101, webSocket: client });
    }
    for (const old of this.ctx.getWebSockets(CLIENT_TAG)) old.close(1000, "replaced");
    this.ctx.acceptWebSocket(server, [CLIENT_TAG]);
    return new Response(null, { status: 101, webSocket: client });
  }

  ping(): string {
    return "pong";
  }

  /** Asks the connected client for `bytes` bytes and resolves with them. */
  async echo(bytes: number, mode: EchoMode): Promise<string> {
    const ws = this.ctx.getWebSockets(CLIENT_TAG)[0];
    if (!ws) throw new Error("no echo client connected");
    const id = `${++this.next}`;
    const answer = new Promise<string>((resolve) => this.waiters.set(id, { resolve, mode, chunks: [] }));
    if (mode === "kept" || mode === "put") this.ctx.storage.kv.put(`inflight:${id}`, { id, bytes, at: Date.now() });
    if (mode === "kept" || mode === "alarm") await this.ctx.storage.setAlarm(Date.now() + 10_000);
    ws.send(JSON.stringify({ id, bytes, json: JSON_MODES.includes(mode) ? mode : false }));
    return answer;
  }

  /** The deadline alarm of `kept` echoes: nothing is ever late here, so there is nothing to do. */
  async alarm(): Promise<void> {}

  webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): void {
    const [tag] = this.ctx.getTags(ws);
    if (tag === ECHO_TAG) return ws.send(message);
    if (tag === RELAY_TAG) return this.ctx.getWebSockets(CLIENT_TAG)[0]?.send(message);
    if (typeof message !== "string") {
      // The echo client's answer to a relayed frame.
      for (const relay of this.ctx.getWebSockets(RELAY_TAG)) relay.send(message);
      return;
    }
    if (message.startsWith("{")) return this.onJsonFrame(message);
    const space = message.indexOf(" ");
    this.settle(message.slice(0, space), message.slice(space + 1));
  }

  private onJsonFrame(message: string): void {
    const frame = JSON.parse(message) as { type: string; id: string; payload: { text?: string; chunks?: number } };
    const waiter = this.waiters.get(frame.id);
    if (!waiter) return;
    if (frame.type === "log.chunk") waiter.chunks.push(frame.payload.text ?? "");
    else this.settle(frame.id, frame.payload.text ?? waiter.chunks.join(""));
  }

  private settle(id: string, text: string): void {
    const waiter = this.waiters.get(id);
    if (!waiter) return;
    this.waiters.delete(id);
    if (waiter.mode === "kept" || waiter.mode === "put") this.ctx.storage.kv.delete(`inflight:${id}`);
    waiter.resolve(text);
    if (waiter.mode === "stored") this.ctx.storage.kv.put("last-answer", text);
  }
}
