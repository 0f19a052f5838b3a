// Whether an agent frame is let in at all: size, text only, and a token bucket against floods
// (judged on arrival, so a slow handler can't hide a flood).
import { CLOSE, MAX_FRAME_BYTES } from "../../protocol/wire.ts";

export type Refusal = { code: number; why: string };

export class FrameAdmission {
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
  admit(message: string | ArrayBuffer): Refusal | null {
    const size = typeof message === "string" ? message.length : message.byteLength;
    const bytes = typeof message === "string" && size * 3 > MAX_FRAME_BYTES ? new TextEncoder().encode(message).byteLength : size;
    if (bytes > MAX_FRAME_BYTES) return { code: CLOSE.tooLarge, why: `frame over ${MAX_FRAME_BYTES} bytes` };
    if (typeof message !== "string") return { code: CLOSE.protocolError, why: "binary frames are not part of the protocol" };
    const now = Date.now();
    this.tokens = this.at === 0 ? this.burst : Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
    this.at = now;
    if (--this.tokens < 0) return { code: CLOSE.flood, why: "too many frames" };
    return null;
  }
}
