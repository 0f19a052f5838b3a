// The liveness shard (LivenessWatch) in workerd: an agent's second, ping-only socket, one alarm per
// shard, which also writes its nodes' last signs of life (one D1 row for the shard, which the node
// routes read beside each node's own lastSeenAt), and the node's own alarm only as the fallback (and
// a rare check while watched). OFFLINE_AFTER_MS is 4 s here, so a shard looks every second, and
// LAST_SEEN_WRITE_MS 2 s.
import { env, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CLOSE, PING_FRAME, PONG_FRAME, WATCHED_CHECK_INTERVALS } from "../../protocol/wire.ts";
import { agentsClosedAfterEach, api, BASE, eventually, expectError, json, session, TestAgent } from "./support.ts";

const OFFLINE_AFTER_MS = 4000;
const LAST_SEEN_WRITE_MS = 2000;
const agents = agentsClosedAfterEach();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The node's current link id (welcome.id) and the alarm its object has set. */
const linkOf = (nodeId: string) =>
  runInDurableObject(session(nodeId), async (_o, state) => ({
    conn: state.storage.kv.get<string>("conn"),
    alarm: await state.storage.getAlarm(),
  }));

const upgrade = (path: string, credential?: string) =>
  SELF.fetch(`${BASE}${path}`, {
    headers: { upgrade: "websocket", ...(credential ? { authorization: `Bearer ${credential}` } : {}) },
  });

/** The agent's liveness socket, as the real agent keeps it beside its link. */
class WatchSocket {
  readonly ws: WebSocket;
  pongs = 0;
  closed: { code: number; reason: string } | null = null;

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.accept();
    ws.addEventListener("message", (e) => {
      if (e.data === PONG_FRAME) this.pongs++;
    });
    ws.addEventListener("close", (e) => {
      this.closed = { code: e.code, reason: e.reason };
    });
  }

  static async open(credential: string, conn: string): Promise<WatchSocket> {
    const res = await upgrade(`/agent/liveness?conn=${conn}`, credential);
    expect(res.status, res.status === 101 ? "" : await res.text()).toBe(101);
    return new WatchSocket(res.webSocket!);
  }

  async ping(): Promise<void> {
    const before = this.pongs;
    this.ws.send(PING_FRAME);
    await eventually(async () => expect(this.pongs).toBeGreaterThan(before));
  }
}

/** A node whose agent is connected, said hello, and keeps a liveness socket. */
async function watchedNode() {
  const t0 = Date.now();
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  const { conn } = await linkOf(s.nodeId);
  const watch = await WatchSocket.open(s.credential, conn!);
  await watch.ping();
  return { ...s, conn: conn!, watch, t0 };
}

const connected = async (nodeId: string) => (await json(await api(`/api/nodes/${nodeId}`))).node.connected;
/** The node's own row: its lastSeenAt and the shard it names. */
const nodeRow = (nodeId: string) =>
  env.DB.prepare("SELECT last_seen_at AS lastSeenAt, liveness_shard AS shard FROM nodes WHERE id = ?")
    .bind(nodeId)
    .first<{ lastSeenAt: number | null; shard: string | null }>();
/** Every shard's row of last signs, by shard. */
const shardRows = async () =>
  Object.fromEntries(
    (await env.DB.prepare("SELECT shard, seen FROM liveness_seen").all<{ shard: string; seen: string }>()).results.map(
      (r) => [r.shard, JSON.parse(r.seen) as Record<string, number>],
    ),
  );

