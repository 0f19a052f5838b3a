// Where a VM's QEMU log is: `<log dir>/<domain name>.log` (and virtlogd's rotated `<name>.log.1`,
// `.log.2`, …), the name exactly as libvirt has it, and nowhere else. Ordinary names are never
// refused (spaces, Unicode in either normal form, quotes, `%`, a leading dot); confinement is on the
// resolved path: the real path, symlinks resolved, must be inside the real log directory, and the
// readers open it with O_NOFOLLOW and check it is a regular file (log-tail.ts, log-follow.ts).
import { lstatSync, readlinkSync, realpathSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { AgentFailure } from "../host/libvirt.ts";

/** Undo percent-encoding until stable (bounded): `%252e%252e` must be judged as `..`. */
export function decodeRepeatedly(s: string, rounds = 4): string | null {
  let cur = s;
  for (let i = 0; i < rounds; i++) {
    let next: string;
    try {
      next = decodeURIComponent(cur);
    } catch {
      return null; // malformed escapes: refuse rather than guess
    }
    if (next === cur) return cur;
    cur = next;
  }
  return null;
}

/** The name itself, unless it cannot name one file in the log directory: empty, or holding a `/` or
 *  NUL (libvirt refuses both in domain names, so only a made-up name has them). Nothing is decoded:
 *  `%2e%2e` is a name of six characters, its log `%2e%2e.log`. */
export function checkDomainName(name: string): string {
  if (name === "" || name.includes("/") || name.includes("\0")) {
    throw new AgentFailure("invalid_name", "a domain name cannot be empty or hold '/' or NUL, so it names no log file");
  }
  return name;
}

/** Whether the open file `fd` is the file at `path` (a confined real path): a directory on the way
 *  swapped for a symlink between resolving and opening would show here. True where /proc is absent. */
export function openedPathIs(fd: number, path: string): boolean {
  let opened: string;
  try {
    opened = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return true;
  }
  return opened === path;
}

/** Whether `real` (a path realpath gave) lies inside the real log directory. */
const inside = (realDir: string, real: string) => real.startsWith(realDir.endsWith(sep) ? realDir : realDir + sep);

/** The real path of `name`'s log, inside the real log dir; log_not_found when absent or outside. */
export function resolveLogPath(logDir: string, name: string): string {
  const checked = checkDomainName(name);
  let realDir: string;
  try {
    realDir = realpathSync(logDir);
  } catch {
    throw new AgentFailure("log_not_found", `the log directory ${logDir} does not exist`);
  }
  const candidate = join(realDir, `${checked}.log`);
  let real: string;
  try {
    real = realpathSync(candidate);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EACCES")
      throw new AgentFailure("log_not_found", `log file ${candidate} is not readable by the agent (permission denied)`);
    throw new AgentFailure("log_not_found", `no log file at ${candidate}`);
  }
  if (!inside(realDir, real)) {
    // A symlink leading out of the log directory: refused, and the target is not named.
    throw new AgentFailure("log_not_found", `no log file at ${candidate} (it points outside the log directory)`);
  }
  return real;
}

export type SkipReason = "compressed" | "outside_log_dir" | "unreadable";

/** A rotated file as found: read it, skip it (and say why), or there is none (the series ends). */
export type RotatedLog =
  | { kind: "file"; path: string; file: string }
  | { kind: "skipped"; file: string; reason: SkipReason }
  | { kind: "absent" };

/** Compressed rotations (logrotate's `compress`): named so the answer can say they were not read. */
const COMPRESSED_SUFFIXES = [".gz", ".xz", ".bz2", ".zst"];

/** virtlogd's k-th rotated file of `name`'s log (`<name>.log.<k>`), confined like the log itself. */
export function resolveRotatedLogPath(logDir: string, name: string, k: number): RotatedLog {
  const checked = checkDomainName(name);
  if (!Number.isInteger(k) || k < 1) throw new RangeError("k must be a positive integer");
  let realDir: string;
  try {
    realDir = realpathSync(logDir);
  } catch {
    return { kind: "absent" };
  }
  const file = `${checked}.log.${k}`;
  const candidate = join(realDir, file);
  if (!exists(candidate)) {
    const compressed = COMPRESSED_SUFFIXES.map((s) => file + s).find((f) => exists(join(realDir, f)));
    return compressed ? { kind: "skipped", file: compressed, reason: "compressed" } : { kind: "absent" };
  }
  let real: string;
  try {
    real = realpathSync(candidate);
  } catch {
    return { kind: "skipped", file, reason: "unreadable" }; // a dangling symlink
  }
  if (!inside(realDir, real)) return { kind: "skipped", file, reason: "outside_log_dir" };
  return { kind: "file", path: real, file: relative(realDir, real) };
}

/** The name of `realPath` as the answer shows it: relative to the real log directory. */
export function logFileName(logDir: string, realPath: string): string {
  try {
    return relative(realpathSync(logDir), realPath);
  } catch {
    return realPath;
  }
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
