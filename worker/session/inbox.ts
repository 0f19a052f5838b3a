// The agent's frames on their way in, on either transport: whether each is let in at all (size, text
// only, a token bucket against floods, judged on arrival so a slow handler can't hide a flood), and
// handling them one at a time in arrival order: D1 calls let the runtime deliver the next frame while
// one is awaited, and e.g. a sync's `done` must not overtake its earlier chunks.
import { CLOSE, MAX_FRAME_BYTES } from "../../protocol/wire.ts";

export type Refusal = { code: number; why: string };

export class AgentInbox {
  private queue: Promise<void> = Promise.resolve();
  private tokens = 0;
  private at = 0;

  private readonly perSecond: number;

  private readonly burst: number;

  constructor(perSecond: number, burst: number) {
    this.perSecond = perSecond;

    this.burst = burst;
  }

  /** A new connection starts with a full budget. */
  refill(now: number): void {
    this.tokens = this.burst;
    this.at = now;
  }

  /** Too big, binary, or one frame too many: the close code to answer with. */
  private admit(message: string | ArrayBuffer): Refusal | null {
    const size = typeof message === "string" ? message.length : message.byteLength;
    const bytes =
      typeof message === "string" && size * 3 > MAX_FRAME_BYTES ? new TextEncoder().encode(message).byteLength : size;
    if (bytes > MAX_FRAME_BYTES) return { code: CLOSE.tooLarge, why: `frame over ${MAX_FRAME_BYTES} bytes` };
    if (typeof message !== "string")
      return { code: CLOSE.protocolError, why: "binary frames are not part of the protocol" };
    const now = Date.now();
    this.tokens =
      this.at === 0 ? this.burst : Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
    this.at = now;
    if (--this.tokens < 0) return { code: CLOSE.flood, why: "too many frames" };
    return null;
  }

  /** Queues one frame: `handle` runs after the frames before it, `drop` instead when the frame is
   *  refused (`refuse` closes the link at once) or its handling throws. */
  receive(
    message: string | ArrayBuffer,
    refuse: (r: Refusal) => void,
    handle: () => Promise<void>,
    drop: (r: Refusal) => Promise<void>,
  ): Promise<void> {
    const refused = this.admit(message);
    if (refused) refuse(refused);
    const handled = this.queue
      .then(() => (refused ? drop(refused) : handle()))
      .catch((err) => {
        // Never let a frame crash the object: log, and drop the connection as a protocol error.
        console.error("node session: frame handling failed", err);
        return drop({ code: CLOSE.protocolError, why: "internal error handling a frame" });
      });
    this.queue = handled;
    return handled;
  }
}
