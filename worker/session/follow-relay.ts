// Live log follows: dashboard sockets ("viewers") of one VM's log share one agent follow (`tail -F`)
// per VM, started by the first viewer and stopped after the last one leaves.
import { FOLLOW_CLOSE_NODE_OFFLINE, FOLLOW_CLOSE_REVOKED, type FollowMessage } from "../../protocol/api.ts";
import { CLOSE, type AgentMessage } from "../../protocol/wire.ts";
import type { SessionSettings } from "../config.ts";
import { FOLLOW_HEADERS } from "./headers.ts";
import type { AgentLink, AgentLinks } from "./links.ts";
import type { Follow, SessionStore } from "./store.ts";

/** A dashboard socket following one VM's log; tagged `vm:<id>` so its VM's viewers are found after a wake. */
type ViewerAttachment = { kind: "viewer"; vmId: string };
type AppendPayload = Extract<AgentMessage, { type: "log.append" }>["payload"];
type ErrorPayload = Extract<AgentMessage, { type: "error" }>["payload"];

const VIEWER_TAG = "viewer";
const vmTag = (vmId: string) => `vm:${vmId}`;
const tokenTag = (tokenId: string) => `token:${tokenId}`;
/** Viewers per node at once: bounds the fan-out a node's session does per appended chunk. */
const MAX_VIEWERS = 200;

export class FollowRelay {
  private readonly ctx: DurableObjectState;
  private readonly store: SessionStore;
  private readonly links: AgentLinks;
  private readonly limits: SessionSettings;
  private readonly armAlarm: () => Promise<void>;

  constructor(
    ctx: DurableObjectState,
    store: SessionStore,
    links: AgentLinks,
    limits: SessionSettings,
    armAlarm: () => Promise<void>,
  ) {
    this.ctx = ctx;
    this.store = store;
    this.links = links;
    this.limits = limits;
    this.armAlarm = armAlarm;
  }

  viewerOf(ws: WebSocket): ViewerAttachment | null {
    // Attachments are written only by this object, so their shape is known.
    const att = ws.deserializeAttachment() as ViewerAttachment | { kind?: "agent" } | null;
    return att && att.kind === "viewer" ? att : null;
  }

  private follows(): Follow[] {
    return this.store.all("follow");
  }

  private byId(id: string): Follow | null {
    return this.follows().find((f) => f.followId === id) ?? null;
  }

  private viewers(vmId: string): WebSocket[] {
    return this.ctx.getWebSockets(vmTag(vmId)).filter((ws) => ws.readyState === WebSocket.OPEN);
  }

  earliestDeadline(): number {
    let due = Infinity;
    for (const f of this.follows()) if (!f.acked) due = Math.min(due, f.ackDeadline);
    return due;
  }

  private broadcast(vmId: string, message: FollowMessage): void {
    const text = JSON.stringify(message);
    for (const ws of this.viewers(vmId)) {
      try {
        ws.send(text);
      } catch {
        // that viewer is going; its close event cleans up
      }
    }
  }

  /** A dashboard socket for one VM's log: joins the VM's follow, starting it on the agent if needed. */
  async acceptViewer(request: Request): Promise<Response> {
    const vmId = request.headers.get(FOLLOW_HEADERS.vmId) ?? "";
    const name = request.headers.get(FOLLOW_HEADERS.vmName) ?? "";
    const subprotocol = request.headers.get(FOLLOW_HEADERS.subprotocol);
    const tokenId = request.headers.get(FOLLOW_HEADERS.tokenId);
    if (this.ctx.getWebSockets(VIEWER_TAG).length >= MAX_VIEWERS) {
      return Response.json(
        {
          success: false,
          error: { code: "too_many_viewers", message: `at most ${MAX_VIEWERS} live log viewers per node` },
        },
        { status: 429, headers: { "Retry-After": "30" } },
      );
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [VIEWER_TAG, vmTag(vmId), ...(tokenId ? [tokenTag(tokenId)] : [])]);
    const att: ViewerAttachment = { kind: "viewer", vmId };
    server.serializeAttachment(att);
    const current = this.links.current();
    if (!current) {
      server.send(JSON.stringify({ type: "status", status: "node_offline" } satisfies FollowMessage));
      server.close(FOLLOW_CLOSE_NODE_OFFLINE, "node offline");
    } else {
      const follow = this.store.entry("follow", vmId);
      if (!follow || follow.connId !== current.att.connId) this.start(current, vmId, name);
      else if (follow.acked)
        server.send(JSON.stringify({ type: "status", status: "following" } satisfies FollowMessage));
      await this.armAlarm();
    }
    return new Response(null, {
      status: 101,
      webSocket: client,
      headers: subprotocol ? { "Sec-WebSocket-Protocol": subprotocol } : {},
    });
  }

