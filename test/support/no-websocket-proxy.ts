// Test fixture: a loopback HTTP proxy in front of the control plane that behaves like a corporate
// proxy passing only plain request/response HTTPS — it answers 400 to every `Upgrade:` request and
// forwards everything else. `allowWebSockets = true` lets upgrades through (the network got fixed).
import { createServer, request, type IncomingMessage, type Server } from "node:http";
import { connect, type Socket } from "node:net";

export class NoWebSocketProxy {
  readonly url: string;
  allowWebSockets = false;
  /** upgrade requests answered 400 so far */
  refusedUpgrades = 0;
  /** forwarded requests per path (e.g. `/agent/poll`) */
  readonly forwarded = new Map<string, number>();
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  private constructor(server: Server, url: string) {
    this.server = server;
    this.url = url;
  }

  static async start(upstream: string): Promise<NoWebSocketProxy> {
    const target = new URL(upstream);
    const server = createServer();
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    const { port } = server.address() as { port: number };
    const proxy = new NoWebSocketProxy(server, `http://127.0.0.1:${port}`);
    server.on("connection", (s) => {
      proxy.sockets.add(s);
      s.on("close", () => proxy.sockets.delete(s));
    });
    server.on("request", (req, res) => {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      proxy.forwarded.set(path, (proxy.forwarded.get(path) ?? 0) + 1);
      const upstreamReq = request(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, host: target.host },
        },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
      );
      upstreamReq.on("error", () => {
        if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
        res.end("bad gateway");
      });
      req.pipe(upstreamReq);
    });
    server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (!proxy.allowWebSockets) {
        proxy.refusedUpgrades++;
        socket.end(
          "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 27\r\nconnection: close\r\n\r\nWebSockets are not allowed\n",
        );
        return;
      }
      // A plain tunnel: the request head again, then bytes both ways.
      const up = connect(Number(target.port), target.hostname, () => {
        const headers = Object.entries({ ...req.headers, host: target.host })
          .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`)
          .join("\r\n");
        up.write(`${req.method} ${req.url} HTTP/1.1\r\n${headers}\r\n\r\n`);
        if (head.length) up.write(head);
        up.pipe(socket);
        socket.pipe(up);
      });
      proxy.sockets.add(up);
      up.on("close", () => proxy.sockets.delete(up));
      up.on("error", () => socket.destroy());
      socket.on("error", () => up.destroy());
    });
    return proxy;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((ok) => this.server.close(() => ok()));
  }
}
