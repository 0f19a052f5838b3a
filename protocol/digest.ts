// The anti-entropy digest of a node's inventory: a count and one hash per UUID bucket, computed the
// same way by the agent (over what libvirt lists) and by the control plane (over its records), so a
// difference names the buckets to resync without either side sending the full list. Runs unchanged
// in Node and workerd: no node: imports, UTF-8 through TextEncoder, FNV-1a 64 in 16-bit limbs.

/** A bucket is the UUID's first hex digit: 16 buckets, one small frame whatever the host's size. */
export const DIGEST_BUCKETS = 16;

/** What a VM contributes to its bucket's hash: the fields its record must match. */
export type DigestVm = { uuid: string; state: string; name: string; vcpus: number; memoryMiB: number };

export type InventoryDigest = {
  /** how many VMs the digest covers */
  count: number;
  /** FNV-1a 64 of each bucket's lines, lowercase hex (16 digits), bucket "0" first */
  buckets: string[];
};

const FNV64_OFFSET = "cbf29ce484222325";

/** The bucket of a UUID: its first hex digit, lowercase. */
export function digestBucket(uuid: string): string {
  return uuid.charAt(0).toLowerCase();
}

/** One VM's line, unambiguous whatever its name holds: the name goes last, after its UTF-8 length. */
export function digestLine(vm: DigestVm, encoder = new TextEncoder()): string {
  return `${vm.uuid.toLowerCase()}|${vm.state}|${vm.vcpus}|${vm.memoryMiB}|${encoder.encode(vm.name).length}:${vm.name}\n`;
}

/** The digest of a whole inventory: lines sorted by UUID within each bucket, each bucket hashed. */
export function inventoryDigest(vms: readonly DigestVm[]): InventoryDigest {
  const encoder = new TextEncoder();
  const byBucket: DigestVm[][] = Array.from({ length: DIGEST_BUCKETS }, () => []);
  for (const vm of vms) {
    const b = parseInt(digestBucket(vm.uuid), 16);
    if (!(b >= 0 && b < DIGEST_BUCKETS)) throw new RangeError(`not a UUID: ${vm.uuid}`);
    byBucket[b].push(vm);
  }
  const buckets = byBucket.map((list) => {
    if (list.length === 0) return FNV64_OFFSET;
    const sorted = list
      .map((vm) => ({ key: vm.uuid.toLowerCase(), vm }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const h = new Fnv1a64();
    for (const { vm } of sorted) h.update(encoder.encode(digestLine(vm, encoder)));
    return h.hex();
  });
  return { count: vms.length, buckets };
}

/** The buckets whose hashes differ between two digests (all of them when the shapes differ). */
export function differingBuckets(a: InventoryDigest, b: InventoryDigest): string[] {
  const out: string[] = [];
  for (let i = 0; i < DIGEST_BUCKETS; i++) if (a.buckets[i] !== b.buckets[i]) out.push(i.toString(16));
  return out;
}

/** FNV-1a 64: xor the byte in, multiply by 2^40 + 0x1b3 modulo 2^64, on four 16-bit limbs. */
export class Fnv1a64 {
  // h = l3·2^48 + l2·2^32 + l1·2^16 + l0
  private l0 = 0x2325;
  private l1 = 0x8422;
  private l2 = 0x9ce4;
  private l3 = 0xcbf2;

  update(bytes: Uint8Array): this {
    let { l0, l1, l2, l3 } = this;
    for (let i = 0; i < bytes.length; i++) {
      l0 ^= bytes[i];
      // h·0x1b3 + h·2^40; 2^40 shifts limb k to limb k+2 plus 8 bits: (l0 << 8) lands in l2, (l1 << 8) in l3.
      const t0 = l0 * 0x1b3;
      const t1 = l1 * 0x1b3 + (t0 >>> 16);
      const t2 = l2 * 0x1b3 + (t1 >>> 16) + (l0 << 8);
      const t3 = l3 * 0x1b3 + (t2 >>> 16) + (l1 << 8);
      l0 = t0 & 0xffff;
      l1 = t1 & 0xffff;
      l2 = t2 & 0xffff;
      l3 = t3 & 0xffff;
    }
    this.l0 = l0;
    this.l1 = l1;
    this.l2 = l2;
    this.l3 = l3;
    return this;
  }

  hex(): string {
    const h4 = (n: number) => n.toString(16).padStart(4, "0");
    return h4(this.l3) + h4(this.l2) + h4(this.l1) + h4(this.l0);
  }
}
