// The agent's frames on their way in, on either transport: whether each is let in at all (size, text
// only, a token bucket against floods, a budget of work, a bounded backlog; all judged on arrival so
// a slow handler can't hide a flood), parsed once, and handled one at a time in arrival order: D1
// calls let the runtime deliver the next frame while one is awaited, and e.g. a sync's `done` must
// not overtake its earlier chunks.
import { AgentMessage, CLOSE, MAX_FRAME_BYTES, parseFrame } from "../../protocol/wire.ts";

export type Refusal = { code: number; why: string };

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
 *  marks of a sync's end or of removed VMs; a result or an error a few; the rest next to none. */
function statementsOf(msg: AgentMessage | null): number {
  switch (msg?.type) {
    case "inventory":
    case "vm.changed":
      return 12;
    case "result":
    case "error":
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
  }

  /** Charges VM state changes a report made; the refusal when that overspent the budget. */
  charge(vmsChanged: number): Refusal | null {
    if (vmsChanged === 0 || this.vms.spend(vmsChanged, Date.now())) return null;
    const l = this.limits;
    return {
      code: CLOSE.overloaded,
      why: `over the node's work budget: more than ${l.vmsPerSecond} VM state changes a second (burst ${l.vmsBurst})`,
    };
  }

  /** Frames and bytes admitted and not handled yet. */
  backlog(): { frames: number; bytes: number } {
    return { frames: this.pendingFrames, bytes: this.pendingBytes };
  }

  /** Too big, binary, one frame too many, over the work budget, or the backlog full: the close code
   *  to answer with. */
  private admit(message: string | ArrayBuffer, bytes: number, msg: AgentMessage | null): Refusal | null {
    if (bytes > MAX_FRAME_BYTES) return { code: CLOSE.tooLarge, why: `frame over ${MAX_FRAME_BYTES} bytes` };
    if (typeof message !== "string")
      return { code: CLOSE.protocolError, why: "binary frames are not part of the protocol" };
    const now = Date.now();
    const l = this.limits;
    if (!this.frames.take(1, now)) return { code: CLOSE.flood, why: "too many frames" };
    if (this.pendingFrames + 1 > l.backlogFrames || this.pendingBytes + bytes > l.backlogBytes)
      return {
        code: CLOSE.overloaded,
        why: `inbox backlog over ${l.backlogFrames} frames or ${l.backlogBytes} bytes: frames come faster than they can be handled`,
      };
    const over = (what: string, perSecond: number, burst: number) => ({
      code: CLOSE.overloaded,
      why: `over the node's work budget: more than ${perSecond} ${what} a second (burst ${burst})`,
    });
    if (!this.vms.take(0, now)) return over("VM state changes", l.vmsPerSecond, l.vmsBurst);
    if (!this.statements.take(statementsOf(msg), now))
      return over("database statements", l.statementsPerSecond, l.statementsBurst);
    if (!this.bytes.take(bytes, now)) return over("bytes", l.bytesPerSecond, l.bytesBurst);
    return null;
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
    // Parsed once here: what a frame costs depends on what it says.
    const msg = typeof message === "string" && bytes <= MAX_FRAME_BYTES ? parseFrame(AgentMessage, message) : null;
    const refused = this.admit(message, bytes, msg);
    if (refused) refuse(refused);
    else {
      this.pendingFrames++;
      this.pendingBytes += bytes;
    }
    const handled = this.queue
      .then(() => (refused ? drop(refused) : handle(msg)))
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
    this.queue = handled;
    return handled;
  }
}
