// A VM's "last N lines": its current QEMU log, continued into virtlogd's rotated files
// (`<name>.log.1`, `.log.2`, … newest first) when the current file holds fewer than N lines. The
// answer is what GNU `tail -n N` prints for the files joined oldest first (`cat … .log.1 .log`),
// decoded once, so a line or a character that rotation split across two files comes out whole.
//
// What the fields mean across files:
//   logPath, logSizeBytes, lastModified  the current file `<name>.log` only (the file the answer names);
//   linesReturned                        lines of the returned text (a line split by rotation counts once);
//   truncated                            the current and rotated files hold more than was returned:
//                                        older text in a file read, a further rotated file not read
//                                        (N reached at a file's start, the cap, the file limit) or one
//                                        skipped (compressed, pointing outside the log dir, unreadable);
//   files                                names read, relative to the log dir, newest first;
//   skipped                              the rotated file the answer stopped at without reading, and why.
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from "node:fs";
import { AgentFailure } from "../host/libvirt.ts";
import { logFileName, openedPathIs, resolveLogPath, resolveRotatedLogPath, type SkipReason } from "./log-path.ts";
import { countLines, decodeTail, tailBytes, type TailBytes, type TailOptions, type TailResult } from "./log-tail.ts";

/** How many rotated files an answer may continue into (virtlogd keeps 3 by default: max_backups). */
export const MAX_ROTATED_FILES = 16;
const ATTEMPTS = 3;

/** The tail's fields (see above for their meaning across files), the files read and the one skipped. */
export type VmLog = TailResult & { files: string[]; skipped: { file: string; reason: SkipReason }[] };

/** What an answer says of a log besides its text (`skipped` only when a file was). */
export function logFacts(tail: VmLog) {
  return {
    logPath: tail.logPath,
    logSizeBytes: tail.logSizeBytes,
    linesReturned: tail.linesReturned,
    truncated: tail.truncated,
    lastModified: tail.lastModified,
    files: tail.files,
    ...(tail.skipped.length ? { skipped: tail.skipped } : {}),
  };
}

/** Rotation moved the files while they were read: read them all again. */
class FilesMoved extends Error {}

export function readVmLog(logDir: string, name: string, n: number, maxBytes: number, opts: TailOptions = {}): VmLog {
  for (let attempt = 1; ; attempt++) {
    try {
      return readOnce(logDir, name, n, maxBytes, opts);
    } catch (err) {
      if (!(err instanceof FilesMoved)) throw err;
      if (attempt >= ATTEMPTS)
        throw new AgentFailure("internal", `the log files of ${name} kept rotating while they were read; try again`);
    }
  }
}

function readOnce(logDir: string, name: string, n: number, maxBytes: number, opts: TailOptions): VmLog {
  const mainPath = resolveLogPath(logDir, name);
  const current = tailBytes(mainPath, n, maxBytes, opts);
  const answer = {
    logPath: current.logPath,
    logSizeBytes: current.logSizeBytes,
    lastModified: current.lastModified,
    files: [logFileName(logDir, mainPath)],
    skipped: [] as VmLog["skipped"],
  };
  if (current.truncated) {
    // The common case: the current file alone answers (its own tail already checked it held still).
    const decoded = decodeTail(current.bytes, maxBytes);
    return {
      ...answer,
      text: decoded.text,
      linesReturned: decoded.cut ? decoded.lines : current.linesReturned,
      truncated: true,
      bytesRead: current.bytesRead,
    };
  }

  const pieces: Buffer[] = [current.bytes]; // newest first
  const read: TailBytes[] = [current];
  let need = n - current.linesReturned; // lines still wanted; a line begun in a newer file is counted
  let held = current.bytes.length;
  let truncated = false;
  for (let k = 1; ; k++) {
    if (k > MAX_ROTATED_FILES) {
      truncated = resolveRotatedLogPath(logDir, name, k).kind !== "absent";
      break;
    }
    const rotated = resolveRotatedLogPath(logDir, name, k);
    if (rotated.kind === "absent") break;
    if (rotated.kind === "skipped") {
      answer.skipped.push({ file: rotated.file, reason: rotated.reason });
      truncated = true;
      break;
    }
    let older: TailBytes;
    try {
      const last = lastByte(rotated.path);
      if (last === null) {
        answer.files.push(rotated.file); // empty: nothing to add, the series goes on
        continue;
      }
      // Without a final newline its last line goes on in the newer text: it is a line already counted.
      const joins = held > 0 && last !== 0x0a;
      const want = need + (joins ? 1 : 0);
      if (want === 0) {
        truncated = true; // N reached exactly at a file boundary; older lines exist
        break;
      }
      if (maxBytes - held < 4) {
        truncated = true;
        break;
      }
      older = tailBytes(rotated.path, want, maxBytes - held, opts);
      if (older.midLine) {
        truncated = true; // not even one of its lines fits: the answer stays whole lines
        break;
      }
      need -= older.linesReturned - (joins ? 1 : 0);
    } catch (err) {
      if (!(err instanceof AgentFailure) || err.code !== "log_not_found") throw err;
      answer.skipped.push({ file: rotated.file, reason: "unreadable" });
      truncated = true;
      break;
    }
    pieces.push(older.bytes);
    read.push(older);
    answer.files.push(rotated.file);
    held += older.bytes.length;
    if (older.truncated) {
      truncated = true;
      break;
    }
  }
  // virtlogd renames every file at a rotation: if any name no longer names what was read, the
  // pieces may overlap or leave a gap. Read again.
  for (const r of read) {
    const st = statOrNull(r.logPath);
    if (!st || `${st.dev}:${st.ino}` !== r.fileId) throw new FilesMoved();
  }
  const bytes = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces.reverse());
  const decoded = decodeTail(bytes, maxBytes);
  return {
    ...answer,
    text: decoded.text,
    linesReturned: decoded.text === "" ? 0 : countLines(decoded.text),
    truncated: truncated || decoded.cut,
    bytesRead: read.reduce((sum, r) => sum + r.bytesRead, 0),
  };
}

/** The file's last byte, or null when it is empty (opened as the tail opens it: no symlink, no FIFO wait). */
function lastByte(path: string): number | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    throw new AgentFailure("log_not_found", `cannot open ${path}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new AgentFailure("log_not_found", `${path} is not a regular file`);
    if (!openedPathIs(fd, path)) throw new FilesMoved(); // rotated (or a directory swapped) while it was opened
    if (st.size === 0) return null;
    const one = Buffer.alloc(1);
    return readSync(fd, one, 0, 1, st.size - 1) === 1 ? one[0] : null;
  } finally {
    closeSync(fd);
  }
}

function statOrNull(path: string) {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}
