// An agent's inventory frames into D1: a full sync (possibly over several frames, the VMs it did not
// report marked missing once it is done) and the changes reported since. A report never takes a VM
// another node holds, and a node past its VM cap is told so (vm-ownership.ts).
import type { AgentMessage } from "../../protocol/wire.ts";
import type { Database } from "../db/client.ts";
import { markRemoved, markUnreportedMissing, markUnreportedMissingInScope, upsertReportedVms } from "../inventory.ts";
import { settleReport } from "../vm-ownership.ts";
import type { AgentLink } from "./links.ts";
import type { SessionNotices } from "./notices.ts";

type Payload<T extends AgentMessage["type"]> = Extract<AgentMessage, { type: T }>["payload"];

/** What applying a report needs besides the frame: the link it came on, the node's VM cap, notices. */
export type ReportContext = { db: Database; link: AgentLink; maxVms: number; notices: SessionNotices; actor: string };

async function applyReport(
  ctx: ReportContext,
  frameId: string,
  vms: Payload<"vm.changed">["vms"],
  syncId: string | null,
): Promise<void> {
  const nodeId = ctx.link.att.nodeId;
  const report = await upsertReportedVms(ctx.db, nodeId, vms, syncId, ctx.actor, ctx.maxVms);
  ctx.notices.inventoryFlags(nodeId, { foreign: report.claimed, flagged: report.flagged });
  await settleReport(ctx.db, (frame) => ctx.link.send(frame), nodeId, frameId, report, ctx.maxVms);
}

/** One frame of a full sync, or of a scoped one (the answer to a scoped resync, complete for its
 *  scope only: missing VMs are marked within it, never across the node); true when it completed. */
export async function applyInventory(ctx: ReportContext, frameId: string, p: Payload<"inventory">): Promise<boolean> {
  const syncId = `${ctx.link.att.connId}:${p.syncId}`;
  await applyReport(ctx, frameId, p.vms, syncId);
  if (!p.done) return false;
  const scope = p.scope?.vmIds?.length || p.scope?.buckets?.length ? p.scope : undefined;
  if (scope) await markUnreportedMissingInScope(ctx.db, ctx.link.att.nodeId, syncId, scope, ctx.actor);
  else await markUnreportedMissing(ctx.db, ctx.link.att.nodeId, syncId, ctx.actor);
  return true;
}

export async function applyChanges(ctx: ReportContext, frameId: string, p: Payload<"vm.changed">): Promise<void> {
  await applyReport(ctx, frameId, p.vms, null);
  await markRemoved(ctx.db, ctx.link.att.nodeId, p.removed, ctx.actor);
}
