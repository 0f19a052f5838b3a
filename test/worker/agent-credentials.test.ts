// What a node credential can and cannot do on /agent/*: the headers of its upgrade are rebuilt by
// the Worker, so it cannot pass as a dashboard's log follow (or as another node); a rotated or
// deleted node's link ends at once; connects and polls are rate limited per node.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CLOSE } from "../../protocol/wire.ts";
import { FOLLOW_HEADERS, NODE_ID_HEADER } from "../../worker/session/headers.ts";
import {
  agentsClosedAfterEach,
  api,
  BASE,
  eventually,
  expectError,
  FollowViewer,
  json,
  TestAgent,
  vmInfo,
  type Frame,
  session,
} from "./support.ts";

const agents = agentsClosedAfterEach();

function connect(credential: string, extra: Record<string, string> = {}): Promise<Response> {
  return SELF.fetch(`${BASE}/agent/connect`, {
    headers: { upgrade: "websocket", authorization: `Bearer ${credential}`, ...extra },
  });
}

function poll(credential: string, body: Record<string, unknown> = {}): Promise<Response> {
  return SELF.fetch(`${BASE}/agent/poll`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${credential}` },
    body: JSON.stringify(body),
  });
}

/** The frames a raw accepted socket receives. */
function frames(ws: WebSocket): { list: Frame[]; closed: { code: number } | null } {
  const seen = { list: [] as Frame[], closed: null as { code: number } | null };
  ws.addEventListener("message", (e) => seen.list.push(JSON.parse(e.data as string)));
  ws.addEventListener("close", (e) => (seen.closed = { code: e.code }));
  return seen;
}

async function nodeWithVm() {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  const vm = vmInfo(`ident-${s.name}`, "running");
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { ...s, vm };
}

describe("a node credential cannot smuggle the session's headers", () => {
  it("an upgrade carrying the follow headers is an agent link of its own node: no viewer socket, no follow started", async () => {
    const { agent, vm, nodeId, credential } = await nodeWithVm();
    const other = await nodeWithVm();
    const res = await connect(credential, {
      [FOLLOW_HEADERS.vmId]: vm.uuid,
      [FOLLOW_HEADERS.vmName]: vm.name,
      [FOLLOW_HEADERS.nodeId]: nodeId,
      [FOLLOW_HEADERS.subprotocol]: "qx.follow.v1",
      [NODE_ID_HEADER]: other.nodeId,
      "sec-websocket-protocol": `qx.follow.v1, bearer.${credential}`,
    });
    expect(res.status).toBe(101);
    // A viewer would get no subprotocol echo here and a follow status; an agent link gets its welcome.
    expect(res.headers.get("sec-websocket-protocol")).toBeNull();
    const ws = res.webSocket!;
    ws.accept();
    const seen = frames(ws);
    await eventually(async () => expect(seen.list.length).toBeGreaterThan(0));
    expect(seen.list[0]).toMatchObject({ type: "welcome", payload: { nodeId } });
    expect(seen.list.some((f: any) => f.type === "status" || f.type === "append")).toBe(false);
    // It replaced the real agent's link (as any connect with this credential does), and the real
    // agent was never asked to follow the VM's log.
    expect((await agent.waitClosed()).code).toBe(CLOSE.replaced);
    expect(agent.frames.some((f) => f.type === "vm.logs.follow")).toBe(false);
    // The other node's link is untouched.
    expect(await session(other.nodeId).stats()).toMatchObject({ connected: true });
    ws.close(1000, "done");
  });

  it("the dashboard's live follow still works after a smuggling attempt", async () => {
    const { vm, credential } = await nodeWithVm();
    const attempt = await connect(credential, { [FOLLOW_HEADERS.vmId]: vm.uuid, [FOLLOW_HEADERS.vmName]: vm.name });
    attempt.webSocket!.accept();
    attempt.webSocket!.close(1000, "done");
    const agent = await TestAgent.connect(credential);
    agents.push(agent);
    const viewer = await FollowViewer.open(vm.uuid);
    const follow = await agent.next("vm.logs.follow");
    expect(follow.payload).toMatchObject({ vmId: vm.uuid, name: vm.name });
    agent.reply(follow, "ack");
    agent.send({ type: "log.append", id: follow.id, payload: { seq: 0, text: "still following\n" } });
    await viewer.received(2);
    expect(viewer.messages).toContainEqual({ type: "append", text: "still following\n" });
    viewer.close();
  });
});

describe("revocation of a node credential", () => {
  for (const how of ["rotate", "delete"] as const) {
    it(`${how}: the live socket is closed before the answer, and the credential is refused from the next request on`, async () => {
      const { agent, nodeId, credential } = await nodeWithVm();
      const started = performance.now();
      const res =
        how === "rotate"
          ? await api(`/api/nodes/${nodeId}/rotate_token`, { method: "POST" })
          : await api(`/api/nodes/${nodeId}`, { method: "DELETE" });
      const answered = performance.now();
      expect(res.status).toBe(200);
      await expectError(await connect(credential), 401);
      await expectError(await poll(credential), 401);
      const closed = await agent.waitClosed();
      const closedAt = performance.now();
      expect(closed.code).toBe(how === "rotate" ? CLOSE.unauthorized : CLOSE.nodeDeleted);
      expect(await session(nodeId).stats()).toMatchObject({ connected: false });
      console.log(
        `node credential ${how}: answer after ${(answered - started).toFixed(1)} ms, agent socket closed ${(closedAt - answered).toFixed(1)} ms after the answer; next connect and poll refused`,
      );
    });
  }

  it("a held long-poll ends with 401 when its node is rotated", async () => {
    const { nodeId, credential } = await nodeWithVm();
    const opened = await json(await poll(credential));
    const held = poll(credential, { connId: opened.connId, cursor: opened.cursor, waitMs: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    await json(await api(`/api/nodes/${nodeId}/rotate_token`, { method: "POST" }));
    await expectError(await held, 401, "credential_invalid");
  });
});

describe("rate limits on the agent links, per node", () => {
  // The local limiter counts in fixed 60 s windows: up to twice the limit, for a window boundary mid-run.
  async function firstRefused(n: number, call: () => Promise<Response>): Promise<{ at: number; res: Response }> {
    const seen: Record<number, number> = {};
    for (let i = 0; i < n; i++) {
      const res = await call();
      if (res.status === 429) return { at: i, res };
      seen[res.status] = (seen[res.status] ?? 0) + 1;
      res.webSocket?.accept();
      res.webSocket?.close(1000, "next");
      await res.arrayBuffer();
    }
    throw new Error(`no 429 in ${n} calls: ${JSON.stringify(seen)}`);
  }

  it("/agent/connect: 60 a minute per node, then 429 with Retry-After; another node unaffected", async () => {
    const { credential } = await nodeWithVm();
    const other = await nodeWithVm();
    const { at, res } = await firstRefused(130, () => connect(credential));
    expect(at).toBeGreaterThanOrEqual(59);
    expect(res.headers.get("retry-after")).toBeTruthy();
    await expectError(res, 429, "rate_limited");
    const ok = await connect(other.credential);
    expect(ok.status).toBe(101);
    ok.webSocket!.accept();
    ok.webSocket!.close(1000, "done");
  }, 60_000);

  it("/agent/poll: 600 a minute per node, then 429 with Retry-After", async () => {
    const { credential } = await nodeWithVm();
    const opened = await json(await poll(credential));
    const { at, res } = await firstRefused(1300, () => poll(credential, { connId: opened.connId, waitMs: 0 }));
    expect(at).toBeGreaterThanOrEqual(598);
    expect(res.headers.get("retry-after")).toBeTruthy();
    await expectError(res, 429, "rate_limited");
  }, 120_000);
});
