// The long-poll transport (POST /agent/poll + /agent/send) into the real NodeSession: credential
// checks, the welcome of a new link, commands delivered on the next poll and settled by a send,
// stale links, replacement between a poll link and a socket (both ways), bad bodies, and a link
// that stops polling declared gone like a dead socket.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CLOSE, MAX_SEND_MESSAGES, PROTOCOL_VERSION } from "../../protocol/wire.ts";
import {
  BASE,
  FollowViewer,
  agentsClosedAfterEach,
  api,
  createNode,
  enroll,
  eventually,
  expectError,
  json,
  TestAgent,
  unique,
  vmInfo,
  type Frame,
  session,
} from "./support.ts";

const sockets = agentsClosedAfterEach();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function post(path: "/agent/poll" | "/agent/send", body: unknown, credential: string | null): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (credential !== null) headers.authorization = `Bearer ${credential}`;
  return SELF.fetch(`${BASE}${path}`, {
    method: "POST",
    headers,
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** A protocol-speaking agent on the long-poll transport (plain HTTP requests into the Worker). */
class PollAgent {
  readonly credential: string;
  connId = "";
  cursor: string | undefined;
  readonly frames: Frame[] = [];

  private constructor(credential: string) {
    this.credential = credential;
  }

  /** Opens a new link: the first poll carries no connId and is answered with the welcome. */
  static async open(credential: string): Promise<{ agent: PollAgent; welcome: Frame }> {
    const agent = new PollAgent(credential);
    const body = await json<{ connId: string; cursor: string; messages: Frame[] }>(
      await post("/agent/poll", {}, credential),
    );
    agent.connId = body.connId;
    agent.cursor = body.cursor;
    const [welcome, ...rest] = body.messages;
    agent.frames.push(...rest);
    return { agent, welcome: welcome };
  }

  static async forNewNode(): Promise<{ agent: PollAgent; nodeId: string; credential: string; name: string }> {
    const name = unique("poll-node");
    const { joinToken } = await createNode(name);
    const { nodeId, credential } = await enroll(joinToken);
    const { agent } = await PollAgent.open(credential);
    await agent.sendOk({
      type: "hello",
      id: "h1",
      payload: {
        agentVersion: "0.1.0-test",
        hostname: "poll.test",
        libvirtVersion: "9.0.0",
        protocolVersion: PROTOCOL_VERSION,
      },
    });
    return { agent, nodeId, credential, name };
  }

  /** One poll on this link, raw. */
  poll(waitMs: number): Promise<Response> {
    return post("/agent/poll", { connId: this.connId, cursor: this.cursor, waitMs }, this.credential);
  }

  async pollOk(waitMs: number): Promise<Frame[]> {
    const body = await json<{ connId: string; cursor: string; messages: Frame[] }>(await this.poll(waitMs));
    expect(body.connId).toBe(this.connId);
    this.cursor = body.cursor;
    this.frames.push(...body.messages);
    return body.messages;
  }

  /** Polls until a frame of `type` came (as a real agent keeps polling). */
  async next(type: string, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex((f) => f.type === type);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (Date.now() > deadline)
        throw new Error(`no ${type} within ${timeoutMs} ms (got ${JSON.stringify(this.frames)})`);
      await this.pollOk(500);
    }
  }

  send(...messages: unknown[]): Promise<Response> {
    return post("/agent/send", { connId: this.connId, messages }, this.credential);
  }

  async sendOk(...messages: unknown[]): Promise<void> {
    expect(await json(await this.send(...messages))).toEqual({ success: true });
  }
}

async function pollNodeWithVm(libvirtState: "running" | "shutoff" = "running") {
  const s = await PollAgent.forNewNode();
  const vm = vmInfo(`vm-${s.name}`, libvirtState);
  await s.agent.sendOk({ type: "inventory", id: "sync-0", payload: { syncId: "s1", seq: 0, done: true, vms: [vm] } });
  return { ...s, vm };
}

describe("long-poll: credentials", () => {
  it("poll and send without a node credential are 401, with a refused one 401 credential_invalid", async () => {
    await expectError(await post("/agent/poll", {}, null), 401, "unauthorized");
    await expectError(await post("/agent/send", { connId: "x", messages: [{}] }, null), 401, "unauthorized");
    await expectError(await post("/agent/poll", {}, "qxn_not-a-real-credential"), 401, "credential_invalid");
    await expectError(await post("/agent/poll", {}, "test-admin-token"), 401, "unauthorized");
    // the credential is checked before the body: a bad body without one is still a 401
    await expectError(await post("/agent/send", "not json", null), 401);
  });

  it("another node's credential cannot touch this node's link", async () => {
    const { agent, nodeId, vm } = await pollNodeWithVm();
    const other = await PollAgent.forNewNode();
    // The other node's session knows no such link: 410, and nothing reached this node's session.
    await expectError(
      await post("/agent/poll", { connId: agent.connId, waitMs: 0 }, other.credential),
      410,
      "link_closed",
    );
    const forged = vmInfo("forged", "shutoff", vm.uuid);
    const change = { type: "vm.changed", id: "c1", payload: { vms: [forged], removed: [] } };
    await expectError(
      await post("/agent/send", { connId: agent.connId, messages: [change] }, other.credential),
      410,
      "link_closed",
    );
    expect((await json(await api(`/api/vms/${vm.uuid}`))).vm).toMatchObject({
      name: vm.name,
      state: "RUNNING",
      node_id: nodeId,
    });
    expect(await session(nodeId).stats()).toMatchObject({ connected: true, transport: "poll" });
    expect((await agent.pollOk(0)).length).toBe(0); // the owner's link is untouched
  });
});

describe("long-poll: the link", () => {
  it("the first poll opens a connection answered with welcome (its id is the connId); the node is online", async () => {
    const { joinToken } = await createNode(unique("poll-node"));
    const { nodeId, credential } = await enroll(joinToken);
    const started = Date.now();
    const { agent, welcome } = await PollAgent.open(credential);
    expect(Date.now() - started).toBeLessThan(2000); // answered at once, not after a wait
    expect(welcome).toMatchObject({ type: "welcome", id: agent.connId, payload: { nodeId } });
    expect(welcome.payload.serverTime).toBeGreaterThan(started - 5000);
    expect(welcome.payload.reconnectSpreadMs).toBeGreaterThanOrEqual(1000); // sized to the fleet, as on the socket
    expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(true);
    expect(await session(nodeId).stats()).toMatchObject({ connected: true, transport: "poll" });
  });

  it("an idle poll is held for its wait and answered empty", async () => {
    const { agent } = await PollAgent.forNewNode();
    const started = Date.now();
    expect(await agent.pollOk(600)).toEqual([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
  });

  it("a command dispatched while the agent polls comes with that poll; its result by send settles the request", async () => {
    const { agent, vm, nodeId } = await pollNodeWithVm("running");
    const held = agent.pollOk(4000);
    await sleep(100);
    const reset = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    const started = Date.now();
    const frames = await held;
    expect(Date.now() - started).toBeLessThan(3000); // the held poll was answered by the command
    const cmd = frames.find((f) => f.type === "vm.state")!;
    expect(cmd.payload).toMatchObject({ vmId: vm.uuid, name: vm.name });
    await agent.sendOk({
      type: "result",
      id: cmd.id,
      payload: { state: "STOPPED", libvirtState: "shutoff", logExcerpt: "guest shut down\n" },
    });
    const body = await json(await reset);
    expect(body).toMatchObject({ success: true, source: "hypervisor", vm: { id: vm.uuid, state: "STOPPED" } });
    expect((await session(nodeId).stats()).inFlight).toBe(0);
    const events = (await json(await api(`/api/vms/${vm.uuid}/events`))).events;
    expect(events[0]).toMatchObject({ source: "hypervisor", logExcerpt: "guest shut down\n" });
  });

  it("a power action and a chunked log answer over poll + send, in order", async () => {
    const { agent, vm } = await pollNodeWithVm("shutoff");
    const start = await json(await api(`/api/vms/${vm.uuid}/start`, { method: "POST" }), 202);
    const cmd = await agent.next("vm.start");
    expect(cmd.id).toBe(start.request.id);
    await agent.sendOk(
      { type: "ack", id: cmd.id, payload: {} },
      { type: "result", id: cmd.id, payload: { state: "RUNNING", libvirtState: "running" } },
    );
    await eventually(async () =>
      expect((await json(await api(`/api/requests/${cmd.id}`))).request.status).toBe("done"),
    );
    expect((await json(await api(`/api/vms/${vm.uuid}`))).vm.state).toBe("RUNNING");

    const logs = api(`/api/vms/${vm.uuid}/logs?lines=3`);
    const q = await agent.next("vm.logs");
    await agent.sendOk(
      { type: "log.chunk", id: q.id, payload: { seq: 0, text: "one\ntwo\n" } },
      { type: "log.chunk", id: q.id, payload: { seq: 1, text: "three\n" } },
      {
        type: "result",
        id: q.id,
        payload: {
          logPath: "/l/vm.log",
          logSizeBytes: 14,
          linesReturned: 3,
          truncated: false,
          lastModified: null,
          chunks: 2,
        },
      },
    );
    expect(await json(await logs)).toMatchObject({ qemuLog: "one\ntwo\nthree\n", linesReturned: 3 });
  });

  it("an answer lost on the way is handed out again until a poll's cursor says it arrived", async () => {
    const { agent, vm } = await pollNodeWithVm("running");
    const logs = api(`/api/vms/${vm.uuid}/logs?lines=1`);
    const before = agent.cursor;
    const cmd = await agent.next("vm.logs");
    // Pretend that answer never reached the agent: poll again with the cursor from before it.
    const again = await json<{ messages: Frame[]; cursor: string }>(
      await post("/agent/poll", { connId: agent.connId, cursor: before, waitMs: 0 }, agent.credential),
    );
    expect(again.messages.map((f) => f.id)).toContain(cmd.id);
    // With the newer cursor it is not handed out a third time.
    agent.cursor = again.cursor;
    expect(await agent.pollOk(0)).toEqual([]);
    await agent.sendOk({
      type: "result",
      id: cmd.id,
      payload: { logPath: "/l", logSizeBytes: 0, linesReturned: 0, truncated: false, lastModified: null, chunks: 0 },
    });
    expect((await json(await logs)).linesReturned).toBe(0);
  });

  it("a newer poll link replaces the older: its held poll and later uses get 409 link_replaced; unknown ids 410", async () => {
    const { agent, credential, nodeId } = await PollAgent.forNewNode();
    const held = agent.poll(4000);
    await sleep(100);
    const { agent: second } = await PollAgent.open(credential);
    const err = await expectError(await held, 409, "link_replaced");
    expect(err.message).toMatch(/replaced/);
    await expectError(await agent.poll(0), 409, "link_replaced");
    await expectError(await agent.send({ type: "ack", id: "x", payload: {} }), 409, "link_replaced");
    await expectError(await post("/agent/poll", { connId: crypto.randomUUID() }, credential), 410, "link_closed");
    expect((await second.pollOk(0)).length).toBe(0);
    expect((await session(nodeId).stats()).connected).toBe(true);
  });

  it("a socket replaces a poll link (held poll told 409), and a poll link replaces a socket (CLOSE.replaced)", async () => {
    const { agent, credential, nodeId, vm } = await pollNodeWithVm("running");
    const held = agent.poll(4000);
    await sleep(100);
    const socket = await TestAgent.connect(credential);
    sockets.push(socket);
    await expectError(await held, 409, "link_replaced");
    expect(await session(nodeId).stats()).toMatchObject({ connected: true, transport: "socket" });
    const logs = api(`/api/vms/${vm.uuid}/logs?lines=1`);
    const cmd = await socket.next("vm.logs");
    socket.reply(cmd, "result", {
      logPath: "/l",
      logSizeBytes: 0,
      linesReturned: 0,
      truncated: false,
      lastModified: null,
      chunks: 0,
    });
    expect((await json(await logs)).linesReturned).toBe(0);

    // What was in flight on the socket fails when a poll link takes over.
    const pending = api(`/api/vms/${vm.uuid}/logs?lines=2`);
    await socket.next("vm.logs");
    const { agent: polled } = await PollAgent.open(credential);
    expect((await socket.waitClosed()).code).toBe(CLOSE.replaced);
    expect((await pending).status).toBeGreaterThanOrEqual(500);
    expect(await session(nodeId).stats()).toMatchObject({ connected: true, transport: "poll", inFlight: 0 });
    const state = api(`/api/vms/${vm.uuid}/reset_state`, { method: "POST" });
    const q = await polled.next("vm.state");
    await polled.sendOk({ type: "result", id: q.id, payload: { state: "RUNNING", libvirtState: "running" } });
    expect((await json(await state)).source).toBe("hypervisor");
  });

  it("a link that stops polling is gone after OFFLINE_AFTER_MS: node offline, viewers told, its id refused", async () => {
    const { agent, vm, nodeId } = await pollNodeWithVm("running");
    const viewer = await FollowViewer.open(vm.uuid);
    const follow = await agent.next("vm.logs.follow");
    await agent.sendOk({ type: "ack", id: follow.id, payload: {} });
    await viewer.received(1);
    expect(viewer.messages[0]).toEqual({ type: "status", status: "following" });
    // Silence: no poll, no send. OFFLINE_AFTER_MS is 4 s in tests.
    await eventually(
      async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false),
      10_000,
    );
    expect((await viewer.waitClosed()).code).toBe(4503);
    expect(viewer.messages.at(-1)).toEqual({ type: "status", status: "node_offline" });
    expect(await session(nodeId).stats()).toMatchObject({ connected: false, transport: null, inFlight: 0 });
    const err = await expectError(await agent.poll(0), 410, "link_closed");
    expect(err.message).toMatch(/no sign of life/);
    await expectError(await api(`/api/vms/${vm.uuid}/logs?lines=1`), 503, "node_offline");
  }, 20_000);

  it("a held poll is a sign of life: a link that keeps polling stays online past OFFLINE_AFTER_MS", async () => {
    const { agent, nodeId } = await PollAgent.forNewNode();
    const until = Date.now() + 5_500;
    while (Date.now() < until) await agent.pollOk(2_000);
    expect(await session(nodeId).stats()).toMatchObject({ connected: true, transport: "poll" });
    expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(true);
  }, 20_000);

  it("a rotated credential ends the link: the held poll is answered 401", async () => {
    const { agent, nodeId } = await PollAgent.forNewNode();
    const held = agent.poll(4000);
    await sleep(100);
    await json(await api(`/api/nodes/${nodeId}/rotate_token`, { method: "POST" }));
    await expectError(await held, 401, "credential_invalid");
    await expectError(await agent.poll(0), 401, "credential_invalid");
  });
});

describe("long-poll: bad requests are 4xx JSON, never a 500", () => {
  it("poll bodies", async () => {
    const { agent } = await PollAgent.forNewNode();
    const bad: unknown[] = [
      "not json",
      "[]",
      "null",
      { connId: 42 },
      { connId: "" },
      { waitMs: -1 },
      { waitMs: 1.5 },
      { waitMs: "10" },
      { cursor: "x".repeat(81) },
    ];
    for (const body of bad) {
      const err = await expectError(await post("/agent/poll", body, agent.credential), 400);
      expect(err.code).toBe("invalid_request");
    }
    expect((await agent.pollOk(0)).length).toBe(0); // the link survived all of that
  });

  it("send bodies: each refusal names what was wrong, and nothing of a refused batch is handled", async () => {
    const { agent, nodeId } = await pollNodeWithVm();
    const ack = { type: "ack", id: "a1", payload: {} };
    const cases: [unknown, RegExp][] = [
      ["{", /body|JSON/i],
      [{ messages: [ack] }, /connId/],
      [{ connId: agent.connId }, /messages/],
      [{ connId: agent.connId, messages: [] }, /messages/],
      [{ connId: agent.connId, messages: Array(MAX_SEND_MESSAGES + 1).fill(ack) }, /messages/],
      [{ connId: agent.connId, messages: [ack, { type: "nope", id: "x", payload: {} }] }, /messages\[1\]/],
      [
        {
          connId: agent.connId,
          messages: [{ type: "inventory", id: "i", payload: { syncId: "s", seq: -1, done: true, vms: [] } }],
        },
        /messages\[0\]\.payload\.seq/,
      ],
      [{ connId: agent.connId, messages: ['{"type":"ack"}'] }, /messages\[0\]/],
      [
        {
          connId: agent.connId,
          messages: [{ type: "vm.changed", id: "c", payload: { vms: [{ uuid: "x" }], removed: [] } }],
        },
        /messages\[0\]\.payload\.vms/,
      ],
    ];
    for (const [body, names] of cases) {
      const err = await expectError(await post("/agent/send", body, agent.credential), 400, "invalid_request");
      expect(err.message).toMatch(names);
    }
    expect((await session(nodeId).stats()).ignoredAnswers).toBe(0); // the good acks of refused batches were not handled
    expect((await agent.pollOk(0)).length).toBe(0); // and the link is still up
  });

  it("a send body over 1 MiB is 413; just under goes through", async () => {
    const { agent } = await PollAgent.forNewNode();
    const big = { type: "log.append", id: "f", payload: { seq: 0, text: "x".repeat(200 * 1024) } };
    await expectError(await agent.send(...Array(6).fill(big)), 413, "payload_too_large");
    expect((await agent.send(...Array(4).fill(big))).status).toBe(200);
  });

  it("a flood of sent frames ends the link like a socket's CLOSE.flood", async () => {
    const { agent, nodeId } = await PollAgent.forNewNode();
    const ping = { type: "vm.changed", id: "c", payload: { vms: [], removed: [] } };
    // FLOOD_FRAMES_PER_SECOND is 50 in tests (burst 100): three full batches at once exceed it.
    const answers = await Promise.all([
      agent.send(...Array(64).fill(ping)),
      agent.send(...Array(64).fill(ping)),
      agent.send(...Array(64).fill(ping)),
    ]);
    expect(answers.some((r) => r.status === 410)).toBe(true);
    for (const r of answers) expect([200, 410]).toContain(r.status);
    const err = await expectError(await agent.poll(0), 410, "link_closed");
    expect(err.message).toMatch(/too many frames/);
    expect((await session(nodeId).stats()).connected).toBe(false);
  });
});

describe("long-poll: consoles", () => {
  it("a console needs the WebSocket link: its ticket is refused with 409 needs_websocket", async () => {
    const { vm } = await pollNodeWithVm();
    await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
    const err = await expectError(
      await api(`/api/vms/${vm.uuid}/console`, { json: { mode: "rw" } }),
      409,
      "needs_websocket",
    );
    expect(err.message).toContain("long-poll");
  });
});
