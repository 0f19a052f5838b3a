// The agent checks what it receives without zod (protocol/server-frames.ts, console-checks.ts): these
// pin its checks to the zod schemas, frame by frame, on valid frames and on every field made wrong.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import * as leanConsole from "../../protocol/console-checks.ts";
import { ConsoleClientMessage, ConsoleRequest } from "../../protocol/console.ts";
import * as lean from "../../protocol/server-frames.ts";
import { DomainName, EnrollResponse, PollResponse, ServerMessage } from "../../protocol/wire.ts";

const VM = "3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
const target = { vmId: VM, name: "web 01 — ünïcode", deadline: 1_700_000_000_000 };
const frames: Record<string, unknown>[] = [
  { type: "welcome", id: "w", payload: { nodeId: "n", serverTime: 1, heartbeatMs: 20_000 } },
  {
    type: "welcome",
    id: "w",
    payload: { nodeId: "n", serverTime: -5, heartbeatMs: 1, reconnectSpreadMs: 0, features: ["console", "x"] },
  },
  { type: "vm.state", id: "r1", payload: { ...target, excerptLines: 50 } },
  { type: "vm.logs", id: "r2", payload: { ...target, lines: 10_000, maxBytes: 8 * 1024 * 1024 } },
  { type: "vm.start", id: "r3", payload: target },
  { type: "vm.stop", id: "r4", payload: { ...target, graceMs: 60_000 } },
  { type: "vm.forceStop", id: "r5", payload: target },
  { type: "resync", id: "r6", payload: {} },
  { type: "resync", id: "r7", payload: { vmIds: [VM], buckets: ["a", "0"] } },
  { type: "vm.logs.follow", id: "f", payload: target },
  { type: "vm.logs.unfollow", id: "f", payload: {} },
  { type: "error", id: "e", payload: { code: "vm_cap_exceeded", message: "too many" } },
  {
    type: "agent.update",
    id: "u",
    payload: { version: "1.2.3", sha256: "ab".repeat(32), size: 600_000, requestedBy: "admin@example.com" },
  },
  {
    type: "console.open",
    id: "c",
    payload: {
      vmId: VM,
      name: "a",
      channel: 1,
      force: false,
      windowBytes: 262_144,
      display: { type: "vnc", mode: "ro" },
    },
  },
  { type: "console.ack", id: "c", payload: { offset: 0 } },
  { type: "console.close", id: "c", payload: {} },
  { type: "metrics.live", id: "m", payload: { leaseMs: 120_000 } },
];

/** Values that sit on or just past the schemas' edges, or are of the wrong kind. */
const tricky: unknown[] = [
  null,
  true,
  false,
  0,
  -0,
  -1,
  1,
  1.5,
  9,
  63,
  64,
  65,
  200,
  201,
  2000,
  2001,
  10_000,
  10_001,
  120_000,
  120_001,
  600_000,
  600_001,
  3_600_000,
  3_600_001,
  0xffffffff,
  0x100000000,
  16 * 1024 * 1024 + 1,
  64 * 1024 * 1024 + 1,
  8 * 1024 * 1024 + 1,
  2 ** 53,
  2 ** 53 - 1,
  1e300,
  "",
  "a",
  "A",
  "g",
  "/",
  "a/b",
  "a\0b",
  "x".repeat(64),
  "x".repeat(65),
  "😀".repeat(64),
  "😀".repeat(65),
  "\ud800".repeat(65),
  "x".repeat(1000),
  "x".repeat(1001),
  "😀".repeat(1000),
  VM,
  VM.toUpperCase(),
  VM.slice(1),
  "ab".repeat(32),
  "AB".repeat(32),
  "vnc",
  "rw",
  "ro",
  "rx",
  "welcome",
  "vm.start",
  [],
  [VM],
  ["a"],
  ["ab"],
  Array(65).fill("a"),
  Array(501).fill(VM),
  Array(17).fill("a"),
  {},
  { type: "vnc", mode: "rw" },
  { type: "vnc" },
];

/** Every path in a frame, the frame itself included (an extra key), so each can be made wrong. */
function paths(v: unknown, at: string[] = []): string[][] {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return [at];
  return [at, ...Object.entries(v).flatMap(([k, x]) => paths(x, [...at, k]))];
}

function withValue(frame: unknown, path: string[], key: string | null, value: unknown, drop: boolean): unknown {
  const copy = structuredClone(frame) as Record<string, unknown>;
  let node = copy;
  for (const p of path.slice(0, -1)) node = node[p] as Record<string, unknown>;
  const last = path.length ? path[path.length - 1] : null;
  if (last === null) {
    if (key) copy[key] = value; // an unknown key beside the known ones
    return drop ? null : copy;
  }
  if (drop) delete node[last];
  else node[last] = value;
  return copy;
}

