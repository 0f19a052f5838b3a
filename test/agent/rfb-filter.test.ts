// The agent's RFB parsing: a watcher's input messages are dropped whole however the bytes are split,
// everything else passes unchanged, and a display that asks for a password is never relayed.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RfbClientFilter, RfbError, RfbServerGate } from "../../agent/console/rfb.ts";
import { vncTarget } from "../../agent/console/vnc-display.ts";

const bytes = (...parts: (number[] | string)[]) =>
  Uint8Array.from(parts.flatMap((p) => (typeof p === "string" ? [...Buffer.from(p, "latin1")] : p)));
const u16 = (n: number) => [n >> 8, n & 0xff];
const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

const handshake = bytes("RFB 003.008\n", [1], [1]); // version, security None, ClientInit shared
const setPixelFormat = bytes([0, 0, 0, 0], new Array(16).fill(7));
const setEncodings = bytes([2, 0], u16(3), u32(0), u32(7), u32(0xfffffefe));
const updateRequest = bytes([3, 1], u16(0), u16(0), u16(640), u16(480));
const key = bytes([4, 1, 0, 0], u32(0x61));
const pointer = bytes([5, 1], u16(10), u16(20));
const cutText = bytes([6, 0, 0, 0], u32(5), "hello");
const extendedCut = bytes([6, 0, 0, 0], u32(-4 >>> 0), [1, 2, 3, 4]);
const qemuKey = bytes([255, 0], u16(1), u32(0x61), u32(0x1e));
const qemuAudio = bytes([255, 1], u16(0));
const fence = bytes([248, 0, 0, 0], u32(1), [3], [9, 9, 9]);

const allowed = [setPixelFormat, setEncodings, updateRequest, fence];
const input = [key, pointer, cutText, extendedCut, qemuKey, qemuAudio];

function concat(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

/** Feeds `data` cut at `cuts` and returns everything passed. */
function run(filter: RfbClientFilter, data: Uint8Array, cuts: number[]): Uint8Array {
  const points = [...new Set(cuts.map((c) => c % (data.byteLength + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let at = 0;
  for (const p of [...points, data.byteLength]) {
    out.push(filter.feed(data.subarray(at, p)));
    at = p;
  }
  return concat(out);
}

describe("a watcher's RFB input is dropped whole", () => {
  it("however the stream is split, only the handshake and non-input messages pass, unchanged", () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...allowed, ...input), { maxLength: 30 }),
        fc.array(fc.nat(2000), { maxLength: 20 }),
        (messages, cuts) => {
          const stream = concat([handshake, ...messages]);
          const passed = run(new RfbClientFilter(true), stream, cuts);
          expect([...passed]).toEqual([...concat([handshake, ...messages.filter((m) => allowed.includes(m))])]);
        },
      ),
    );
  });

  it("a writer's stream passes whole, its messages counted by kind", () => {
    const filter = new RfbClientFilter(false);
    const stream = concat([handshake, updateRequest, key, pointer, qemuKey]);
    expect([...run(filter, stream, [3, 17, 25])]).toEqual([...stream]);
    expect(filter.counts.passed).toMatchObject({ 3: 1, 4: 1, 5: 1, 255: 1 });
    expect(filter.counts.dropped).toEqual({});
  });

  it("a watcher sending an RFB message of unknown length is cut off, not passed", () => {
    const filter = new RfbClientFilter(true);
    filter.feed(handshake);
    expect(() => filter.feed(bytes([77, 1, 2, 3]))).toThrow(RfbError);
  });

  it("a viewer choosing a password security type is refused", () => {
    const filter = new RfbClientFilter(true);
    expect(() => filter.feed(bytes("RFB 003.008\n", [2]))).toThrow(/only displays without a password/);
  });
});

describe("the server's security types", () => {
  it("None offered: everything passes once the client's version is known", () => {
    const gate = new RfbServerGate();
    expect(Buffer.from(gate.feed(bytes("RFB 003.008\n"))).toString()).toBe("RFB 003.008\n");
    expect(gate.feed(bytes([2, 2, 1]))).toHaveLength(0); // held until the client's version says the format
    expect([...gate.clientVersion(8)]).toEqual([2, 2, 1]);
    expect(gate.verdict).toEqual({ kind: "none" });
    expect([...gate.feed(bytes([0, 0, 0, 0]))]).toEqual([0, 0, 0, 0]);
  });

  it("only a password (or TLS) offered: refused, and the types never reach the viewer", () => {
    const gate = new RfbServerGate();
    gate.feed(bytes("RFB 003.008\n"));
    gate.clientVersion(8);
    expect(gate.feed(bytes([2, 2, 19]))).toHaveLength(0);
    expect(gate.verdict).toEqual({ kind: "password", offered: [2, 19] });
  });

  it("RFB 3.3: the server decides the type in four bytes", () => {
    const gate = new RfbServerGate();
    gate.feed(bytes("RFB 003.003\n"));
    gate.clientVersion(3);
    gate.feed(bytes(u32(2)));
    expect(gate.verdict).toEqual({ kind: "password", offered: [2] });
  });
});

describe("where a domain's VNC server is, from its live XML", () => {
  it("reads the port and listen address, a wildcard meaning this host's loopback", () => {
    expect(
      vncTarget(
        "<domain><devices><graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics></devices></domain>",
      ),
    ).toEqual({ kind: "tcp", host: "127.0.0.1", port: 5901 });
    expect(vncTarget(`<graphics type="vnc" port="5902" listen="0.0.0.0"/>`)).toEqual({
      kind: "tcp",
      host: "127.0.0.1",
      port: 5902,
    });
    expect(
      vncTarget(
        "<graphics type='vnc' socket='/run/x/vnc.sock'><listen type='socket' socket='/run/x/vnc.sock'/></graphics>",
      ),
    ).toEqual({ kind: "unix", path: "/run/x/vnc.sock" });
  });

  it("no display, or one not running yet, says so", () => {
    expect(vncTarget("<domain><devices><graphics type='spice' port='5900'/></devices></domain>")).toHaveProperty(
      "none",
      expect.stringMatching(/no VNC display/),
    );
    expect(vncTarget("<graphics type='vnc' port='-1' autoport='yes'/>")).toHaveProperty(
      "none",
      expect.stringMatching(/no port yet/),
    );
  });
});
