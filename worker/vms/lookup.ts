// Reading a VM for a route: by id (404 when unknown), with its node and whether that node is
// connected, and the hint of which node a VM was on when this isolate last read it.
import { eq } from "drizzle-orm";
import type { SessionSettings } from "../config.ts";
import type { Database } from "../db/client.ts";
import { vmFromRow } from "../db/rows.ts";
import { nodes, vms, type VmRecord } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { nodeColumns, nodeView } from "../views.ts";

// Which node a VM was on when this isolate last read it: lets reset_state ask that node's agent
// before reading D1 (one D1 round trip less on the common path). Only a hint: the reset's write is
// guarded by the node, and anything unexpected takes the path that reads D1 first.
const VM_HOME_MS = 60_000;
// Bound: at most this many hints; emptied when full.
const VM_HOME_MAX = 10_000;
const vmHomes = new Map<string, { nodeId: string; name: string; until: number }>();

/** Entries in this isolate's VM-home hints (the debug counts of a local soak run). */
export const vmHomesSize = (): number => vmHomes.size;

export function rememberHome(vm: Pick<VmRecord, "id" | "name" | "nodeId">): void {
  if (!vm.nodeId) return void vmHomes.delete(vm.id);
  if (vmHomes.size >= VM_HOME_MAX) vmHomes.clear();
  vmHomes.set(vm.id, { nodeId: vm.nodeId, name: vm.name, until: Date.now() + VM_HOME_MS });
}

export function homeOf(id: string): { nodeId: string; name: string } | null {
  const home = vmHomes.get(id);
  return home && home.until > Date.now() ? home : null;
}

/** The VM by id (404 when unknown): one plain point read, the most frequent read of the API. */
export async function loadVm(db: Database, id: string): Promise<VmRecord> {
  const row = await db.$client
    .prepare("SELECT * FROM vms WHERE id = ?")
    .bind(id.toLowerCase())
    .first<Record<string, unknown>>();
  if (!row) throw new ApiError(404, "not_found", `no VM ${id}`);
  const vm = vmFromRow(row);
  rememberHome(vm);
  return vm;
}

/** The VM with its node and whether that node is connected now, in one D1 read (a join): the
 *  command routes would otherwise pay two round trips before doing anything. */
export async function loadVmOnNode(settings: SessionSettings, db: Database, id: string) {
  const row = await db
    .select({ vm: vms, node: nodeColumns })
    .from(vms)
    .leftJoin(nodes, eq(nodes.id, vms.nodeId))
    .where(eq(vms.id, id.toLowerCase()))
    .get();
  if (!row) throw new ApiError(404, "not_found", `no VM ${id}`);
  const { vm, node } = row;
  rememberHome(vm);
  return { vm, node, online: node ? nodeView(node, 0, settings.nodeStaleAfterMs).connected : false };
}

/** The VM's node when it has one and is connected now (D1 view, liveness-checked). */
export async function nodeState(settings: SessionSettings, db: Database, vm: VmRecord) {
  if (!vm.nodeId) return { node: null, online: false };
  const node = await db.select(nodeColumns).from(nodes).where(eq(nodes.id, vm.nodeId)).get();
  if (!node) return { node: null, online: false };
  return { node, online: nodeView(node, 0, settings.nodeStaleAfterMs).connected };
}
