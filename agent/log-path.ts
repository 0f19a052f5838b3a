// Where a VM's QEMU log is: `<log dir>/<domain name>.log` and nowhere else. The name is checked
// (after undoing any percent-encoding), and the real path, symlinks resolved, must stay inside the
// real log directory.
import { realpathSync } from "node:fs";
import { join, sep } from "node:path";
import { DomainName } from "../protocol/wire.ts";
import { AgentFailure } from "./libvirt.ts";

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

/** Throws AgentFailure invalid_name unless `raw` is a plain domain name in every decoding. */
export function checkDomainName(raw: string): string {
  const decoded = decodeRepeatedly(raw);
  const bad =
    decoded === null ||
    decoded !== raw || // a domain name never needs escapes
    /[\0/\\]/.test(decoded) ||
    decoded.includes("..") ||
    decoded.normalize("NFKC") !== decoded ||
    !DomainName.safeParse(decoded).success;
  if (bad) throw new AgentFailure("invalid_name", "not a valid domain name (letters, digits and . _ + : @ -; no '..', slashes or escapes)");
  return decoded;
}

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
    if (code === "EACCES") throw new AgentFailure("log_not_found", `log file ${candidate} is not readable by the agent (permission denied)`);
    throw new AgentFailure("log_not_found", `no log file at ${candidate}`);
  }
  if (!real.startsWith(realDir + sep)) {
    // A symlink leading out of the log directory: refused, and the target is not named.
    throw new AgentFailure("log_not_found", `no log file at ${candidate} (it points outside the log directory)`);
  }
  return real;
}
