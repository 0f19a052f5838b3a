// The live follow client's pure parts (web/src/features/logs/api/follow.ts): the socket URL carries
// no token, and only well-formed Worker messages are taken.
import { describe, expect, it } from "vitest";
import { followSocketUrl, parseFollowMessage } from "../../web/src/features/logs/api/follow.ts";

describe("followSocketUrl", () => {
  it("keeps the page's host and picks ws/wss from its scheme", () => {
    expect(followSocketUrl({ protocol: "http:", host: "127.0.0.1:8787" }, "/api/vms/x/logs/follow")).toBe("ws://127.0.0.1:8787/api/vms/x/logs/follow");
    expect(followSocketUrl({ protocol: "https:", host: "qx.example" }, "/api/vms/x/logs/follow")).toBe("wss://qx.example/api/vms/x/logs/follow");
  });
});

describe("parseFollowMessage", () => {
  it("takes appends, known statuses and errors", () => {
    expect(parseFollowMessage('{"type":"append","text":"a\\nb"}')).toEqual({ type: "append", text: "a\nb" });
    expect(parseFollowMessage('{"type":"status","status":"rotated"}')).toEqual({ type: "status", status: "rotated" });
    expect(parseFollowMessage('{"type":"error","code":"node_offline","message":"gone"}')).toEqual({ type: "error", code: "node_offline", message: "gone" });
    expect(parseFollowMessage('{"type":"error","code":"x"}')).toEqual({ type: "error", code: "x", message: "x" });
  });

  it("drops anything else", () => {
    for (const bad of ["", "not json", "null", "[]", '{"type":"append","text":5}', '{"type":"status","status":"exploded"}', '{"type":"html","html":"<b>"}', '{"type":"error"}'])
      expect(parseFollowMessage(bad)).toBeNull();
  });
});
