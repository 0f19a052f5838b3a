// The agent's frames on their way in, on either transport: whether each is let in at all (size, text
// only, a token bucket against floods, a budget of work, a bounded backlog; all judged on arrival so
// a slow handler can't hide a flood), parsed once, and handled one at a time in arrival order: D1
// calls let the runtime deliver the next frame while one is awaited, and e.g. a sync's `done` must
// not overtake its earlier chunks.
import { MAX_LINK_BINARY_BYTES } from "../../protocol/console.ts";
import { AgentMessage, CLOSE, MAX_FRAME_BYTES, parseFrame } from "../../protocol/wire.ts";

/** Why a frame is refused; `cooling`: only because its node is still refused for an earlier overload. */
export type Refusal = { code: number; why: string; cooling?: true };

/** Console output frames per second an agent may send (16 consoles, each coalescing to ~10 ms). */
const BINARY_PER_SECOND = 2_000;

/** A frame whose handling took at least this long is followed by a pause as long (at most the max). */
const PACE_AFTER_MS = 20;
const PACE_MAX_MS = 2000;
/** How long a node that overloaded its session is refused (every frame, on any link). */
const COOL_DOWN_SECONDS = 10;

/** What an agent may cost its node's session. The work budget is the node's, not the link's: a
 *  reconnect does not refill it, so closing a link that overspent it is not undone by reconnecting. */
export type AdmissionLimits = {
  /** frames per second on average, and the burst (refilled for each new link) */
  framesPerSecond: number;
  framesBurst: number;
  /** VMs whose state or presence a report changed (each a D1 write and maybe an event) per second,
   *  and the burst. Known only once the report is applied: charged then, and a link in debt is closed. */
  vmsPerSecond: number;
  vmsBurst: number;
  /** D1 statements the frames cause per second, and the burst */
  statementsPerSecond: number;
  statementsBurst: number;
  /** bytes per second, and the burst */
  bytesPerSecond: number;
  bytesBurst: number;
  /** frames (and their bytes) admitted but not yet handled */
  backlogFrames: number;
  backlogBytes: number;
};

/** D1 statements a frame costs at most: an inventory report is one batch of ten, plus the missing
 *  marks of a sync's end or of removed VMs; a digest a few; the rest next to none. An answer (a
 *  result or an error) costs the node nothing: its work is the request's, which the control plane
 *  sent (an operator's, rate-limited per token, or its own reconciler's), and one for no request in
 *  flight is dropped unread. Charged to the agent, an operator's burst of reset_state calls would
 *  close the node's link and flag it overloaded. */
function statementsOf(msg: AgentMessage | null): number {
  switch (msg?.type) {
    case "inventory":
    case "vm.changed":
      return 12;
    case "inventory.digest":
      return 3;
    case "hello":
    case "progress":
      return 1;
    default:
      return 0;
  }
}

class TokenBucket {
  private tokens: number;
  private at = 0;
  private readonly perSecond: number;
  readonly burst: number;

  constructor(perSecond: number, burst: number) {
    this.perSecond = perSecond;
    this.burst = burst;
    this.tokens = burst;
  }

  refill(now: number): void {
    this.tokens = this.burst;
    this.at = now;
  }

  private level(now: number): number {
    this.tokens =
      this.at === 0 ? this.burst : Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
    this.at = now;
    return this.tokens;
  }

  /** Takes `cost` if the bucket holds it; a bucket in debt holds nothing. */
  take(cost: number, now: number): boolean {
    if (this.level(now) < 0 || cost > this.tokens) return false;
    this.tokens -= cost;
    return true;
  }

  /** Leaves the bucket at least `debt` in debt. */
  owe(debt: number, now: number): void {
    this.tokens = Math.min(this.level(now), -debt);
  }

  /** Takes `cost` whatever it holds (work already done); false when that left it in debt. */
  spend(cost: number, now: number): boolean {
    this.tokens = this.level(now) - cost;
    return this.tokens >= 0;
  }
}

export class AgentInbox {
  private queue: Promise<void> = Promise.resolve();
  private readonly limits: AdmissionLimits;
  private readonly frames: TokenBucket;
  private readonly vms: TokenBucket;
  private readonly statements: TokenBucket;
  private readonly bytes: TokenBucket;
  private pendingFrames = 0;
  private pendingBytes = 0;
  private readonly binary = new TokenBucket(BINARY_PER_SECOND, BINARY_PER_SECOND);
  /** the current link was refused: frames it queued before are skipped until the next link */
  private ending = false;
  /** why the node was last refused as overloaded: what a link refused while it cools down is told */
  private overloadedBy: string | null = null;

  constructor(limits: AdmissionLimits) {
    this.limits = limits;
    this.frames = new TokenBucket(limits.framesPerSecond, limits.framesBurst);
    this.vms = new TokenBucket(limits.vmsPerSecond, limits.vmsBurst);
    this.statements = new TokenBucket(limits.statementsPerSecond, limits.statementsBurst);
    this.bytes = new TokenBucket(limits.bytesPerSecond, limits.bytesBurst);
  }

  /** A new connection starts with a full frame budget (its work budget stays the node's). */
  refill(now: number): void {
    this.frames.refill(now);
    this.ending = false;
  }

