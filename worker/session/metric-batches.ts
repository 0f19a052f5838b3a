// A batch of `metrics` frames held in memory until its last frame, then stored in one go: every row
// written is billed, and an hour's batch in twelve frames stored one by one rewrote its hour's row at
// each frame. Safe to hold because the agent keeps a batch's ticks until `metrics.stored` answers it
// (a batch lost here, with the object evicted or its link dropped, is sent again).
import type { MetricsPayload, MetricsTick } from "../../protocol/metrics.ts";
import type { AgentLink } from "./links.ts";

/** Samples held at most, each VM's and each tick's node totals counted (a big host's batch, about
 *  8 MB as parsed): past it what is held is stored at once and the rest of the batch held anew, so
 *  an agent that never ends its batch holds no more than this. */
export const HELD_SAMPLES_MAX = 40_000;

type Held = { connId: string; batch: string; intervalMs: number; ticks: MetricsTick[]; samples: number };

export class MetricBatches {
  private held: Held | null = null;
  private readonly store: (payload: MetricsPayload, whole: boolean) => void;

  /** `store`: writes ticks to the history (in one transaction); `whole`: a whole batch. */
  constructor(store: (payload: MetricsPayload, whole: boolean) => void) {
    this.store = store;
  }

  /** One frame: stored now (no batch: an older agent), or held, and with its batch's last frame
   *  the whole batch stored and acknowledged. A frame of another batch or link first stores what is
   *  held of the one before (it would only be sent again). */
  take(link: AgentLink, payload: MetricsPayload): void {
    const { batch, ...frame } = payload;
    if (!batch) return this.store(frame, false);
    const held = this.held;
    if (held && (held.connId !== link.att.connId || held.batch !== batch.id || held.intervalMs !== frame.intervalMs))
      this.release();
    const samples = frame.ticks.reduce((n, t) => n + t.vms.length + 1, 0);
    if (this.held && this.held.samples + samples > HELD_SAMPLES_MAX) this.release();
    this.held ??= { connId: link.att.connId, batch: batch.id, intervalMs: frame.intervalMs, ticks: [], samples: 0 };
    this.held.ticks.push(...frame.ticks);
    this.held.samples += samples;
    if (!batch.last) return;
    this.release(true);
    link.send({ type: "metrics.stored", id: batch.id, payload: {} });
  }

  /** Stores what is held: the whole batch at its last frame, else a part of it (unacknowledged: the
   *  agent sends the batch again). */
  private release(whole = false): void {
    const held = this.held;
    if (!held) return;
    this.held = null;
    this.store({ intervalMs: held.intervalMs, ticks: held.ticks }, whole);
  }

  /** Samples held now, node totals counted (debug counts). */
  heldSamples(): number {
    return this.held?.samples ?? 0;
  }
}
