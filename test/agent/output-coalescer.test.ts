// The console output coalescer both serial consoles share (the control plane's stream and the host
// view's): an echo after a quiet spell goes at once, output that keeps coming goes as one frame per
// CONSOLE_COALESCE_MS, no frame is over CONSOLE_FRAME_BYTES, and nothing is sent once it stops. The
// clock is the test's (fake timers): "at once" means before any timer ran.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { OutputCoalescer } from "../../agent/console/output-coalescer.ts";
import { CONSOLE_COALESCE_MS, CONSOLE_FRAME_BYTES } from "../../protocol/console.ts";

beforeEach(() => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] }));
afterEach(() => vi.useRealTimers());

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

function coalescer(accept = () => true) {
  const frames: Uint8Array[] = [];
  let flushes = 0;
  const output = new OutputCoalescer({
    send: (piece) => {
      if (!accept()) return false;
      frames.push(piece.slice());
      return true;
    },
    flushed: () => void flushes++,
  });
  return { output, frames, texts: () => frames.map(text), flushes: () => flushes };
}

describe("console output coalescer", () => {
  it("the first output after a quiet spell goes at once; what follows within the spell is one frame", () => {
    const { output, texts } = coalescer();
    output.push(bytes("k"));
    expect(texts()).toEqual(["k"]); // no timer had to run
    output.push(bytes("a"));
    output.push(bytes("b"));
    expect(texts()).toEqual(["k"]);
    expect(output.pendingBytes).toBe(2);
    vi.advanceTimersByTime(CONSOLE_COALESCE_MS - 1);
    expect(texts()).toEqual(["k"]);
    vi.advanceTimersByTime(1);
    expect(texts()).toEqual(["k", "ab"]);
    expect(output.pendingBytes).toBe(0);
    vi.advanceTimersByTime(CONSOLE_COALESCE_MS);
    output.push(bytes("x")); // quiet again
    expect(texts()).toEqual(["k", "ab", "x"]);
  });

  it("a stream that keeps coming goes as one frame per CONSOLE_COALESCE_MS", () => {
    const { output, texts } = coalescer();
    output.push(bytes("0"));
    for (let ms = 1; ms <= 5 * CONSOLE_COALESCE_MS; ms++) {
      vi.advanceTimersByTime(1);
      output.push(bytes(String(ms % 10)));
    }
    vi.advanceTimersByTime(CONSOLE_COALESCE_MS);
    const frames = texts();
    expect(frames.join("")).toBe(Array.from({ length: 5 * CONSOLE_COALESCE_MS + 1 }, (_, i) => i % 10).join(""));
    expect(frames.length).toBeLessThanOrEqual(6 + 1);
    expect(frames.length).toBeGreaterThanOrEqual(5);
  });

  it("past CONSOLE_FRAME_BYTES pending it sends at once, in frames of at most CONSOLE_FRAME_BYTES", () => {
    const { output, frames, flushes } = coalescer();
    output.push(bytes("k")); // the quiet spell's first byte, at once
    const big = new Uint8Array(2 * CONSOLE_FRAME_BYTES + 100).fill(0x41);
    output.push(big);
    expect(frames.map((f) => f.byteLength)).toEqual([1, CONSOLE_FRAME_BYTES, CONSOLE_FRAME_BYTES, 100]);
    expect(flushes()).toBe(2); // the owner may pause its source after each flush
  });

  it("a sink that refuses (the way out is gone) gets nothing more of that flush, and no flushed call", () => {
    let open = true;
    const { output, frames, flushes } = coalescer(() => open);
    output.push(bytes("k"));
    open = false;
    output.push(new Uint8Array(3 * CONSOLE_FRAME_BYTES));
    expect(frames).toHaveLength(1);
    expect(flushes()).toBe(1);
    expect(output.pendingBytes).toBe(0);
  });

  it("stop drops what is pending and its timer: nothing is sent after it", () => {
    const { output, texts } = coalescer();
    output.push(bytes("k"));
    output.push(bytes("held"));
    output.stop();
    expect(output.pendingBytes).toBe(0);
    vi.advanceTimersByTime(10 * CONSOLE_COALESCE_MS);
    expect(texts()).toEqual(["k"]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("empty output sends nothing and arms no timer", () => {
    const { output, frames } = coalescer();
    output.push(new Uint8Array(0));
    expect(frames).toHaveLength(0);
    expect(vi.getTimerCount()).toBe(0);
  });
});
