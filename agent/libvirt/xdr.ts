// XDR (RFC 4506) as libvirt's RPC uses it: big-endian 4-byte units, 64-bit `hyper` as BigInt, every
// variable-length item padded to 4 bytes, optional data as a 4-byte flag before the value. The
// reader checks every length against what is left and the declared maximum before it reads.

/** A body that does not decode: the peer sent something the protocol does not allow. */
export class XdrError extends Error {
  override name = "XdrError";
}

const pad = (n: number) => (4 - (n % 4)) % 4;
const utf8 = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

export class XdrReader {
  private readonly view: DataView;
  private readonly bytes: Uint8Array;
  private at = 0;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.bytes.byteLength - this.at;
  }

  private need(n: number, what: string) {
    if (n > this.remaining) throw new XdrError(`${what}: needs ${n} bytes, ${this.remaining} left`);
  }

  int(): number {
    this.need(4, "int");
    const v = this.view.getInt32(this.at);
    this.at += 4;
    return v;
  }

  uint(): number {
    this.need(4, "unsigned int");
    const v = this.view.getUint32(this.at);
    this.at += 4;
    return v;
  }

  hyper(): bigint {
    this.need(8, "hyper");
    const v = this.view.getBigInt64(this.at);
    this.at += 8;
    return v;
  }

  uhyper(): bigint {
    this.need(8, "unsigned hyper");
    const v = this.view.getBigUint64(this.at);
    this.at += 8;
    return v;
  }

  double(): number {
    this.need(8, "double");
    const v = this.view.getFloat64(this.at);
    this.at += 8;
    return v;
  }

  bool(): boolean {
    const v = this.int();
    if (v !== 0 && v !== 1) throw new XdrError(`bool: ${v} is neither 0 nor 1`);
    return v === 1;
  }

  /** `opaque x[n]`: exactly n bytes, then padding. */
  fixedOpaque(n: number): Uint8Array {
    this.need(n + pad(n), `opaque[${n}]`);
    const out = this.bytes.slice(this.at, this.at + n);
    this.at += n + pad(n);
    return out;
  }

  /** `opaque x<max>`: a length, the bytes, padding. */
  varOpaque(max = 0xffffffff): Uint8Array {
    const n = this.uint();
    if (n > max) throw new XdrError(`opaque<${max}>: length ${n} is over the maximum`);
    return this.fixedOpaque(n);
  }

  string(max = 0xffffffff): string {
    const bytes = this.varOpaque(max);
    try {
      return utf8.decode(bytes);
    } catch {
      throw new XdrError("string: not UTF-8");
    }
  }

  /** `T *x`: a flag, then the value when the flag is set. */
  optional<T>(read: (r: XdrReader) => T): T | null {
    return this.bool() ? read(this) : null;
  }

  /** `T x<max>`: a count, then that many values; the count is checked before anything is read. */
  array<T>(read: (r: XdrReader) => T, max = 0xffffffff): T[] {
    const n = this.uint();
    if (n > max) throw new XdrError(`array<${max}>: count ${n} is over the maximum`);
    if (n > this.remaining / 4) throw new XdrError(`array: count ${n} cannot fit in ${this.remaining} bytes`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(read(this));
    return out;
  }

  /** The body must have been read to its last byte. */
  end(): void {
    if (this.remaining !== 0) throw new XdrError(`${this.remaining} bytes left over after the body`);
  }
}

export class XdrWriter {
  private buf = new Uint8Array(256);
  private view = new DataView(this.buf.buffer);
  private at = 0;

  private room(n: number) {
    if (this.at + n <= this.buf.byteLength) return;
    let size = this.buf.byteLength * 2;
    while (size < this.at + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.at));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }

  int(v: number): this {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new XdrError(`int: ${v} is out of range`);
    this.room(4);
    this.view.setInt32(this.at, v);
    this.at += 4;
    return this;
  }

  uint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new XdrError(`unsigned int: ${v} is out of range`);
    this.room(4);
    this.view.setUint32(this.at, v);
    this.at += 4;
    return this;
  }

  hyper(v: bigint): this {
    this.room(8);
    this.view.setBigInt64(this.at, BigInt.asIntN(64, v));
    this.at += 8;
    return this;
  }

  uhyper(v: bigint): this {
    this.room(8);
    this.view.setBigUint64(this.at, BigInt.asUintN(64, v));
    this.at += 8;
    return this;
  }

  double(v: number): this {
    this.room(8);
    this.view.setFloat64(this.at, v);
    this.at += 8;
    return this;
  }

  bool(v: boolean): this {
    return this.int(v ? 1 : 0);
  }

  fixedOpaque(bytes: Uint8Array, n = bytes.byteLength): this {
    if (bytes.byteLength !== n) throw new XdrError(`opaque[${n}]: got ${bytes.byteLength} bytes`);
    this.room(n + pad(n));
    this.buf.set(bytes, this.at);
    this.buf.fill(0, this.at + n, this.at + n + pad(n));
    this.at += n + pad(n);
    return this;
  }

  varOpaque(bytes: Uint8Array, max = 0xffffffff): this {
    if (bytes.byteLength > max) throw new XdrError(`opaque<${max}>: ${bytes.byteLength} bytes is over the maximum`);
    return this.uint(bytes.byteLength).fixedOpaque(bytes);
  }

  string(s: string, max = 0xffffffff): this {
    return this.varOpaque(utf8Encoder.encode(s), max);
  }

  optional<T>(v: T | null | undefined, write: (w: XdrWriter, v: T) => void): this {
    this.bool(v !== null && v !== undefined);
    if (v !== null && v !== undefined) write(this, v);
    return this;
  }

  array<T>(items: readonly T[], write: (w: XdrWriter, v: T) => void, max = 0xffffffff): this {
    if (items.length > max) throw new XdrError(`array<${max}>: ${items.length} items is over the maximum`);
    this.uint(items.length);
    for (const item of items) write(this, item);
    return this;
  }

  bytes(): Uint8Array {
    return this.buf.slice(0, this.at);
  }
}