describe("liveness shard", () => {
  it("a watched node's object sets no liveness alarm of its own; silent on both sockets, the shard has it shown offline", async () => {
    const { agent, nodeId, watch, t0 } = await watchedNode();
    // The fallback check would come within OFFLINE_AFTER_MS of the connect; while watched, the
    // object's alarm is only its rare check of its own, WATCHED_CHECK_INTERVALS × LAST_SEEN_WRITE_MS away.
    await eventually(async () =>
      expect((await linkOf(nodeId)).alarm).toBeGreaterThanOrEqual(t0 + WATCHED_CHECK_INTERVALS * LAST_SEEN_WRITE_MS),
    );
    // Both sockets fall silent: the shard closes its own and tells the node, which finds its link
    // silent too, ends it (CLOSE.dead) and shows the node offline.
    expect((await agent.waitClosed(OFFLINE_AFTER_MS + 6000)).code).toBe(CLOSE.dead);
    await eventually(async () => expect(watch.closed?.code).toBe(CLOSE.dead));
    expect(await connected(nodeId)).toBe(false);
  }, 20_000);

  it("the shard writes a watched node's lastSeenAt every LAST_SEEN_WRITE_MS while it pings, never its object", async () => {
    const { nodeId, watch } = await watchedNode();
    const other = await watchedNode(); // on the same shard
    const lastSeen = async () => Date.parse((await json(await api(`/api/nodes/${nodeId}`))).node.lastSeenAt);
    const atConnect = await lastSeen();
    const { alarm } = await linkOf(nodeId);
    // Only the liveness socket pings (the link stays silent: the shard's word is what keeps it online).
    const until = Date.now() + 2 * LAST_SEEN_WRITE_MS + 1500;
    let lastPing = 0;
    while (Date.now() < until) {
      await watch.ping();
      await other.watch.ping();
      lastPing = Date.now();
      await sleep(400);
    }
    await eventually(async () => expect(await lastSeen()).toBeGreaterThanOrEqual(atConnect + LAST_SEEN_WRITE_MS));
    expect(await lastSeen()).toBeLessThanOrEqual(lastPing);
    expect((await linkOf(nodeId)).alarm).toBe(alarm); // the object was not woken for it
    expect(await connected(nodeId)).toBe(true);
    // One row for the shard holds both nodes' last signs, and each node's row names that shard;
    // neither node's own lastSeenAt was written.
    const shard = (await nodeRow(nodeId))?.shard;
    expect(shard).toMatch(/^liveness-\d+$/);
    expect((await nodeRow(other.nodeId))?.shard).toBe(shard);
    const rows = await shardRows();
    expect(rows[shard!][nodeId]).toBe(await lastSeen());
    expect(rows[shard!][other.nodeId]).toBeGreaterThanOrEqual(atConnect + LAST_SEEN_WRITE_MS);
    expect((await nodeRow(nodeId))?.lastSeenAt).toBeLessThan(atConnect + LAST_SEEN_WRITE_MS);
  }, 20_000);

  it("a node's routes read its lastSeenAt as the later of its row's and its shard's; stale in both, it is offline", async () => {
    const { nodeId } = await watchedNode();
    const shard = "liveness-0";
    const now = Date.now();
    const hourAgo = now - 3_600_000;
    const view = async () => (await json(await api(`/api/nodes/${nodeId}`))).node;
    // Its own row an hour old (past the stale line here) and naming its shard, the shard's word
    // fresh: connected, seen now.
    await env.DB.prepare("UPDATE nodes SET last_seen_at = ?, liveness_shard = ? WHERE id = ?")
      .bind(hourAgo, shard, nodeId)
      .run();
    await env.DB.prepare(
      "INSERT INTO liveness_seen (shard, seen, at) VALUES (?, ?, ?) ON CONFLICT (shard) DO UPDATE SET seen = excluded.seen",
    )
      .bind(shard, JSON.stringify({ [nodeId]: now }), now)
      .run();
    expect(await view()).toMatchObject({ connected: true, lastSeenAt: new Date(now).toISOString() });
    // The shard's word as old as its own row: the node is shown offline, seen an hour ago.
    await env.DB.prepare("UPDATE liveness_seen SET seen = ? WHERE shard = ?")
      .bind(JSON.stringify({ [nodeId]: hourAgo - 1000 }), shard)
      .run();
    expect(await view()).toMatchObject({ connected: false, lastSeenAt: new Date(hourAgo).toISOString() });
  }, 20_000);

  it("a shard socket that drops while the link keeps pinging: the node stays online on its own alarm again", async () => {
    const { agent, nodeId, watch } = await watchedNode();
    watch.ws.close(1000, "agent closing it");
    // Back on the fallback: the object's check comes within OFFLINE_AFTER_MS of the last ping.
    await eventually(async () =>
      expect((await linkOf(nodeId)).alarm).toBeLessThanOrEqual(Date.now() + OFFLINE_AFTER_MS + 1),
    );
    const until = Date.now() + 2 * OFFLINE_AFTER_MS;
    while (Date.now() < until) {
      agent.send(PING_FRAME);
      await agent.next("pong");
      await sleep(500);
    }
    expect(agent.closed).toBeNull();
    expect(await connected(nodeId)).toBe(true);
  }, 20_000);

  it("a shard socket gone silent while the link keeps pinging: the shard lets it go and the node stays online", async () => {
    const { agent, nodeId, watch } = await watchedNode();
    const until = Date.now() + 2 * OFFLINE_AFTER_MS + 1000;
    while (Date.now() < until) {
      agent.send(PING_FRAME);
      await agent.next("pong");
      await sleep(500);
    }
    expect(watch.closed?.code).toBe(CLOSE.dead);
    expect(agent.closed).toBeNull();
    expect(await connected(nodeId)).toBe(true);
    expect((await linkOf(nodeId)).alarm).toBeLessThanOrEqual(Date.now() + OFFLINE_AFTER_MS + 1);
  }, 20_000);

  it("a client with only its link (no liveness socket) is still shown offline by its node's own alarm", async () => {
    const s = await TestAgent.forNewNode();
    agents.push(s.agent);
    expect((await s.agent.waitClosed(OFFLINE_AFTER_MS + 6000)).code).toBe(CLOSE.dead);
    expect(await connected(s.nodeId)).toBe(false);
  }, 20_000);
});

describe("GET /agent/liveness refuses what it must not take", () => {
  it("no upgrade, no or a wrong credential, no or a malformed conn: a 4xx JSON naming it", async () => {
    const { credential, conn } = await watchedNode();
    await expectError(await SELF.fetch(`${BASE}/agent/liveness?conn=${conn}`), 426, "upgrade_required");
    await expectError(await upgrade(`/agent/liveness?conn=${conn}`), 401, "unauthorized");
    await expectError(await upgrade(`/agent/liveness?conn=${conn}`, "qxn_not-a-credential"), 401, "credential_invalid");
    const missing = await expectError(await upgrade("/agent/liveness", credential), 400, "invalid_request");
    expect(missing.message).toContain("conn");
    await expectError(await upgrade("/agent/liveness?conn=../../x", credential), 400, "invalid_request");
  });

  it("a node credential cannot watch another node's link, nor a link its node no longer has", async () => {
    const a = await watchedNode();
    const b = await watchedNode();
    // B's link id with A's credential: A's object does not have that link.
    const other = await expectError(
      await upgrade(`/agent/liveness?conn=${b.conn}`, a.credential),
      409,
      "link_not_current",
    );
    expect(other.message).toContain("current");
    const named = await expectError(
      await upgrade(`/agent/liveness?conn=${b.conn}&node=${b.nodeId}`, a.credential),
      403,
      "forbidden",
    );
    expect(named.message).toContain("own node");
    // A's link replaced by a new one: the old id is refused.
    const again = await TestAgent.connect(a.credential);
    agents.push(again);
    await expectError(await upgrade(`/agent/liveness?conn=${a.conn}`, a.credential), 409, "link_not_current");
  });
});
