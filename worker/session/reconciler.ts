// Self-healing: asks the hypervisor about this node's VMs left in a transition (STARTING, STOPPING,
// CREATING, held by a request that is no longer in flight) at once, and about states the control
// plane wrote on its own (verify). A transition's answer is adopted by repairStuckVm (an
// `auto_repair` event), only if nobody acted on the VM meanwhile; one older than STUCK_AFTER_MS is
// also told as stuck. A verify's answer is applied as the agent's report of the VM would be.
import { asc, eq, sql } from "drizzle-orm";
import { TRANSITIONAL_STATES } from "../../protocol/wire.ts";
import type { SessionSettings } from "../config.ts";
import type { Database } from "../db/client.ts";
import { vms } from "../db/schema.ts";
import { finishRequest, queueStateQuery } from "../request-rows.ts";
import type { RequestLedger } from "./ledger.ts";
import type { AgentLink } from "./links.ts";
import type { SessionNotices } from "./notices.ts";
import type { SessionStore, StuckVm } from "./store.ts";

/** Stuck VMs asked about per pass (the rest wait for the next pass). */
const RECONCILE_BATCH = 50;

export class Reconciler {
  private readonly store: SessionStore;
  private readonly db: Database;
  private readonly limits: SessionSettings;
  private readonly ledger: RequestLedger;
  private readonly notices: SessionNotices;

  constructor(
    store: SessionStore,
    db: Database,
    limits: SessionSettings,
    ledger: RequestLedger,
    notices: SessionNotices,
  ) {
    this.store = store;
    this.db = db;
    this.limits = limits;
    this.ledger = ledger;
    this.notices = notices;
  }

  /** The next periodic pass, while a transition may be open (undefined: none due). */
  dueAt(): number | undefined {
    const at = this.store.get("reconcileAt");
    return at !== undefined && this.store.get("transitionsOpen") !== false ? at : undefined;
  }

  /** A new link: the first periodic pass comes one interval from now. */
  scheduleFrom(now: number): void {
    this.store.put("reconcileAt", now + this.limits.reconcileIntervalMs);
  }

  /** Only while a transition may be open: an idle node's liveness alarm then writes nothing for it. */
  isDue(now: number): boolean {
    return now >= (this.dueAt() ?? Infinity);
  }

  /** `endedNow`: VMs whose power action just ended without an answer, asked about without delay. */
  async pass(current: AgentLink, periodic = false, endedNow: readonly string[] = []): Promise<void> {
    const now = Date.now();
    this.scheduleFrom(now);
    // The periodic pass asks D1 only while a transition may be open: one seen by the last pass, or a
    // power action sent since (a thousand idle nodes then cost D1 nothing every minute).
    if (periodic && this.store.get("transitionsOpen") === false) return;
    const transitional = TRANSITIONAL_STATES.map((t) => sql`${t}`);
    const open = await this.db
      .select()
      .from(vms)
      .where(
        sql`${vms.nodeId} = ${current.att.nodeId} AND ${vms.state} IN (${sql.join(transitional, sql`, `)})
          AND ${vms.transitionRequestId} IS NOT NULL AND ${vms.missing} = 0`,
      )
      .orderBy(asc(vms.stateUpdatedAt))
      .limit(RECONCILE_BATCH);
    this.store.put("transitionsOpen", open.length > 0);
    // A transition younger than the ack deadline may belong to a request still on its way here;
    // REPAIR_AFTER_MS, when set, leaves one that no request holds alone that long.
    const waitMs = Math.max(this.limits.ackMs, this.limits.repairAfterMs);
    const askNow = (id: string) => this.limits.repairAfterMs === 0 && endedNow.includes(id);
    const stuck = open.filter((vm) => vm.stateUpdatedAt < now - waitMs || askNow(vm.id));
    if (stuck.length === 0) return;
    const busy = new Set<string>();
    for (const r of this.ledger.all()) {
      busy.add(r.id); // the transition's own request still running: not stuck, just slow
      if (r.reconcile) busy.add(r.reconcile.vmId); // asked already
    }
    for (const vm of stuck) {
      const transitionRequestId = vm.transitionRequestId;
      if (transitionRequestId === null || busy.has(transitionRequestId) || busy.has(vm.id)) continue;
      if (vm.stateUpdatedAt < now - this.limits.stuckAfterMs) this.notices.stuck(current.att.nodeId, vm, now);
      const id = await queueStateQuery(this.db, vm, "reconciler", Date.now() + this.limits.queryMs);
      const check: StuckVm = {
        vmId: vm.id,
        generation: vm.generation,
        transitionRequestId,
        expectedState: vm.state,
        stuckSince: vm.stateUpdatedAt,
      };
      if (!(await this.ledger.reconcile(current, id, vm, check))) {
        await finishRequest(this.db, id, {
          status: "failed",
          error: { code: "node_offline", message: "the node's agent connection is closing" },
        });
        return;
      }
    }
  }

  /** VMs whose power action just ended without an answer: asked about now, if the agent is connected. */
  async askNow(current: AgentLink | null, vmIds: readonly string[]): Promise<void> {
    if (current) await this.pass(current, false, vmIds);
  }

  /** Asks the hypervisor about a VM whose state the control plane wrote on its own (when connected). */
  async verify(current: AgentLink | null, vmId: string): Promise<void> {
    if (!current) return;
    const vm = await this.db
      .select({ id: vms.id, name: vms.name, nodeId: vms.nodeId })
      .from(vms)
      .where(eq(vms.id, vmId))
      .get();
    if (!vm || vm.nodeId !== current.att.nodeId) return;
    if (this.ledger.all().some((r) => r.vmId === vmId && r.kind === "vm.state" && (r.verify || r.reconcile))) return; // asked already
    const id = await queueStateQuery(this.db, vm, "verifier", Date.now() + this.limits.queryMs);
    if (!(await this.ledger.verify(current, id, vm))) {
      await finishRequest(this.db, id, {
        status: "failed",
        error: { code: "node_offline", message: "the node's agent connection is closing" },
      });
    }
  }
}
