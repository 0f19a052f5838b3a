// An agent's inventory frames into D1: a full sync (possibly over several frames, the VMs it did not
// report marked missing once it is done) and the changes reported since. A report never takes a VM
// another node holds, and a node past its VM cap is told so (vm-ownership.ts).
import type { AgentMessage } from "../../protocol/wire.ts";
import type { Database } from "../db/client.ts";
import { markRemoved, markUnreportedMissing, markUnreportedMissingInScope, upsertReportedVms } from "../inventory.ts";
import { settleReport } from "../vm-ownership.ts";
import type { EventCoalescer } from "./event-coalescer.ts";
import type { AgentLink } from "./links.ts";
import type { SessionNotices } from "./notices.ts";

type Payload<T extends AgentMessage["type"]> = Extract<AgentMessage, { type: T }>["payload"];

/** What applying a report needs besides the frame: the link it came on, the node's VM cap, notices,
 *  and the coalescer that keeps a flapping VM's events readable. */
export type ReportContext = {
  db: Database;
  link: AgentLink;
  maxVms: number;
  notices: SessionNotices;
  actor: string;
  coalescer: EventCoalescer;
  /** the state changes a report made, charged to the node's work budget */
  charge: (vmsChanged: number) => void;
};

/** Windows that ended are summed up before a report opens new ones for the same VMs. */
async function coalescing(ctx: ReportContext): Promise<number> {
  const now = Date.now();
  if ((ctx.coalescer.dueAt() ?? Infinity) <= now) await ctx.coalescer.flush(ctx.link.att.nodeId, ctx.actor, now);
  return now;
}

async function applyReport(
  ctx: ReportContext,
  frameId: string,
  vms: Payload<"vm.changed">["vms"],
  syncId: string | null,
): Promise<void> {
  const nodeId = ctx.link.att.nodeId;
  const now = await coalescing(ctx);
  const muted = ctx.coalescer.muted(
    vms.map((v) => v.uuid),
    now,
  );
  const report = await upsertReportedVms(ctx.db, nodeId, vms, syncId, ctx.actor, ctx.maxVms, muted);
  ctx.coalescer.count(report, now);
  ctx.charge(report.changed.length);
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
  const now = await coalescing(ctx);
  const muted = ctx.coalescer.allMuted(now);
  const nodeId = ctx.link.att.nodeId;
  const marked = scope
    ? await markUnreportedMissingInScope(ctx.db, nodeId, syncId, scope, ctx.actor, muted)
    : await markUnreportedMissing(ctx.db, nodeId, syncId, ctx.actor, muted);
  ctx.coalescer.count(marked, now);
  ctx.charge(marked.changed.length);
  return true;
}

export async function applyChanges(ctx: ReportContext, frameId: string, p: Payload<"vm.changed">): Promise<void> {
  await applyReport(ctx, frameId, p.vms, null);
  if (p.removed.length === 0) return;
  const now = await coalescing(ctx);
  const muted = ctx.coalescer.muted(p.removed, now);
  const marked = await markRemoved(ctx.db, ctx.link.att.nodeId, p.removed, ctx.actor, muted);
  ctx.coalescer.count(marked, now);
  ctx.charge(marked.changed.length);
}
