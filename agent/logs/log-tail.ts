// The last N lines of a log file, read backwards from the end in fixed blocks: never the whole file,
// whatever its size. The bytes returned are exactly what GNU `tail -n N` prints (CR of CRLF kept,
// no final newline added), cut to `maxBytes` from the front; then decoded as UTF-8 with U+FFFD for
// invalid bytes. Reads are synchronous on purpose: from the page cache they take microseconds and
// the 8 MiB cap bounds them, where an async read per block costs a thread-pool round trip each.
import { closeSync, constants, fstatSync, openSync, readSync, statSync, type Stats } from "node:fs";
import { isAscii } from "node:buffer";
import { AgentFailure } from "../host/libvirt.ts";
import { openedPathIs } from "./log-path.ts";

export const TAIL_BLOCK_BYTES = 64 * 1024;
const NEWLINE = 0x0a;

/** The raw bytes of a tail, before decoding: what GNU `tail -n` would print. */
export type TailBytes = {
  bytes: Buffer;
  logPath: string;
  logSizeBytes: number;
  /** lines in `bytes` (a final line without newline counts) */
  linesReturned: number;
  /** the file holds more than `bytes` */
  truncated: boolean;
  /** `bytes` starts inside a line: one line longer than the cap, cut */
  midLine: boolean;
  lastModified: string | null;
  bytesRead: number;
  /** device and inode of the file read, to tell later whether the name still names it */
  fileId: string;
};

export type TailResult = {
  text: string;
  logPath: string;
  logSizeBytes: number;
  linesReturned: number;
  /** the file holds more than what was returned */
  truncated: boolean;
  lastModified: string | null;
  /** bytes read from the file (for the benchmark's "read ≤ returned + one block") */
  bytesRead: number;
};

export type TailOptions = {
  blockBytes?: number;
  /** test seam: called after each block is read (to shrink or replace the file mid-read) */
  afterBlockRead?: (blockIndex: number) => void;
};

/** The file changed under us (shrunk, replaced): read again from the top. */
class FileChanged extends Error {}

const ATTEMPTS = 3;

export function tailLines(path: string, n: number, maxBytes: number, opts: TailOptions = {}): TailResult {
  const raw = tailBytes(path, n, maxBytes, opts);
  const decoded = decodeTail(raw.bytes, maxBytes);
  return {
    text: decoded.text,
    logPath: raw.logPath,
    logSizeBytes: raw.logSizeBytes,
    linesReturned: decoded.cut ? decoded.lines : raw.linesReturned,
    truncated: raw.truncated || decoded.cut,
    lastModified: raw.lastModified,
    bytesRead: raw.bytesRead,
  };
}

/** Like tailLines, without decoding: for answers that join several files before decoding. */
export function tailBytes(path: string, n: number, maxBytes: number, opts: TailOptions = {}): TailBytes {
  if (!Number.isInteger(n) || n < 1) throw new RangeError("n must be a positive integer");
  if (!Number.isInteger(maxBytes) || maxBytes < 4) throw new RangeError("maxBytes must be an integer ≥ 4");
  for (let attempt = 1; ; attempt++) {
    try {
      return tailOnce(path, n, maxBytes, opts);
    } catch (err) {
      if (!(err instanceof FileChanged)) throw err;
      if (attempt >= ATTEMPTS)
        throw new AgentFailure("internal", `log file ${path} kept changing while it was read; try again`);
    }
  }
}

/** UTF-8 with U+FFFD for invalid bytes, kept under `maxBytes` after decoding too (each invalid
 *  byte grows to 3): `cut` when the front had to go, with the lines then left. */
export function decodeTail(bytes: Buffer, maxBytes: number): { text: string; cut: boolean; lines: number } {
  // Buffer#toString replaces invalid sequences with U+FFFD the way TextDecoder does (WHATWG);
  // QEMU logs are nearly always ASCII, which decodes three times faster when known to be so.
  const text = isAscii(bytes) ? bytes.toString("latin1") : bytes.toString("utf8");
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text) <= maxBytes) return { text, cut: false, lines: -1 };
  const encoded = Buffer.from(text);
  const kept = skipContinuationBytes(encoded.subarray(encoded.length - maxBytes)).toString("utf8");
  return { text: kept, cut: true, lines: countLines(kept) };
}

function openLog(path: string): { fd: number; st: Stats } {
  let fd: number;
  try {
    // O_NOFOLLOW: the final component must not be a symlink; O_NONBLOCK: a FIFO must not hang us.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ELOOP" || code === "ENOTDIR")
      throw new AgentFailure("log_not_found", `no log file at ${path}`);
    if (code === "EACCES" || code === "EPERM")
      throw new AgentFailure("log_not_found", `log file ${path} is not readable by the agent (permission denied)`);
    throw err;
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw new AgentFailure("log_not_found", `${path} is not a regular file`);
  }
  if (!openedPathIs(fd, path)) {
    closeSync(fd);
    throw new FileChanged(); // moved (rotated) or a directory swapped between resolving and opening
  }
  return { fd, st };
}

