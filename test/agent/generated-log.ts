// Generated QEMU-like log files for the tail's property tests: deterministic from a seed, with
// multi-byte and broken UTF-8, CR, tabs, and an optional final newline.

// Pieces a QEMU log line can hold, multi-byte and broken ones included.
const PIECES = [
  "a",
  "qemu-system-x86_64: ",
  "é",
  "€",
  "😀",
  "\r",
  "\t",
  " ",
  "0123456789",
  Buffer.from([0xff]),
  Buffer.from([0xc3]),
  Buffer.from([0xe2, 0x82]),
];

/** A deterministic file from a seed: cheap enough for 20,000 lines per run. */
export function makeLog(seed: number, lines: number, maxLineLen: number, crlf: number, finalNewline: boolean): Buffer {
  let x = seed >>> 0 || 1;
  const rnd = (k: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % k;
  };
  const parts: Buffer[] = [];
  for (let i = 0; i < lines; i++) {
    const len = rnd(maxLineLen + 1);
    for (let j = 0; j < len; j++) {
      const p = PIECES[rnd(PIECES.length)];
      parts.push(typeof p === "string" ? Buffer.from(p) : p);
    }
    const last = i === lines - 1;
    if (!last || finalNewline) parts.push(Buffer.from(rnd(100) < crlf ? "\r\n" : "\n"));
  }
  return Buffer.concat(parts);
}
