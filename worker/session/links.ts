// The agent's link to its node's session, a WebSocket (Hibernation API) or a long-poll over plain
// HTTPS, behind one interface: all that dispatch, settle, the follow relay, the reconciler and
// liveness know of it. Also which link is current, replacing one, and how an ended poll link answers.
import { CLOSE, HEARTBEAT_MS, type ServerMessage } from "../../protocol/wire.ts";
import { PollOutbox, type LinkEnded } from "./poll-outbox.ts";
import type { AgentAttachment, SessionStore } from "./store.ts";

export type AgentLink = {
  att: AgentAttachment;
  /** throws when the link is closing or ended */
  send(frame: ServerMessage): void;
  /** a binary frame (console input); throws when the link is closing, ended or a long-poll link */
  sendBytes(data: Uint8Array): void;
  /** ends the link from our side; the caller then runs connectionGone if the node is now offline */
  close(code: number, reason: string): void;
  /** the agent's latest sign of life */
  lastSign(): number;
  /** records a sign of life (a frame, a poll) */
  touch(now: number): void;
};

export type StaleLink = { ok: false } & LinkEnded;

const AGENT_TAG = "agent";

export class AgentLinks {
  /** The current long-poll link's queue and held poll (memory only: see poll-outbox.ts). */
  private outbox: PollOutbox | null = null;
  private lastMessageAt = 0;

  private readonly ctx: DurableObjectState;

  private readonly store: SessionStore;

  constructor(ctx: DurableObjectState, store: SessionStore) {
    this.ctx = ctx;

    this.store = store;
  }

  /** The agent link a socket carries, if it is one (viewer sockets are the follow relay's). */
  attachmentOf(ws: WebSocket): AgentAttachment | null {
    // Attachments are written only by this object, so their shape is known.
    const att = ws.deserializeAttachment() as
      | AgentAttachment
      | { kind: "viewer" }
      | { kind: "console" }
      | { kind: "vnc" }
      | null;
    return att && att.kind !== "viewer" && att.kind !== "console" && att.kind !== "vnc" ? att : null;
  }

  /** Frames queued on the long-poll link, if there is one (the debug counts of a local soak run). */
  get pollQueued(): number {
    return this.outbox?.queued ?? 0;
  }

  isCurrent(connId: string): boolean {
    return this.store.get("conn") === connId;
  }

  /** The current connection, socket or long-poll, if any. */
  current(): AgentLink | null {
    const conn = this.store.get("conn");
    if (!conn) return null;
    const poll = this.store.get("pollLink");
    if (poll?.connId === conn) return this.pollLink(poll);
    for (const ws of this.ctx.getWebSockets(AGENT_TAG)) {
      const att = this.attachmentOf(ws);
      if (att?.connId === conn && ws.readyState === WebSocket.OPEN) return this.socketLink(ws, att);
    }
    return null;
  }

  /** The current link if it is the long-poll link `connId` of `nodeId`. */
  currentPoll(nodeId: string, connId: string): AgentLink | null {
    const link = this.current();
    return link && link.att.connId === connId && link.att.nodeId === nodeId && link.att.transport === "poll"
      ? link
      : null;
  }

  /** Closes every older link of the node: what was sent on them can't be answered any more. */
  closeAll(): void {
    for (const old of this.ctx.getWebSockets(AGENT_TAG)) {
      try {
        old.close(CLOSE.replaced, "replaced by a newer connection");
      } catch {
        // already closing
      }
    }
    const oldPoll = this.store.get("pollLink");
    if (oldPoll) this.endPollLink(oldPoll.connId, CLOSE.replaced, "replaced by a newer connection");
  }

  acceptSocket(server: WebSocket, att: AgentAttachment): AgentLink {
    this.ctx.acceptWebSocket(server, [AGENT_TAG]);
    server.serializeAttachment(att);
    return this.socketLink(server, att);
  }