function tailOnce(path: string, n: number, maxBytes: number, opts: TailOptions): TailBytes {
  const blockBytes = opts.blockBytes ?? TAIL_BLOCK_BYTES;
  const { fd, st } = openLog(path);
  try {
    const size = st.size;
    // Blocks are read straight into their place at the end of one buffer holding the file's last
    // `room` bytes; it doubles when more is needed (capped at maxBytes + one block), so memory
    // follows what is read, not the file's size, and the answer is never copied block by block.
    const roomCap = Math.min(size, maxBytes + blockBytes);
    let room = Math.min(roomCap, Math.max(4 * blockBytes, 256 * 1024));
    let dest = Buffer.allocUnsafe(room);
    const at = (filePos: number) => filePos - (size - room); // file offset -> index in dest
    let expectBytes = 0; // bytes the answer will likely need, guessed from the lines seen so far
    const makeRoomFor = (filePos: number) => {
      if (filePos >= size - room) return;
      let next = Math.min(roomCap, Math.max(room * 2, expectBytes));
      while (size - next > filePos) next = Math.min(roomCap, next * 2);
      const grown = Buffer.allocUnsafe(next);
      dest.copy(grown, next - room + at(pos), at(pos), room);
      dest = grown;
      room = next;
    };
    let pos = size; // start of the lowest block read so far
    let bytesRead = 0;
    let start = -1; // where the answer begins
    let lines = 0;
    let capped = false;
    let midLine = false; // the answer starts inside its first line
    if (size > 0) {
      const limit = size - maxBytes; // a kept line must start at or after this
      let scanEnd = -1; // newlines at or past this do not count (the file's final newline)
      let counted = 0;
      let candidate = -1; // start of the oldest whole line found that fits the cap
      for (let block = 0; start < 0 && pos > 0; block++) {
        const len = Math.min(blockBytes, pos);
        makeRoomFor(pos - len);
        readFully(fd, dest, at(pos - len), len, pos - len);
        bytesRead += len;
        pos -= len;
        opts.afterBlockRead?.(block);
        if (scanEnd < 0) scanEnd = dest[room - 1] === NEWLINE ? size - 1 : size;
        // Newlines of this block, newest first: dest indexes [at(pos), at(min(pos + len, scanEnd))).
        const lo = at(pos);
        let i = at(Math.min(pos + len, scanEnd)) - 1;
        while (i >= lo) {
          const q = dest.lastIndexOf(NEWLINE, i);
          if (q < lo) break;
          const lineStart = q + 1 + (size - room);
          if (lineStart < limit) {
            capped = true;
            break;
          }
          counted++;
          candidate = lineStart;
          if (counted === n) {
            start = lineStart;
            lines = n;
            break;
          }
          i = q - 1;
        }
        if (start >= 0) break;
        if (counted > 0) expectBytes = Math.ceil(((size - pos) / counted) * n * 1.1) + blockBytes;
        if (capped || pos < limit) {
          capped = true;
          break;
        }
      }
      if (start < 0 && !capped) {
        start = 0; // fewer than n lines in the whole file, and it fits
        lines = counted + 1;
      } else if (start < 0 && candidate >= 0) {
        start = candidate; // only the newest whole lines fit under maxBytes
        lines = counted;
      } else if (start < 0) {
        start = limit; // one line longer than the cap: its end only, from a character boundary
        lines = 1;
        midLine = true;
      }
    }
    let bytes: Buffer = dest.subarray(at(Math.max(start, 0)), room);
    if (midLine) bytes = skipContinuationBytes(bytes);
    // The file may have shrunk (truncated, rewritten) or been replaced while we read it.
    const after = fstatSync(fd);
    if (after.size < size) throw new FileChanged();
    const now = statOrNull(path);
    if (!now || now.ino !== st.ino || now.dev !== st.dev) throw new FileChanged();

    return {
      bytes,
      logPath: path,
      logSizeBytes: size,
      linesReturned: size === 0 ? 0 : lines,
      truncated: start > 0,
      midLine,
      lastModified: st.mtime.toISOString(),
      bytesRead,
      fileId: `${st.dev}:${st.ino}`,
    };
  } finally {
    closeSync(fd);
  }
}

function readFully(fd: number, buf: Buffer, offset: number, length: number, position: number) {
  let done = 0;
  while (done < length) {
    const got = readSync(fd, buf, offset + done, length - done, position + done);
    if (got === 0) throw new FileChanged(); // the file got shorter than its fstat size
    done += got;
  }
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

/** Drop UTF-8 continuation bytes at the front: a cut never starts mid-character. */
function skipContinuationBytes(b: Buffer): Buffer {
  let i = 0;
  while (i < 3 && i < b.length && (b[i] & 0xc0) === 0x80) i++;
  return b.subarray(i);
}

export function countLines(text: string): number {
  if (text === "") return 0;
  let count = 0;
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) count++;
  return text.endsWith("\n") ? count : count + 1;
}