function sameAsZod(json: unknown) {
  const z = ServerMessage.safeParse(json);
  const l = lean.ServerMessage(json);
  expect({ ok: l !== null, data: l?.value }).toEqual({ ok: z.success, data: z.success ? z.data : undefined });
}

describe("the agent's frame checks accept and return what wire.ts's schemas do", () => {
  it("every valid frame, as zod returns it", () => {
    for (const f of frames) {
      expect(ServerMessage.safeParse(f).success).toBe(true);
      sameAsZod(f);
    }
  });

  it("each field of each frame set to each edge or wrong-kind value, dropped, or joined by an unknown key", () => {
    for (const f of frames)
      for (const p of paths(f)) {
        if (p.length) sameAsZod(withValue(f, p, null, undefined, true));
        for (const value of tricky)
          for (const key of p.length ? [null] : ["extra", "type", "id", "payload", "__proto__"])
            sameAsZod(withValue(f, p, key, value, false));
      }
  });

  it("arbitrary JSON, and frames whose payload is arbitrary JSON", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom(...frames.map((f) => f.type as string)), (json, type) => {
        sameAsZod(json);
        sameAsZod({ type, id: "x", payload: json });
      }),
      { numRuns: 1000 },
    );
  });

  it("a text frame that is not JSON, or not a known message, is null, never a throw", () => {
    for (const text of ["", "{", "null", "[]", '{"type":"ping"}', '{"type":"welcome"}', "\u0000"])
      expect(lean.parseServerFrame(text)).toBeNull();
    expect(lean.parseServerFrame(JSON.stringify(frames[0]))).toEqual(frames[0]);
  });

  it("poll answers, enrollment answers and domain names", () => {
    const poll = { connId: "c", cursor: "1", messages: frames.slice(0, 3) };
    for (const v of [
      poll,
      { ...poll, messages: Array(101).fill(frames[0]) },
      { ...poll, connId: "" },
      { ...poll, messages: [{}] },
    ]) {
      const z = PollResponse.safeParse(v);
      expect(lean.PollResponse(v)?.value ?? null).toEqual(z.success ? z.data : null);
    }
    for (const v of [
      { nodeId: "n", credential: "c", extra: 1 },
      { nodeId: "n" },
      null,
      { nodeId: 1, credential: "c" },
    ]) {
      const z = EnrollResponse.safeParse(v);
      expect(lean.EnrollResponse(v)?.value ?? null).toEqual(z.success ? z.data : null);
    }
    for (const name of ["", "a", "a/b", "a\0", "x".repeat(1000), "x".repeat(1001), "😀".repeat(1000), "..", "web 01"])
      expect(lean.DomainName(name) !== null).toBe(DomainName.safeParse(name).success);
  });
});

describe("the host view's console checks accept and return what console.ts's schemas do", () => {
  const requests: unknown[] = [
    { mode: "rw" },
    { mode: "ro", force: true, type: "vnc" },
    { mode: "rw", type: "serial", force: false },
    { mode: "rx" },
    { mode: "rw", extra: 1 },
    { mode: "rw", force: "yes" },
    { mode: "rw", type: "spice" },
    { mode: "rw", force: undefined },
    {},
    [],
    null,
    "rw",
  ];
  const messages: unknown[] = [
    { type: "hello", ticket: "t" },
    { type: "hello", resume: "r", from: 0, extra: 1 },
    { type: "hello" },
    { type: "hello", ticket: "" },
    { type: "hello", ticket: "x".repeat(201) },
    { type: "hello", from: -1 },
    { type: "hello", from: 1.5 },
    { type: "ack", offset: 5 },
    { type: "ack" },
    { type: "take", x: 1 },
    { type: "nope" },
    [],
    null,
  ];

  it("ticket requests (unknown keys refused) and browser messages", () => {
    for (const v of requests) {
      const z = ConsoleRequest.safeParse(v);
      expect(leanConsole.ConsoleRequest(v)?.value ?? null).toEqual(z.success ? z.data : null);
    }
    for (const v of messages) {
      const z = ConsoleClientMessage.safeParse(v);
      expect(leanConsole.ConsoleClientMessage(v)?.value ?? null).toEqual(z.success ? z.data : null);
    }
  });

  it("arbitrary JSON", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (json) => {
        const a = ConsoleRequest.safeParse(json);
        expect(leanConsole.ConsoleRequest(json)?.value ?? null).toEqual(a.success ? a.data : null);
        const b = ConsoleClientMessage.safeParse(json);
        expect(leanConsole.ConsoleClientMessage(json)?.value ?? null).toEqual(b.success ? b.data : null);
      }),
      { numRuns: 500 },
    );
  });
});
