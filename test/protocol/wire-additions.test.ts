// The wire's additions for names and anti-entropy, as the Worker will parse them: any domain name
// libvirt allows crosses in an inventory (only '/' and NUL, which libvirt refuses, do not); a scoped
// resync, a scoped inventory, a digest, a progress frame and an error carrying the domain's state
// parse; and an older peer's frames (no features, no scope, no state) still parse as before.
import { describe, expect, it } from "vitest";
import { AgentMessage, livenessHeartbeats, ServerMessage, VmInfo } from "../../protocol/wire.ts";
import { parseServerFrame } from "../../protocol/server-frames.ts";
import { inventoryDigest } from "../../protocol/digest.ts";

const vm = (name: string) => ({
  uuid: "11111111-0000-4000-8000-000000000001",
  name,
  state: "RUNNING",
  libvirtState: "running",
  vcpus: 1,
  memoryMiB: 64,
});

describe("wire additions", () => {
  it.each([
    "Windows 11 Pro",
    "тест-вм",
    "\u0401лка",
    "\u0415\u0308лка",
    "db (copy)",
    `it's "q"`,
    "100%",
    "%2e%2e",
    ".hidden",
    "..",
    "R&D <lab>",
    "a\nb",
  ])("a domain named %j crosses the wire", (name) => expect(VmInfo.safeParse(vm(name)).success).toBe(true));

  it.each(["a/b", "../etc/passwd", "x\0", ""])("a name libvirt refuses (%j) does not", (name) => {
    expect(VmInfo.safeParse(vm(name)).success).toBe(false);
  });

  it("new frames and fields parse; old ones still do", () => {
    const ok = (schema: typeof AgentMessage | typeof ServerMessage, frame: unknown) =>
      expect(schema.safeParse(frame).success, JSON.stringify(frame)).toBe(true);
    ok(ServerMessage, {
      type: "welcome",
      id: "w",
      payload: {
        nodeId: "n",
        serverTime: 1,
        heartbeatMs: 20_000,
        features: ["progress", "digest", "some-future-thing"],
      },
    });
    ok(ServerMessage, { type: "welcome", id: "w", payload: { nodeId: "n", serverTime: 1, heartbeatMs: 20_000 } });
    ok(ServerMessage, { type: "resync", id: "r", payload: {} });
    ok(ServerMessage, {
      type: "resync",
      id: "r",
      payload: { vmIds: ["11111111-0000-4000-8000-000000000001"], buckets: ["a", "0"] },
    });
    expect(ServerMessage.safeParse({ type: "resync", id: "r", payload: { buckets: ["g"] } }).success).toBe(false);
    ok(AgentMessage, {
      type: "hello",
      id: "h",
      payload: { agentVersion: "1", hostname: "h", libvirtVersion: "10.0.0", protocolVersion: 1, features: ["digest"] },
    });
    ok(AgentMessage, {
      type: "inventory",
      id: "i",
      payload: { syncId: "r", seq: 0, done: true, vms: [vm("тест-вм")], scope: { buckets: ["1"] } },
    });
    ok(AgentMessage, { type: "inventory.digest", id: "d", payload: inventoryDigest([vm("x")]) });
    ok(AgentMessage, {
      type: "progress",
      id: "p",
      payload: { phase: "working", elapsedMs: 3000, nextWithinMs: 3000, state: "RUNNING", libvirtState: "running" },
    });
    ok(AgentMessage, { type: "progress", id: "p", payload: { phase: "queued", elapsedMs: 0, nextWithinMs: 3000 } });
    ok(AgentMessage, {
      type: "error",
      id: "e",
      payload: { code: "overridden", message: "overridden by force stop", state: "STOPPED", libvirtState: "shutoff" },
    });
    ok(AgentMessage, { type: "error", id: "e", payload: { code: "libvirt_error", message: "down" } });
  });
});

describe("the liveness socket's ping rate", () => {
  it("leaves a heartbeat to spare inside the offline window, never less than one ping a heartbeat", () => {
    expect(livenessHeartbeats(60_000, 20_000)).toBe(2); // the defaults: a ping every 40 s
    expect(livenessHeartbeats(30_000, 20_000)).toBe(1);
    expect(livenessHeartbeats(4_000, 20_000)).toBe(1);
    expect(livenessHeartbeats(200_000, 20_000)).toBe(9);
    const welcome = {
      type: "welcome",
      id: "c1",
      payload: { nodeId: "n", serverTime: 1, heartbeatMs: 20_000, livenessHeartbeats: 2, features: [] },
    };
    expect(ServerMessage.safeParse(welcome).success).toBe(true);
    expect(parseServerFrame(JSON.stringify(welcome))).toMatchObject({ payload: { livenessHeartbeats: 2 } });
    const { livenessHeartbeats: _omitted, ...older } = welcome.payload;
    expect(parseServerFrame(JSON.stringify({ ...welcome, payload: older }))?.type).toBe("welcome");
  });
});
