// A tiny TCP proxy on loopback between an agent and the control plane, so a test can break the link
// the way networks do: cut it (both sides see a reset), blackhole it (sockets stay open, bytes
// vanish: a silent link), refuse new connections for a while, and restore it.
import { createServer, Socket, type Server } from "node:net";

export class LinkProxy {
  readonly port: number;
  private readonly server: Server;
  private readonly pairs = new Set<[Socket, Socket]>();
  private mode: "up" | "refusing" | "blackhole" = "up";
  /** connections accepted so far (an agent reconnecting shows up here) */
  accepted = 0;

  private constructor(server: Server, port: number) {
    this.server = server;
    this.port = port;
  }

  static start(targetPort: number): Promise<LinkProxy> {
    let proxy: LinkProxy;
    const server = createServer((client) => {
      if (proxy.mode === "refusing") return client.destroy();
      proxy.accepted++;
      const upstream = new Socket();
      const pair: [Socket, Socket] = [client, upstream];
      proxy.pairs.add(pair);
      const drop = () => {
        proxy.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on("error", drop).on("close", drop);
      upstream.on("error", drop).on("close", drop);
      client.on("data", (d) => proxy.mode === "up" && upstream.write(d));
      upstream.on("data", (d) => proxy.mode === "up" && client.write(d));
      upstream.connect(targetPort, "127.0.0.1");
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        proxy = new LinkProxy(server, (server.address() as { port: number }).port);
        resolve(proxy);
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get open(): number {
    return this.pairs.size;
  }

  /** Reset every connection and refuse new ones until restore(). */
  cut(): void {
    this.mode = "refusing";
    for (const [a, b] of this.pairs) {
      a.resetAndDestroy();
      b.resetAndDestroy();
    }
    this.pairs.clear();
  }

  /** Keep the sockets open but drop every byte either way (a silent link). */
  blackhole(): void {
    this.mode = "blackhole";
  }

  /** Forward again; connections left from a blackhole are reset so both ends notice. */
  restore(): void {
    if (this.mode === "blackhole") {
      this.mode = "refusing";
      this.cut();
    }
    this.mode = "up";
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}
