// The XDR codec and the framing on their own: values survive a round trip (fast-check), every read
// is bounds-checked, and the splitter yields the same packets however the bytes are chunked.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FramingError, PacketSplitter, encodePacket } from "../../../agent/libvirt/packet.ts";
import { readTypedParam, uuidBytes, uuidString } from "../../../agent/libvirt/procedures.ts";
import { MAX_PACKET_BYTES } from "../../../agent/libvirt/protocol.ts";
import { XdrError, XdrReader, XdrWriter } from "../../../agent/libvirt/xdr.ts";

describe("XDR codec", () => {
  it("round-trips ints, hypers as BigInt, doubles, strings, opaque and optional values", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -0x80000000, max: 0x7fffffff }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.double({ noNaN: true }),
        fc.string({ unit: "grapheme" }),
        fc.uint8Array({ maxLength: 40 }),
        fc.option(fc.string(), { nil: null }),
        fc.array(fc.integer({ min: -5, max: 5 }), { maxLength: 10 }),
        (i, u, h, uh, d, s, bytes, opt, arr) => {
          const w = new XdrWriter()
            .int(i)
            .uint(u)
            .hyper(h)
            .uhyper(uh)
            .double(d)
            .string(s)
            .varOpaque(bytes)
            .fixedOpaque(bytes)
            .optional(opt, (x, v) => x.string(v))
            .array(arr, (x, v) => x.int(v));
          const out = w.bytes();
          expect(out.byteLength % 4).toBe(0); // everything padded to 4-byte units
          const r = new XdrReader(out);
          expect(r.int()).toBe(i);
          expect(r.uint()).toBe(u);
          expect(r.hyper()).toBe(h);
          expect(r.uhyper()).toBe(uh);
          expect(Object.is(r.double(), d)).toBe(true);
          expect(r.string()).toBe(s);
          expect(r.varOpaque()).toEqual(bytes);
          expect(r.fixedOpaque(bytes.byteLength)).toEqual(bytes);
          expect(r.optional((x) => x.string())).toBe(opt);
          expect(r.array((x) => x.int())).toEqual(arr);
          r.end();
        },
      ),
    );
  });

  it("keeps a cumulative counter past 2^53 exact (a hyper is a BigInt)", () => {
    const big = 2n ** 60n + 7n;
    expect(new XdrReader(new XdrWriter().uhyper(big).bytes()).uhyper()).toBe(big);
  });

  it("pads variable-length data with zeros to 4 bytes", () => {
    expect([...new XdrWriter().string("abcde").bytes()]).toEqual([0, 0, 0, 5, 97, 98, 99, 100, 101, 0, 0, 0]);
  });

  it("refuses reads past the end, lengths over their maximum or over what is left, and leftovers", () => {
    expect(() => new XdrReader(new Uint8Array(3)).int()).toThrow(XdrError);
    expect(() => new XdrReader(new XdrWriter().uint(10).bytes()).varOpaque(4)).toThrow(/over the maximum/);
    expect(() => new XdrReader(new XdrWriter().uint(1000).bytes()).string()).toThrow(/needs 1000 bytes/);
    expect(() => new XdrReader(new XdrWriter().uint(0xffffffff).bytes()).array((r) => r.int())).toThrow(XdrError);
    expect(() => new XdrReader(new XdrWriter().int(2).bytes()).bool()).toThrow(/neither 0 nor 1/);
    expect(() => new XdrReader(new XdrWriter().string("\xff").bytes().fill(0xff, 4, 5)).string()).toThrow(/UTF-8/);
    const r = new XdrReader(new XdrWriter().int(1).int(2).bytes());
    r.int();
    expect(() => r.end()).toThrow(/4 bytes left over/);
  });

  it("never throws anything but XdrError on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          const r = new XdrReader(bytes);
          r.array((x) => readTypedParam(x));
          r.end();
        } catch (err) {
          expect(err).toBeInstanceOf(XdrError);
        }
      }),
    );
  });

  it("writes UUIDs as 16 bytes and reads them back in canonical form", () => {
    const uuid = "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f07";
    expect(uuidBytes(uuid)).toHaveLength(16);
    expect(uuidString(uuidBytes(uuid.toUpperCase()))).toBe(uuid);
    expect(() => uuidBytes("not-a-uuid")).toThrow(XdrError);
  });
});

describe("packet framing", () => {
  const header = { program: 0x20008086, version: 1, procedure: 212, type: 1, serial: 7, status: 0 };

  it("writes a length that counts itself and the 24-byte header", () => {
    const p = encodePacket(header, new Uint8Array([1, 2, 3, 4]));
    expect(p.readUInt32BE(0)).toBe(4 + 24 + 4);
    expect(p.readUInt32BE(4)).toBe(0x20008086);
    expect(p.readUInt32BE(20)).toBe(7);
  });

  it("yields the same packets however the stream is cut into chunks", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 64 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
        (bodies, cuts) => {
          const wire = Buffer.concat(bodies.map((b, i) => encodePacket({ ...header, serial: i + 1 }, b)));
          const splitter = new PacketSplitter();
          const got: Uint8Array[] = [];
          let at = 0;
          for (let i = 0; at < wire.length; i++) {
            const n = cuts[i % cuts.length];
            for (const p of splitter.push(wire.subarray(at, at + n))) got.push(p.body);
            at += n;
          }
          expect(got.map((b) => [...b])).toEqual(bodies.map((b) => [...b]));
          expect(splitter.partial).toBe(0);
        },
      ),
    );
  });

  it("refuses a length over 16 MiB or shorter than the header before buffering the body", () => {
    const big = Buffer.alloc(28);
    big.writeUInt32BE(MAX_PACKET_BYTES + 1, 0);
    expect(() => new PacketSplitter().push(big)).toThrow(FramingError);
    const short = Buffer.alloc(28);
    short.writeUInt32BE(27, 0);
    expect(() => new PacketSplitter().push(short)).toThrow(/shorter than its header/);
    expect(() => encodePacket(header, new Uint8Array(MAX_PACKET_BYTES))).toThrow(FramingError);
  });
});
