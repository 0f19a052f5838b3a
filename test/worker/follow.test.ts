// Live follow relay: `GET /api/vms/:id/logs/follow` (WebSocket, token as the `bearer.<token>`
// subprotocol, answered with `qx.follow.v1`) through the node's NodeSession, which holds one agent
// follow per VM (`vm.logs.follow` / `vm.logs.unfollow`) shared by all its viewers and relays
// `log.append` as {type: "append" | "status" | "error"}. The agent side is TestAgent.
import { evictDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import {
  agentsClosedAfterEach,
  api,
  createToken,
  eventually,
  expectError,
  FollowViewer,
  json,
  TestAgent,
  uuid,
  vmInfo,
  session,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const viewers: FollowViewer[] = [];
afterEach(() => {
  for (const v of viewers.splice(0)) v.close();
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function nodeWithVm() {
  const s = await TestAgent.forNewNode();
  agents.push(s.agent);
  const vm = vmInfo(`fl-${s.name}`);
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { ...s, vm };
}
async function view(vmId: string, token?: string, how?: "subprotocol" | "header") {
  const v = await FollowViewer.open(vmId, token, how);
  viewers.push(v);
  return v;
}
const append = (agent: TestAgent, followId: string, seq: number, text: string, event?: string) =>
  agent.send({ type: "log.append", id: followId, payload: { seq, text, ...(event ? { event } : {}) } });

describe("live follow", () => {
  it("an operator's socket starts one agent follow; ack -> following; appends and file events are relayed in order", async () => {
    const { agent, vm } = await nodeWithVm();
    const viewer = await view(vm.uuid, await createToken("operator"));
    expect(viewer.protocol).toBe("qx.follow.v1");
    const follow = await agent.next("vm.logs.follow");
    expect(follow.payload).toMatchObject({ vmId: vm.uuid, name: vm.name });
    expect(follow.payload.deadline).toBeGreaterThan(Date.now());
    agent.reply(follow, "ack");
    append(agent, follow.id, 0, "boot 1\n");
    append(agent, follow.id, 1, "after rotation\n", "rotated");
    append(agent, follow.id, 2, "", "truncated");
    expect(await viewer.received(5)).toEqual([
      { type: "status", status: "following" },
      { type: "append", text: "boot 1\n" },
      { type: "status", status: "rotated" },
      { type: "append", text: "after rotation\n" },
      { type: "status", status: "truncated" },
    ]);
  });

  it("viewers of one VM share the agent follow; the last one leaving sends vm.logs.unfollow", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await view(vm.uuid);
    const follow = await agent.next("vm.logs.follow");
    agent.reply(follow, "ack");
    await a.received(1);
    const b = await view(vm.uuid, await createToken("operator"), "header"); // a CLI sends the token as a header
    expect(b.protocol).toBeNull(); // it offered no subprotocol, so none is answered
    expect(await b.received(1)).toEqual([{ type: "status", status: "following" }]);
    append(agent, follow.id, 0, "shared line\n");
    expect((await a.received(2))[1]).toEqual({ type: "append", text: "shared line\n" });
    expect((await b.received(2))[1]).toEqual({ type: "append", text: "shared line\n" });
    expect(agent.frames.filter((f) => f.type === "vm.logs.follow")).toHaveLength(0);
    a.close();
    await sleep(150);
    expect(agent.frames.filter((f) => f.type === "vm.logs.unfollow")).toHaveLength(0);
    b.close();
    const unfollow = await agent.next("vm.logs.unfollow");
    expect(unfollow.id).toBe(follow.id);
    // A new viewer later starts a new follow.
    await view(vm.uuid);
    expect((await agent.next("vm.logs.follow")).id).not.toBe(follow.id);
  });

  it("the agent dropping: status node_offline, then close 4503; a viewer arriving while offline gets the same", async () => {
    const { agent, vm, nodeId } = await nodeWithVm();
    const viewer = await view(vm.uuid);
    agent.reply(await agent.next("vm.logs.follow"), "ack");
    await viewer.received(1);
    agent.ws.close(1000, "gone");
    expect((await viewer.waitClosed()).code).toBe(4503);
    expect(viewer.messages.at(-1)).toEqual({ type: "status", status: "node_offline" });
    await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
    const late = await view(vm.uuid);
    expect((await late.waitClosed()).code).toBe(4503);
    expect(late.messages).toEqual([{ type: "status", status: "node_offline" }]);
  });

  it("an agent error ends the follow with {type:'error'}; no ack in time ends it with agent_timeout", async () => {
    const { agent, vm } = await nodeWithVm();
    let viewer = await view(vm.uuid);
    agent.reply(await agent.next("vm.logs.follow"), "error", {
      code: "not_allowed",
      message: "follow is not supported by this agent",
    });
    await viewer.waitClosed();
    expect(viewer.messages).toEqual([
      { type: "error", code: "not_allowed", message: expect.stringContaining("not supported") },
    ]);

    viewer = await view(vm.uuid);
    const follow = await agent.next("vm.logs.follow"); // never acknowledged
    await viewer.waitClosed(4000);
    expect(viewer.messages).toEqual([{ type: "error", code: "agent_timeout", message: expect.any(String) }]);
    expect((await agent.next("vm.logs.unfollow")).id).toBe(follow.id);
  });

  it("survives the session's eviction (viewer sockets tagged, follows in storage), and a replacing agent connection resumes the follow", async () => {
    const { agent, vm, nodeId, credential } = await nodeWithVm();
    const viewer = await view(vm.uuid);
    const follow = await agent.next("vm.logs.follow");
    agent.reply(follow, "ack");
    await viewer.received(1);
    await evictDurableObject(session(nodeId));
    append(agent, follow.id, 0, "after wake\n");
    expect((await viewer.received(2))[1]).toEqual({ type: "append", text: "after wake\n" });

    const next = await TestAgent.connect(credential);
    agents.push(next);
    const again = await next.next("vm.logs.follow");
    expect(again.payload.vmId).toBe(vm.uuid);
    next.reply(again, "ack");
    append(next, again.id, 0, "on the new link\n");
    expect((await viewer.received(4)).slice(2)).toEqual([
      { type: "status", status: "following" },
      { type: "append", text: "on the new link\n" },
    ]);
    expect(viewer.closed).toBeNull();
  });

  it("appends for a follow nobody watches are ignored and answered with vm.logs.unfollow", async () => {
    const { agent } = await nodeWithVm();
    append(agent, "stray-follow", 0, "nobody asked\n");
    expect((await agent.next("vm.logs.unfollow")).id).toBe("stray-follow");
  });

  it("refusals before the upgrade: 401 without a token, 403 for a viewer, 404/409, and over plain HTTP 426 or 503 node_offline", async () => {
    const { agent, vm, nodeId } = await nodeWithVm();
    await expectError(await FollowViewer.request(vm.uuid, null), 401, "unauthorized");
    await expectError(await FollowViewer.request(vm.uuid, "qxa_not-a-real-token"), 401, "unauthorized");
    await expectError(await FollowViewer.request(vm.uuid, await createToken("viewer")), 403, "forbidden");
    await expectError(await FollowViewer.request(uuid()), 404, "not_found");
    // The subprotocol carries a token only on a WebSocket upgrade offering qx.follow.v1.
    await expectError(
      await api(`/api/vms/${vm.uuid}`, {
        token: null,
        headers: { "sec-websocket-protocol": "qx.follow.v1, bearer.test-admin-token" },
      }),
      401,
    );
    await expectError(await api(`/api/vms/${vm.uuid}/logs/follow`), 426, "upgrade_required");
    agent.ws.close(1000, "bye");
    await eventually(async () => expect((await json(await api(`/api/nodes/${nodeId}`))).node.connected).toBe(false));
    await expectError(await api(`/api/vms/${vm.uuid}/logs/follow`), 503, "node_offline");
    await json(await api(`/api/nodes/${nodeId}`, { method: "DELETE" }));
    await expectError(await api(`/api/vms/${vm.uuid}/logs/follow`), 409, "vm_not_on_node");
  });
});
