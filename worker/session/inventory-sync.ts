// An agent's inventory frames into D1: a full sync (possibly over several frames, the VMs it did not
// report marked missing once it is done) and the changes reported since.
import type { AgentMessage } from "../../protocol/wire.ts";
import type { Database } from "../db/client.ts";
import { markRemoved, markUnreportedMissing, upsertReportedVms } from "../inventory.ts";
import type { SessionNotices } from "./notices.ts";
import type { AgentAttachment } from "./store.ts";

type Payload<T extends AgentMessage["type"]> = Extract<AgentMessage, { type: T }>["payload"];

const warnForeign = (nodeId: string, foreign: string[]) => {
  if (foreign.length) console.warn(`node ${nodeId} reported ${foreign.length} VM(s) of another node; ignored`);
};

/** One frame of a full sync; true when it completed the sync. */
export async function applyInventory(db: Database, att: AgentAttachment, p: Payload<"inventory">, actor: string, notices: SessionNotices): Promise<boolean> {
  const syncId = `${att.connId}:${p.syncId}`;
  const { foreign, flagged } = await upsertReportedVms(db, att.nodeId, p.vms, syncId, actor);
  notices.inventoryFlags(att.nodeId, { foreign, flagged });
  warnForeign(att.nodeId, foreign);
  if (p.done) await markUnreportedMissing(db, att.nodeId, syncId, actor);
  return p.done;
}

export async function applyChanges(db: Database, att: AgentAttachment, p: Payload<"vm.changed">, actor: string, notices: SessionNotices): Promise<void> {
  const { foreign, flagged } = await upsertReportedVms(db, att.nodeId, p.vms, null, actor);
  notices.inventoryFlags(att.nodeId, { foreign, flagged });
  warnForeign(att.nodeId, foreign);
  await markRemoved(db, att.nodeId, p.removed, actor);
}
