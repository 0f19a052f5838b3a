// Live metrics while someone watches: each read of a chart that says it is watching renews a lease,
// and the node's agent is asked (`metrics.live`, feature `liveMetrics`) to send every tick as it is
// taken until the lease ends. The agent holds the lease and goes back to batches on its own, so a
// tab that leaves without a word needs no alarm, no write and no goodbye from anyone.
import { METRICS_WATCH_LEASE_MS as LEASE_MS } from "../../protocol/metrics.ts";
import type { ServerMessage } from "../../protocol/wire.ts";

/** What this room needs of the agent's link (an AgentLink). */
type Link = { send(msg: ServerMessage): unknown };

export class MetricsWatch {
  /** until when (this object's clock) the current link's agent was asked to send live ticks. Held
   *  in memory only: after an eviction the next watching read asks again (one small frame), which
   *  is cheaper than a stored row per renewal. */
  private liveUntil = 0;

  /** A watcher read the charts. Asks the agent again once half its lease is gone, so however many
   *  tabs poll, the agent gets at most one `metrics.live` per half lease. */
  watched(link: Link | null, agentFeatures: readonly string[], now: number): void {
    if (!link || !agentFeatures.includes("liveMetrics")) return; // an older agent: batches as before
    if (this.liveUntil - now > LEASE_MS / 2) return;
    link.send({ type: "metrics.live", id: crypto.randomUUID(), payload: { leaseMs: LEASE_MS } });
    this.liveUntil = now + LEASE_MS;
  }

  /** A new link (or none): its agent starts in batches, whatever the last one was asked. */
  linkChanged(): void {
    this.liveUntil = 0;
  }
}
