// The live follow client's pure parts (web/src/features/logs/api/follow.ts): the socket URL carries
// no token, and only well-formed Worker messages are taken.
import { describe, expect, it } from "vitest";
import { followSocketUrl, joinFollowed, parseFollowMessage } from "../../web/src/features/logs/api/follow.ts";

describe("followSocketUrl", () => {
  it("keeps the page's host and picks ws/wss from its scheme", () => {
    expect(followSocketUrl({ protocol: "http:", host: "127.0.0.1:8787" }, "/api/vms/x/logs/follow")).toBe(
      "ws://127.0.0.1:8787/api/vms/x/logs/follow",
    );
    expect(followSocketUrl({ protocol: "https:", host: "qx.example" }, "/api/vms/x/logs/follow")).toBe(
      "wss://qx.example/api/vms/x/logs/follow",
    );
  });
});

describe("parseFollowMessage", () => {
  it("takes appends, known statuses and errors", () => {
    expect(parseFollowMessage('{"type":"append","text":"a\\nb"}')).toEqual({ type: "append", text: "a\nb" });
    expect(parseFollowMessage('{"type":"status","status":"rotated"}')).toEqual({ type: "status", status: "rotated" });
    expect(parseFollowMessage('{"type":"error","code":"node_offline","message":"gone"}')).toEqual({
      type: "error",
      code: "node_offline",
      message: "gone",
    });
    expect(parseFollowMessage('{"type":"error","code":"x"}')).toEqual({ type: "error", code: "x", message: "x" });
  });

  it("drops anything else", () => {
    for (const bad of [
      "",
      "not json",
      "null",
      "[]",
      '{"type":"append","text":5}',
      '{"type":"status","status":"exploded"}',
      '{"type":"html","html":"<b>"}',
      '{"type":"error"}',
    ])
      expect(parseFollowMessage(bad)).toBeNull();
  });
});

describe("joinFollowed", () => {
  it("drops the part of the live text the snapshot already holds", () => {
    expect(joinFollowed("a\nb\nc\n", "c\nd\n")).toBe("a\nb\nc\nd\n");
    expect(joinFollowed("a\nb\nc\n", "b\nc\nd\n")).toBe("a\nb\nc\nd\n");
    expect(joinFollowed("a\nb\n", "a\nb\n")).toBe("a\nb\n");
  });

  it("concatenates when there is no overlap: a gap, a new file, an empty side", () => {
    expect(joinFollowed("a\nb\n", "x\ny\n")).toBe("a\nb\nx\ny\n");
    expect(joinFollowed("", "x\n")).toBe("x\n");
    expect(joinFollowed("a\n", "")).toBe("a\n");
  });

  it("matches only from a line start, and a half-written last line continues", () => {
    expect(joinFollowed("say c\n", "c\nd\n")).toBe("say c\nc\nd\n");
    expect(joinFollowed("a\npart", "partial\n")).toBe("a\npartial\n");
  });

  it("stays quick on a 10,000-line snapshot with repetitive lines", () => {
    const base = Array.from({ length: 10_000 }, (_, i) => `2026-11-25T10:00:00.000000Z line ${i}\n`).join("");
    const live = Array.from({ length: 5_000 }, (_, i) => `2026-11-25T10:00:00.000000Z line ${9_990 + i}\n`).join("");
    const started = performance.now();
    const joined = joinFollowed(base, live);
    expect(performance.now() - started).toBeLessThan(200);
    expect(joined.split("\n").length - 1).toBe(14_990);
  });
});
