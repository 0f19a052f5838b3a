// A serial console's output into frames: the first bytes after a quiet spell (a keystroke's echo) go
// at once; output that keeps coming goes as one frame per CONSOLE_COALESCE_MS, none over
// CONSOLE_FRAME_BYTES. Used by the control plane's console streams and the host view's consoles.
import { CONSOLE_COALESCE_MS, CONSOLE_FRAME_BYTES } from "../../protocol/console-frames.ts";

export type CoalescerSink = {
  /** Sends one frame's bytes; false when the way out is gone (what is left is dropped). */
  send(piece: Uint8Array): boolean;
  /** After each flush that sent something: where the owner decides to pause its source. */
  flushed?(): void;
};

export class OutputCoalescer {
  private readonly sink: CoalescerSink;
  private pending: Uint8Array[] = [];
  private pendingCount = 0;
  private timer: NodeJS.Timeout | null = null;
  /** when output last went out (performance.now()) */
  private lastFlushAt = -Infinity;

  constructor(sink: CoalescerSink) {
    this.sink = sink;
  }

  /** Output not sent yet (under one frame, unless the sink refused). */
  get pendingBytes(): number {
    return this.pendingCount;
  }

  push(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) return;
    this.pending.push(bytes);
    this.pendingCount += bytes.byteLength;
    if (this.pendingCount >= CONSOLE_FRAME_BYTES) return this.flush();
    if (!this.timer && performance.now() - this.lastFlushAt >= CONSOLE_COALESCE_MS) return this.flush();
    this.timer ??= setTimeout(() => this.flush(), CONSOLE_COALESCE_MS);
  }

  /** Sends what is pending, in frames of at most CONSOLE_FRAME_BYTES. */
  flush(): void {
    this.clearTimer();
    if (this.pendingCount === 0) return;
    this.lastFlushAt = performance.now();
    const all = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingCount);
    this.pending = [];
    this.pendingCount = 0;
    for (let at = 0; at < all.byteLength; at += CONSOLE_FRAME_BYTES)
      if (!this.sink.send(all.subarray(at, at + CONSOLE_FRAME_BYTES))) return;
    this.sink.flushed?.();
  }

  /** Drops what is pending and its timer (the console ended). */
  stop(): void {
    this.clearTimer();
    this.pending = [];
    this.pendingCount = 0;
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
