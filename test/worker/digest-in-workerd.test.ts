// The inventory digest runs in workerd exactly as in Node: the control plane computes it over its
// records with the same module the agent uses. FNV-1a 64 vectors, and every bucket equal to a
// BigInt reference over the same lines, for names in Unicode (both normal forms), quotes and `%`.
import { describe, expect, it } from "vitest";
import {
  DIGEST_BUCKETS,
  Fnv1a64,
  digestBucket,
  digestLine,
  inventoryDigest,
  type DigestVm,
} from "../../protocol/digest.ts";

function fnvReference(bytes: Uint8Array): string {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h.toString(16).padStart(16, "0");
}

const NAMES = [
  "Windows 11 Pro",
  "тест-вм",
  "caf\u00e9",
  "cafe\u0301",
  "db (copy)",
  `it's "quoted"`,
  "100% cpu",
  ".hidden",
];
const vms: DigestVm[] = Array.from({ length: 40 }, (_, i) => ({
  uuid: `${((i * 2654435761) >>> 0).toString(16).padStart(8, "0")}-0000-4000-8000-${String(i).padStart(12, "0")}`,
  state: i % 2 ? "RUNNING" : "STOPPED",
  name: `${NAMES[i % NAMES.length]} ${i}`,
  vcpus: 1 + (i % 4),
  memoryMiB: 512 * (1 + (i % 3)),
}));

describe("digest in workerd", () => {
  it("FNV-1a 64 test vectors", () => {
    const hex = (s: string) => new Fnv1a64().update(new TextEncoder().encode(s)).hex();
    expect([hex(""), hex("a"), hex("foobar")]).toEqual(["cbf29ce484222325", "af63dc4c8601ec8c", "85944171f73967e8"]);
  });

  it("each bucket equals the BigInt reference over its sorted lines", () => {
    const d = inventoryDigest(vms);
    expect(d.count).toBe(40);
    const enc = new TextEncoder();
    for (let b = 0; b < DIGEST_BUCKETS; b++) {
      const lines = vms
        .filter((v) => digestBucket(v.uuid) === b.toString(16))
        .sort((x, y) => (x.uuid < y.uuid ? -1 : 1))
        .map((v) => digestLine(v))
        .join("");
      expect(d.buckets[b], `bucket ${b.toString(16)}`).toBe(fnvReference(enc.encode(lines)));
    }
  });
});
