// The host view's own token: `<state dir>/host-token` (file 0600, dir 0700), the only key to the
// local API. It is not the node credential, so whoever reads it from a browser can read this host's
// VM list and logs but cannot act as the node towards the control plane.
import { randomBytes, createHash, timingSafeEqual } from "node:crypto";
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";

export const HOST_TOKEN_FILE = "host-token";
export const HOST_TOKEN_PREFIX = "qxh_";
const TOKEN_SHAPE = /^qxh_[A-Za-z0-9_-]{43}$/;

export const hostTokenPath = (stateDir: string) => join(stateDir, HOST_TOKEN_FILE);

const newToken = () => HOST_TOKEN_PREFIX + randomBytes(32).toString("base64url");

/** Writes a fresh token (write then rename, so a reader never sees half a token); returns its path. */
export function rotateHostToken(stateDir: string): string {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  chmodSync(stateDir, 0o700);
  const path = hostTokenPath(stateDir);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, newToken() + "\n", { mode: 0o600 });
  chmodSync(tmp, 0o600);
  // Rotated by root for an agent that runs as its own user: the file must stay the agent's to read.
  if (process.getuid?.() === 0) {
    const dir = statSync(stateDir);
    chownSync(tmp, dir.uid, dir.gid);
  }
  renameSync(tmp, path);
  return path;
}

export type HostTokenFile = { path: string; created: boolean; modeFixed: boolean };

/** The token file as the local API needs it: made when missing, its mode tightened to 0600 when looser. */
export function ensureHostToken(stateDir: string): HostTokenFile {
  const path = hostTokenPath(stateDir);
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    return { path: rotateHostToken(stateDir), created: true, modeFixed: false };
  }
  if (!st.isFile()) throw new Error(`${path} is not a regular file`);
  const modeFixed = (st.mode & 0o777) !== 0o600;
  if (modeFixed) chmodSync(path, 0o600);
  readHostToken(path); // refuses a damaged file now, not at the first sign-in
  return { path, created: false, modeFixed };
}

function readHostToken(path: string): string {
  // O_NOFOLLOW: the token is read from the state directory itself, never through a planted symlink.
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${path} is not a regular file`);
    const token = readFileSync(fd, "utf8").trim();
    if (!TOKEN_SHAPE.test(token))
      throw new Error(`${path} does not hold a host token; write a new one with --rotate-host-token`);
    return token;
  } finally {
    closeSync(fd);
  }
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/**
 * Checks bearer tokens against the file as it is now: a token rotated by another process (the
 * `--rotate-host-token` command while the agent runs) replaces the old one at the next request.
 * The file is read again only when its inode, size, mtime or ctime changed.
 */
export class HostTokenCheck {
  private readonly path: string;
  private readonly onUnreadable: (message: string) => void;
  private seen = "";
  private tokenDigest: Buffer | null = null;
  private reported = ""; // the last trouble reported: once per kind of trouble, not once per request

  constructor(path: string, onUnreadable: (message: string) => void) {
    this.path = path;
    this.onUnreadable = onUnreadable;
  }

  /** Timing-safe: compares digests, so neither the token nor its length leaks. */
  accepts(bearer: string): boolean {
    const current = this.current();
    return current !== null && timingSafeEqual(digest(bearer), current);
  }

  private current(): Buffer | null {
    let key: string;
    try {
      const st = statSync(this.path);
      key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch (err) {
      return this.unreadable(
        `host token ${this.path} is gone (${(err as NodeJS.ErrnoException).code}); write one with --rotate-host-token`,
      );
    }
    if (key === this.seen && this.tokenDigest) return this.tokenDigest;
    try {
      this.tokenDigest = digest(readHostToken(this.path));
      this.seen = key;
      this.reported = "";
      return this.tokenDigest;
    } catch (err) {
      return this.unreadable(`host token ${this.path} cannot be read: ${(err as Error).message}`);
    }
  }

  private unreadable(message: string): null {
    this.tokenDigest = null;
    this.seen = "";
    if (message !== this.reported) this.onUnreadable(message);
    this.reported = message;
    return null;
  }
}
