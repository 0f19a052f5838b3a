// The agent's liveness socket against a FAKE control plane on loopback (a `ws` server that speaks
// just enough of the link: a welcome, pongs): opened after a welcome that announces
// `livenessWatch`, with the link's id and the node credential; pinged on the link's heartbeat;
// opened again when it drops; closed with the link and opened anew for the next link; not retried
// for a link the control plane refused it for; never opened for a control plane that did not offer it.
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocketServer, type WebSocket } from "ws";
import { AgentLink } from "../../agent/link/connection.ts";
import { PING_FRAME, PONG_FRAME } from "../../protocol/wire-constants.ts";
import { silentLog, until } from "./helpers.ts";

type Watch = { ws: WebSocket; conn: string | null; authorization?: string; pings: number; closed: boolean };

/** A FAKE control plane: /agent/connect welcomes with a new id each time, /agent/liveness watches. */
class FakeControlPlane {
  readonly server: Server = createServer((_req, res) => res.writeHead(404).end());
  readonly wss = new WebSocketServer({ noServer: true });
  url = "";
  features = ["livenessWatch"];
  /** the welcome's livenessHeartbeats (absent: as an older control plane's welcome) */
  livenessHeartbeats: number | undefined = undefined;
  links: { ws: WebSocket; connId: string; pings: number }[] = [];
  watches: Watch[] = [];
  /** the status /agent/liveness refuses with (null: it accepts) */
  refuseWatch: number | null = null;
  refusedWatches = 0;
  private seq = 0;

