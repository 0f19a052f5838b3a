// How the agent frames a console's output: the first output after a quiet spell (a keystroke's echo)
// goes out at once, output that keeps coming is coalesced into one frame per CONSOLE_COALESCE_MS,
// and a console that ends leaves nothing in the agent's counts. The console stream is a fake console
// stream (what libvirt's stream gives the agent): the clock has to be the test's to say "at once".
import { afterEach, describe, expect, it, vi } from "vitest";
import { ConsoleStreams, type ConsoleStream } from "../../agent/console/console.ts";
import { CONSOLE_COALESCE_MS, decodeLinkFrame } from "../../protocol/console.ts";
import type { AgentMessage } from "../../protocol/wire.ts";
import { silentLog } from "./helpers.ts";

afterEach(() => vi.useRealTimers());

/** A fake console stream: output pushed by the test, its end called by the test. */
function fakeConsoleStream() {
  let data: (bytes: Uint8Array) => void = () => {};
  let end: (e: { error?: { code?: number; message: string } }) => void = () => {};
  const stream: ConsoleStream = {
    write: () => {},
    onData: (cb) => void (data = cb),
    onEnd: (cb) => void (end = cb),
    pause: () => {},
    resume: () => {},
    close: () => {},
  };
  return { stream, print: (s: string) => data(new TextEncoder().encode(s)), end: () => end({}) };
}

async function openOne() {
  const fake = fakeConsoleStream();
  const sent: AgentMessage[] = [];
  const frames: string[] = [];
  const consoles = new ConsoleStreams({
    opener: { openConsole: async () => fake.stream },
    send: (m) => (sent.push(m), true),
    sendBytes: (b) => {
      const f = decodeLinkFrame(b);
      if (f?.kind === "output") frames.push(new TextDecoder().decode(f.bytes));
      return true;
    },
    isRunning: async () => true,
    log: silentLog,
  });
  consoles.handle({
    type: "console.open",
    id: "c1",
    payload: {
      vmId: "11111111-0000-4000-8000-000000000001",
      name: "web",
      channel: 7,
      force: false,
      windowBytes: 256 * 1024,
    },
  });
  await vi.waitFor(() => expect(sent.map((m) => m.type)).toContain("console.opened"));
  return { fake, consoles, frames, sent };
}

describe("console output frames", () => {
  it("an echo after a quiet spell goes at once; a stream is coalesced", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const { fake, frames } = await openOne();
    fake.print("k");
    expect(frames).toEqual(["k"]); // no timer had to run
    fake.print("a");
    fake.print("b");
    expect(frames).toEqual(["k"]); // right behind it: held
    vi.advanceTimersByTime(CONSOLE_COALESCE_MS);
    expect(frames).toEqual(["k", "ab"]);
    vi.advanceTimersByTime(CONSOLE_COALESCE_MS);
    fake.print("x"); // quiet again
    expect(frames).toEqual(["k", "ab", "x"]);
  });

  it("the console's entries leave the counts when it ends", async () => {
    const { fake, consoles, sent } = await openOne();
    expect(consoles.debugCounts()).toEqual({ consoles: 1, consoleChannels: 1, consolePendingBytes: 0 });
    fake.end();
    await vi.waitFor(() => expect(sent.map((m) => m.type)).toContain("console.closed"));
    expect(consoles.debugCounts()).toEqual({ consoles: 0, consoleChannels: 0, consolePendingBytes: 0 });
  });
});
