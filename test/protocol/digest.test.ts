// The inventory digest (protocol/digest.ts): FNV-1a 64 against its published test vectors and a
// BigInt reference, bucket hashes that do not depend on list order, that change with each field a
// record must match, that name exactly the buckets holding a difference, and its size on the wire.
import { describe, expect, it } from "vitest";
import {
  DIGEST_BUCKETS,
  Fnv1a64,
  differingBuckets,
  digestBucket,
  inventoryDigest,
  type DigestVm,
} from "../../protocol/digest.ts";
import { InventoryDigestFrame } from "../../protocol/wire.ts";

const fnv = (s: string) => new Fnv1a64().update(new TextEncoder().encode(s)).hex();

/** The textbook definition, one byte at a time in BigInt: the reference the limb arithmetic must equal. */
function fnvReference(bytes: Uint8Array): string {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h.toString(16).padStart(16, "0");
}

/** Deterministic UUIDs spread over every bucket. */
function vmsOf(n: number): DigestVm[] {
  return Array.from({ length: n }, (_, i) => {
    const hex = ((i * 2654435761) >>> 0).toString(16).padStart(8, "0");
    return {
      uuid: `${hex}-0000-4000-8000-${i.toString(16).padStart(12, "0")}`,
      state: i % 3 ? "RUNNING" : "STOPPED",
      name: `vm-${i}`,
      vcpus: 2,
      memoryMiB: 2048,
    };
  });
}

describe("FNV-1a 64", () => {
  it("matches the published test vectors", () => {
    expect(fnv("")).toBe("cbf29ce484222325");
    expect(fnv("a")).toBe("af63dc4c8601ec8c");
    expect(fnv("foobar")).toBe("85944171f73967e8");
  });

  it("equals the BigInt reference on every byte value and on long multi-byte text", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(new Fnv1a64().update(all).hex()).toBe(fnvReference(all));
    const text = new TextEncoder().encode(
      "тест-вм Windows 11 Pro db (copy) café café 100% \"q\" 'q' .hidden ".repeat(50),
    );
    expect(new Fnv1a64().update(text).hex()).toBe(fnvReference(text));
    // Fed in pieces or at once: the same hash.
    const pieces = new Fnv1a64();
    for (let i = 0; i < text.length; i += 7) pieces.update(text.subarray(i, i + 7));
    expect(pieces.hex()).toBe(fnvReference(text));
  });
});

describe("inventoryDigest", () => {
  const vms = vmsOf(50);

  it("counts the VMs and hashes each of the 16 buckets; an empty inventory is 16 empty-bucket hashes", () => {
    const d = inventoryDigest(vms);
    expect(d.count).toBe(50);
    expect(d.buckets).toHaveLength(DIGEST_BUCKETS);
    expect(inventoryDigest([])).toEqual({ count: 0, buckets: Array(16).fill("cbf29ce484222325") });
  });

  it("does not depend on the order of the list or the case of the UUIDs", () => {
    const shuffled = [...vms].reverse().map((v, i) => (i % 2 ? { ...v, uuid: v.uuid.toUpperCase() } : v));
    expect(inventoryDigest(shuffled)).toEqual(inventoryDigest(vms));
  });

  it.each([
    ["state", { state: "STOPPING" }],
    ["name", { name: "vm-renamed" }],
    ["name's normal form", { name: "caf\u0065\u0301" }],
    ["vcpus", { vcpus: 3 }],
    ["memory", { memoryMiB: 4096 }],
  ])("a different %s changes exactly that VM's bucket", (_what, change) => {
    const base = vms.map((v, i) => (i === 7 ? { ...v, name: "caf\u00e9" } : v));
    const changed = base.map((v, i) => (i === 7 ? { ...v, ...change } : v));
    expect(differingBuckets(inventoryDigest(base), inventoryDigest(changed))).toEqual([digestBucket(vms[7].uuid)]);
  });

  it("a VM missing from one side names its bucket, and the count differs", () => {
    const a = inventoryDigest(vms);
    const b = inventoryDigest(vms.slice(1));
    expect(b.count).toBe(49);
    expect(differingBuckets(a, b)).toEqual([digestBucket(vms[0].uuid)]);
  });

  it("a name cannot pass for another field: the name's byte length is in the line", () => {
    const one = { uuid: vms[0].uuid, state: "RUNNING", vcpus: 1, memoryMiB: 1 };
    expect(inventoryDigest([{ ...one, name: "a\n" }])).not.toEqual(inventoryDigest([{ ...one, name: "a" }]));
  });

  it("is a small frame whatever the host's size (figures printed for the report)", () => {
    const size = (n: number) => {
      const frame = { type: "inventory.digest", id: "digest-000001", payload: inventoryDigest(vmsOf(n)) };
      expect(InventoryDigestFrame.safeParse(frame).success).toBe(true);
      return new TextEncoder().encode(JSON.stringify(frame)).length;
    };
    const at50 = size(50);
    const at5000 = size(5000);
    console.log(`inventory.digest frame: ${at50} bytes at 50 VMs, ${at5000} bytes at 5,000 VMs`);
    expect(at50).toBeLessThan(512);
    expect(at5000 - at50).toBeLessThanOrEqual(3); // only the count's digits grow
  });
});