  static async start(): Promise<FakeControlPlane> {
    const cp = new FakeControlPlane();
    cp.server.on("upgrade", (req, socket, head) => cp.upgrade(req, socket as Socket, head));
    await new Promise<void>((r) => cp.server.listen(0, "127.0.0.1", () => r()));
    cp.url = `ws://127.0.0.1:${(cp.server.address() as AddressInfo).port}`;
    return cp;
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer) {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/agent/liveness" && this.refuseWatch) {
      this.refusedWatches++;
      socket.end(`HTTP/1.1 ${this.refuseWatch} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      if (url.pathname === "/agent/liveness") {
        const watch: Watch = {
          ws,
          conn: url.searchParams.get("conn"),
          authorization: req.headers.authorization,
          pings: 0,
          closed: false,
        };
        this.watches.push(watch);
        ws.on("message", (d) => {
          if (d.toString() !== PING_FRAME) return;
          watch.pings++;
          ws.send(PONG_FRAME);
        });
        ws.on("close", () => (watch.closed = true));
        return;
      }
      const connId = `00000000-0000-4000-8000-${String(++this.seq).padStart(12, "0")}`;
      const link = { ws, connId, pings: 0 };
      this.links.push(link);
      ws.on("message", (d) => {
        if (d.toString() !== PING_FRAME) return;
        link.pings++;
        ws.send(PONG_FRAME);
      });
      ws.send(
        JSON.stringify({
          type: "welcome",
          id: connId,
          payload: {
            nodeId: "node-1",
            serverTime: Date.now(),
            heartbeatMs: 100,
            features: this.features,
            ...(this.livenessHeartbeats ? { livenessHeartbeats: this.livenessHeartbeats } : {}),
          },
        }),
      );
    });
  }

  open = () => this.watches.filter((w) => !w.closed);

  async close() {
    for (const c of this.wss.clients) c.terminate();
    await new Promise((r) => this.server.close(r));
  }
}

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: { features?: string[]; refuseWatch?: number; livenessHeartbeats?: number } = {}) {
  const cp = await FakeControlPlane.start();
  cleanups.push(() => cp.close());
  cp.livenessHeartbeats = opts.livenessHeartbeats;
  if (opts.features) cp.features = opts.features;
  if (opts.refuseWatch) cp.refuseWatch = opts.refuseWatch;
  const link = new AgentLink({
    url: `${cp.url}/agent/connect`,
    credential: () => "qxn_cred-1",
    timings: { connectTimeoutMs: 2_000, backoffBaseMs: 20, backoffCapMs: 100, stableAfterMs: 60_000 },
    log: silentLog,
    events: { onOpen: () => {}, onMessage: () => {}, onRefused: () => {} },
  });
  cleanups.push(() => link.stop());
  link.start();
  return { cp, link };
}

describe("the agent's liveness socket", () => {
  /** Link pings and liveness pings over the same stretch, once the socket is open and pinged. */
  async function pingsOver(cp: FakeControlPlane, watch: Watch, watchPings: number) {
    await until(() => watch.pings >= 2); // a ping on opening, then on the heartbeat (100 ms here)
    const [linkFrom, watchFrom] = [cp.links[0].pings, watch.pings];
    await until(() => watch.pings >= watchFrom + watchPings);
    return { link: cp.links[0].pings - linkFrom, watch: watch.pings - watchFrom };
  }

  it("opens after the welcome with the link's id and credential, and is pinged once per the welcome's livenessHeartbeats", async () => {
    const { cp } = await setup({ livenessHeartbeats: 2 });
    await until(() => cp.watches.length === 1);
    const [watch] = cp.watches;
    expect(watch.conn).toBe(cp.links[0].connId);
    expect(watch.authorization).toBe("Bearer qxn_cred-1");
    // Both are sent from the link's heartbeat: twice the link's pings in the same stretch, give or take
    // one sent but not yet counted at either end.
    const counted = await pingsOver(cp, watch, 4);
    expect(counted.link).toBeGreaterThanOrEqual(2 * counted.watch - 2);
    expect(counted.link).toBeLessThanOrEqual(2 * counted.watch + 2);
    expect(cp.open()).toHaveLength(1);
  });

  it("is pinged on every heartbeat when the welcome does not say (an older control plane)", async () => {
    const { cp } = await setup();
    await until(() => cp.watches.length === 1);
    const counted = await pingsOver(cp, cp.watches[0], 6);
    expect(counted.link).toBeGreaterThanOrEqual(counted.watch - 2);
    expect(counted.link).toBeLessThanOrEqual(counted.watch + 2);
  });

  it("dropped by the control plane, it is opened again for the same link", async () => {
    const { cp } = await setup();
    await until(() => cp.watches.length === 1);
    cp.watches[0].ws.close(4002, "replaced");
    await until(() => cp.watches.length === 2 && cp.open().length === 1);
    expect(cp.watches[1].conn).toBe(cp.links[0].connId);
    expect(cp.links).toHaveLength(1); // the link itself stayed up
  });

  it("closes with its link and opens anew with the next link's id", async () => {
    const { cp } = await setup();
    await until(() => cp.watches.length === 1);
    cp.links[0].ws.terminate();
    await until(() => cp.links.length === 2 && cp.watches.length === 2);
    expect(cp.watches[0].closed).toBe(true);
    expect(cp.watches[1].conn).toBe(cp.links[1].connId);
  });

  it("refused (409: not the current link) it is not tried again for that link; stopped, nothing stays open", async () => {
    const { cp, link } = await setup({ refuseWatch: 409 });
    await until(() => cp.links.length === 1);
    await until(() => cp.refusedWatches === 1);
    await new Promise((r) => setTimeout(r, 500)); // several backoff periods
    expect(cp.refusedWatches).toBe(1);
    expect(cp.watches).toHaveLength(0);
    cp.refuseWatch = null;
    cp.links[0].ws.terminate(); // the next link tries again
    await until(() => cp.watches.length === 1);
    await link.stop();
    await until(() => cp.open().length === 0);
  });

  it("is never opened for a control plane that does not offer it", async () => {
    const { cp } = await setup({ features: ["progress"] });
    await until(() => cp.links.length === 1);
    await new Promise((r) => setTimeout(r, 300)); // three heartbeats
    expect(cp.watches).toHaveLength(0);
  });
});