  /** Charges VM state changes a report made; the refusal when that overspent the budget. */
  charge(vmsChanged: number): Refusal | null {
    const now = Date.now();
    if (vmsChanged === 0 || this.vms.spend(vmsChanged, now)) return null;
    const l = this.limits;
    const why = `over the node's work budget: more than ${l.vmsPerSecond} VM state changes a second (burst ${l.vmsBurst})`;
    this.coolDown(now, why);
    this.ending = true;
    return { code: CLOSE.overloaded, why };
  }

  /** An overloaded node is refused for COOL_DOWN_SECONDS: a reconnect does not buy it a fresh
   *  backlog of work. */
  private coolDown(now: number, why: string): void {
    this.vms.owe(this.limits.vmsPerSecond * COOL_DOWN_SECONDS, now);
    this.overloadedBy = why;
  }

  /** A binary frame (console output): its size and a rate of its own; its bytes are bounded by the
   *  consoles' credit windows, not by the text frames' budgets. */
  admitBinary(bytes: number, now: number): Refusal | null {
    if (bytes > MAX_LINK_BINARY_BYTES)
      return { code: CLOSE.tooLarge, why: `binary frame over ${MAX_LINK_BINARY_BYTES} bytes` };
    if (!this.binary.take(1, now)) return { code: CLOSE.flood, why: "too many binary frames" };
    return null;
  }

  /** Frames and bytes admitted and not handled yet. */
  backlog(): { frames: number; bytes: number } {
    return { frames: this.pendingFrames, bytes: this.pendingBytes };
  }

  /** What can be judged without reading the frame: too big, binary, one frame too many, the backlog
   *  full, over the byte budget. Cheap, so a flood costs next to nothing once refused. */
  private admitRaw(message: string | ArrayBuffer, bytes: number, now: number): Refusal | null {
    if (bytes > MAX_FRAME_BYTES) return { code: CLOSE.tooLarge, why: `frame over ${MAX_FRAME_BYTES} bytes` };
    if (typeof message !== "string")
      return { code: CLOSE.protocolError, why: "binary frames are not part of the protocol" };
    const l = this.limits;
    if (!this.frames.take(1, now)) return { code: CLOSE.flood, why: "too many frames" };
    if (this.pendingFrames + 1 > l.backlogFrames || this.pendingBytes + bytes > l.backlogBytes)
      return {
        code: CLOSE.overloaded,
        why: `inbox backlog over ${l.backlogFrames} frames or ${l.backlogBytes} bytes: frames come faster than they can be handled`,
      };
    if (!this.vms.take(0, now))
      return {
        code: CLOSE.overloaded,
        why: `${this.overloadedBy ?? "over the node's work budget"}; refused for ${COOL_DOWN_SECONDS} s since`,
        cooling: true,
      };
    if (!this.bytes.take(bytes, now)) return this.over("bytes", l.bytesPerSecond, l.bytesBurst);
    return null;
  }

  private over(what: string, perSecond: number, burst: number): Refusal {
    return {
      code: CLOSE.overloaded,
      why: `over the node's work budget: more than ${perSecond} ${what} a second (burst ${burst})`,
    };
  }

  /** Queues one frame: `handle` runs with it parsed (null: not a known message) after the frames
   *  before it, `drop` instead when the frame is refused (`refuse` closes the link at once) or its
   *  handling throws. */
  receive(
    message: string | ArrayBuffer,
    refuse: (r: Refusal) => void,
    handle: (msg: AgentMessage | null) => Promise<void>,
    drop: (r: Refusal) => Promise<void>,
  ): Promise<void> {
    const size = typeof message === "string" ? message.length : message.byteLength;
    const bytes =
      typeof message === "string" && size * 3 > MAX_FRAME_BYTES ? new TextEncoder().encode(message).byteLength : size;
    const now = Date.now();
    let refused = this.admitRaw(message, bytes, now);
    // Parsed once, here and only when let in: what a frame costs in statements depends on what it says.
    const msg = !refused && typeof message === "string" ? parseFrame(AgentMessage, message) : null;
    if (!refused && !this.statements.take(statementsOf(msg), now))
      refused = this.over("database statements", this.limits.statementsPerSecond, this.limits.statementsBurst);
    if (refused) {
      if (refused.code === CLOSE.overloaded)
        this.coolDown(now, refused.cooling ? (this.overloadedBy ?? refused.why) : refused.why);
      refuse(refused);
      this.ending = true;
    } else {
      this.pendingFrames++;
      this.pendingBytes += bytes;
    }
    let took = 0;
    const handled = this.queue
      .then(async () => {
        if (refused) return drop(refused);
        if (this.ending) return; // the link is being closed: what it queued before is not worth the work
        const t0 = Date.now();
        await handle(msg);
        took = Date.now() - t0;
      })
      .catch((err) => {
        // Never let a frame crash the object: log, and drop the connection as a protocol error.
        console.error("node session: frame handling failed", err);
        return drop({ code: CLOSE.protocolError, why: "internal error handling a frame" });
      })
      .finally(() => {
        if (refused) return;
        this.pendingFrames--;
        this.pendingBytes -= bytes;
      });
    // The node's next frame waits as long as this one took (when that was long): one node uses at
    // most about half of the database's time, and everyone else's queries get the other half. The
    // frames meanwhile wait in the bounded backlog.
    this.queue = handled.then(() =>
      took >= PACE_AFTER_MS ? new Promise<void>((r) => setTimeout(r, Math.min(took, PACE_MAX_MS))) : undefined,
    );
    return handled;
  }
}