  acceptPoll(att: AgentAttachment): AgentLink {
    this.store.put("pollLink", att);
    this.outbox = new PollOutbox(att.connId);
    return this.pollLink(att);
  }

  /** Makes the link the node's current one; from here on it has a full sign of life. */
  makeCurrent(link: AgentLink, now: number): void {
    this.store.put("conn", link.att.connId);
    this.store.put("nodeId", link.att.nodeId);
    this.lastMessageAt = now;
  }

  /** A frame arrived on the link: a sign of life. */
  heard(link: AgentLink, now: number): void {
    this.lastMessageAt = now;
    link.touch(now);
  }

  socketLink(ws: WebSocket, att: AgentAttachment): AgentLink {
    return {
      att,
      send: (frame) => ws.send(JSON.stringify(frame)),
      sendBytes: (data) => ws.send(data),
      close: (code, reason) => ws.close(code, reason),
      // Pings are answered by the runtime without waking us: their time counts as well.
      lastSign: () =>
        Math.max(
          this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0,
          att.lastMessageAt,
          att.connectedAt,
          this.lastMessageAt,
        ),
      touch: (now) => {
        if (now - att.lastMessageAt > HEARTBEAT_MS / 2) ws.serializeAttachment({ ...att, lastMessageAt: now });
      },
    };
  }

  private pollLink(att: AgentAttachment): AgentLink {
    const outbox = this.outboxFor(att.connId);
    return {
      att,
      send: (frame) => outbox.push(frame),
      sendBytes: () => {
        throw new Error("the long-poll link carries no binary frames");
      },
      close: (code, reason) => this.endPollLink(att.connId, code, reason),
      // The poll itself is the heartbeat: one held open right now means the agent is there.
      lastSign: () => (outbox.polling ? Date.now() : Math.max(att.lastMessageAt, att.connectedAt, this.lastMessageAt)),
      touch: (now) => {
        this.lastMessageAt = now;
        this.store.put("pollLink", { ...att, lastMessageAt: now });
      },
    };
  }

  /** The link's queue; a fresh, empty one if the object's memory was lost since the last poll. */
  outboxFor(connId: string): PollOutbox {
    if (this.outbox?.connId !== connId) this.outbox = new PollOutbox(connId);
    return this.outbox;
  }

  /** Ends the link from our side, if it is not closing already. */
  close(link: AgentLink, code: number, why: string): void {
    try {
      link.close(code, why);
    } catch {
      // closing already
    }
  }

  /** Ends a long-poll link: its held poll, and any later poll or send naming it, learns why. */
  endPollLink(connId: string, code: number, reason: string): void {
    const ended: LinkEnded =
      code === CLOSE.unauthorized
        ? { status: 401, code: "credential_invalid", message: `node credential refused: ${reason}` }
        : code === CLOSE.replaced
          ? {
              status: 409,
              code: "link_replaced",
              message: `this long-poll link was ${reason}; open a new one (poll without connId)`,
            }
          : {
              status: 410,
              code: "link_closed",
              message: `this long-poll link was closed (${reason}); open a new one (poll without connId)`,
            };
    if (this.outbox?.connId === connId) this.outbox.end(ended);
    this.store.put("pollEnded", { connId, ...ended });
    if (this.store.get("pollLink")?.connId === connId) this.store.delete("pollLink");
  }

  /** The current link went away: forget it (a poll link also answers its held poll). */
  forget(connId: string, why: string): void {
    this.store.delete("conn");
    if (this.store.get("pollLink")?.connId === connId) this.endPollLink(connId, CLOSE.normal, why);
  }

  /** The answer to a poll or send naming a link that is not the current one. */
  staleLink(connId: string): StaleLink {
    const ended = this.store.get("pollEnded");
    if (ended?.connId === connId) return { ok: false, status: ended.status, code: ended.code, message: ended.message };
    return {
      ok: false,
      status: 410,
      code: "link_closed",
      message: "no such long-poll link on this node (closed, or never opened); open a new one (poll without connId)",
    };
  }
}