  /** A new agent link: viewers that outlived the old one keep following on it. */
  resumeOn(link: AgentLink): void {
    for (const f of this.follows()) {
      if (this.viewers(f.vmId).length) this.start(link, f.vmId, f.name);
      else this.store.deleteEntry("follow", f.vmId);
    }
  }

  /** Asks the agent to follow the VM's log (`tail -F`); one follow per VM, whoever watches. */
  private start(current: AgentLink, vmId: string, name: string): void {
    const now = Date.now();
    const follow: Follow = {
      followId: crypto.randomUUID(),
      vmId,
      name,
      connId: current.att.connId,
      acked: false,
      ackDeadline: now + this.limits.queryMs,
    };
    this.store.putEntry("follow", vmId, follow);
    try {
      current.send({
        type: "vm.logs.follow",
        id: follow.followId,
        payload: { vmId, name, deadline: follow.ackDeadline },
      });
    } catch {
      // the agent socket is closing: its close event tells the viewers node_offline
    }
  }

  /** The agent's ack of a follow; false if `id` is no follow (then it is a request's). */
  onAck(id: string): boolean {
    const follow = this.byId(id);
    if (!follow) return false;
    this.following(follow);
    return true;
  }

  /** New text of a followed log; false if nobody follows it any more. */
  onAppend(id: string, payload: AppendPayload): boolean {
    const follow = this.byId(id);
    if (!follow) return false;
    if (!follow.acked) this.following(follow);
    if (payload.event) this.broadcast(follow.vmId, { type: "status", status: payload.event });
    if (payload.text) this.broadcast(follow.vmId, { type: "append", text: payload.text });
    return true;
  }

  /** The agent cannot follow; false if `id` is no follow. */
  onError(id: string, payload: ErrorPayload): boolean {
    const follow = this.byId(id);
    if (!follow) return false;
    this.end(
      follow,
      { type: "error", code: payload.code, message: `the agent cannot follow this log: ${payload.message}` },
      CLOSE.normal,
      "follow failed",
      false,
    );
    return true;
  }

  private following(follow: Follow): void {
    if (follow.acked) return;
    this.store.putEntry("follow", follow.vmId, { ...follow, acked: true });
    this.broadcast(follow.vmId, { type: "status", status: "following" });
  }

  /** Ends the follows whose agent did not start them in time. */
  expireDue(now: number): void {
    for (const f of this.follows()) {
      if (f.acked || f.ackDeadline > now) continue;
      this.end(
        f,
        { type: "error", code: "agent_timeout", message: "the agent did not start following the log in time" },
        CLOSE.normal,
        "follow failed",
        true,
      );
    }
  }

  /** The agent is gone: every viewer is told, then closed (it retries later). */
  nodeOffline(): void {
    for (const f of this.follows())
      this.end(f, { type: "status", status: "node_offline" }, FOLLOW_CLOSE_NODE_OFFLINE, "node offline", false);
  }

  /** Ends a VM's follow for all its viewers: a last message, then their sockets close. */
  private end(follow: Follow, last: FollowMessage, code: number, reason: string, tellAgent: boolean): void {
    this.store.deleteEntry("follow", follow.vmId);
    for (const ws of this.viewers(follow.vmId)) {
      try {
        ws.send(JSON.stringify(last));
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
    if (tellAgent) this.unfollow(follow);
  }

  private unfollow(follow: Follow): void {
    if (!this.links.isCurrent(follow.connId)) return; // that connection is gone, and its follows with it
    try {
      this.links.current()?.send({ type: "vm.logs.unfollow", id: follow.followId, payload: {} });
    } catch {
      // closing: the follow ends with the connection
    }
  }

  /** A viewer left: the last one of a VM ends its agent follow. */
  async viewerGone(ws: WebSocket, vmId: string): Promise<void> {
    try {
      ws.close(CLOSE.normal, "bye");
    } catch {
      // the runtime already answered the close
    }
    if (this.viewers(vmId).some((other) => other !== ws)) return;
    const follow = this.store.entry("follow", vmId);
    if (!follow) return;
    this.store.deleteEntry("follow", vmId);
    this.unfollow(follow);
    await this.armAlarm();
  }

  /** The token these follows were opened with was revoked: each is told so and closed. */
  async closeFollowsOf(tokenId: string): Promise<number> {
    const sockets = this.ctx.getWebSockets(tokenTag(tokenId));
    const revoked: FollowMessage = {
      type: "error",
      code: "token_revoked",
      message: "the token this follow was opened with was revoked",
    };
    for (const ws of sockets) {
      const viewer = this.viewerOf(ws);
      try {
        ws.send(JSON.stringify(revoked));
        ws.close(FOLLOW_CLOSE_REVOKED, "token revoked");
      } catch {
        // closing already
      }
      if (viewer) await this.viewerGone(ws, viewer.vmId);
    }
    return sockets.length;
  }
}
