// The frame switch of a node's session: each agent frame, parsed once here, goes to the room that
// owns it (liveness, inventory sync, the ledger, the follow relay, anti-entropy, the reconciler,
// the metrics history, a batch at a time).
import { CLOSE, type AgentMessage } from "../../protocol/wire.ts";
import type { SessionSettings } from "../config.ts";
import type { Database } from "../db/client.ts";
import { nodeEvents } from "../db/schema.ts";
import { compareDigest } from "./anti-entropy.ts";
import type { EventCoalescer } from "./event-coalescer.ts";
import type { ConsoleRelay } from "./console-relay.ts";
import type { FollowRelay } from "./follow-relay.ts";
import type { VncRelay } from "./vnc-relay.ts";
import { applyChanges, applyInventory } from "./inventory-sync.ts";
import type { RequestLedger } from "./ledger.ts";
import type { AgentLink, AgentLinks } from "./links.ts";
import type { Liveness } from "./liveness.ts";
import type { MetricBatches } from "./metric-batches.ts";
import type { SessionNotices } from "./notices.ts";
import type { Reconciler } from "./reconciler.ts";
import type { SessionStore } from "./store.ts";

/** The rooms a frame can go to, and how to end a link that sent something it must not. */
export type FrameRooms = {
  db: Database;
  limits: SessionSettings;
  store: SessionStore;
  links: AgentLinks;
  ledger: RequestLedger;
  liveness: Liveness;
  reconciler: Reconciler;
  follows: FollowRelay;
  consoles: ConsoleRelay;
  displays: VncRelay;
  notices: SessionNotices;
  /** metrics frames, held a batch at a time and stored into the history */
  metrics: MetricBatches;
  coalescer: EventCoalescer;
  /** charges VM state changes to the node's work budget (closing the link when overspent) */
  charge: (link: AgentLink, vmsChanged: number) => void;
  dropLink: (link: AgentLink, code: number, why: string) => Promise<void>;
};

/** One frame, as the inbox parsed it (null: malformed or unknown). */
export async function onAgentFrame(rooms: FrameRooms, link: AgentLink, msg: AgentMessage | null): Promise<void> {
  const { links, ledger, follows, reconciler, store, db } = rooms;
  const { att } = link;
  if (!links.isCurrent(att.connId)) return; // a replaced link
  const now = Date.now();
  links.heard(link, now);
  if (!msg) return rooms.dropLink(link, CLOSE.protocolError, "malformed or unknown frame");
  const actor = `agent:${att.nodeId}`;
  const ignored = (handled: Promise<void> | "ignored") =>
    handled === "ignored" ? ledger.countIgnored(msg.type, msg.id) : handled;
  const report = {
    db,
    link,
    maxVms: rooms.limits.maxVmsPerNode,
    notices: rooms.notices,
    actor,
    coalescer: rooms.coalescer,
    charge: (n: number) => rooms.charge(link, n),
  };

  switch (msg.type) {
    case "hello":
      // What the agent understands decides what may be sent to it (e.g. a force stop over a graceful one).
      store.put("agentFeatures", msg.payload.features ?? []);
      return rooms.liveness.hello(att.nodeId, msg.payload, now);
    case "inventory": {
      if (!(await applyInventory(report, msg.id, msg.payload))) return;
      // A completed sync (typically a reconnect) is when open transitions are worth a look.
      const current = links.current();
      if (current) await reconciler.pass(current);
      return;
    }
    case "vm.changed":
      return applyChanges(report, msg.id, msg.payload);
    case "inventory.digest": {
      const verdict = await compareDigest(db, att.nodeId, msg.payload, new Set(ledger.all().map((r) => r.id)), {
        get: () => store.get("recordsDigest"),
        put: (known) => store.put("recordsDigest", known),
      });
      if (verdict.resync.length) {
        const scoped = store.get("agentFeatures")?.includes("scopedResync") ?? false;
        link.send({ type: "resync", id: crypto.randomUUID(), payload: scoped ? { buckets: verdict.resync } : {} });
      }
      if (verdict.transitionsLeftOpen) await reconciler.pass(link);
      return;
    }
    case "ack":
      if (follows.onAck(msg.id)) return;
      return ignored(ledger.onAck(msg.id));
    case "progress":
      return ignored(ledger.onProgress(msg.id, msg.payload));
    case "log.append":
      if (follows.onAppend(msg.id, msg.payload)) return;
      // A follow nobody watches any more (e.g. its unfollow crossed this frame): stop it for good.
      link.send({ type: "vm.logs.unfollow", id: msg.id, payload: {} });
      return ledger.countIgnored("log.append", msg.id);
    case "log.chunk":
      return ignored(ledger.onChunk(msg.id, msg.payload));
    case "result":
      return ignored(ledger.onResult(msg.id, msg.payload, actor));
    case "metrics":
      return rooms.metrics.take(link, msg.payload);
    case "agent.update.status": {
      const { outcome, fromVersion, toVersion, requestedBy, message } = msg.payload;
      await db.insert(nodeEvents).values({
        nodeId: att.nodeId,
        at: now,
        actor,
        action: outcome === "updated" ? "updated" : `update_${outcome}`,
        fromVersion,
        toVersion,
        message: requestedBy ? `${message} (requested by ${requestedBy})` : message,
      });
      return;
    }
    case "console.opened":
      if (rooms.consoles.onOpened(msg.id) || rooms.displays.onOpened(msg.id)) return;
      link.send({ type: "console.close", id: msg.id, payload: {} }); // nobody asked for it any more
      return ledger.countIgnored(msg.type, msg.id);
    case "console.closed":
      if (rooms.consoles.onClosed(msg.id, msg.payload) || rooms.displays.onClosed(msg.id, msg.payload)) return;
      return ledger.countIgnored(msg.type, msg.id);
    case "error":
      if (follows.onError(msg.id, msg.payload)) return;
      return ignored(ledger.onError(msg.id, msg.payload, actor));
  }
}
