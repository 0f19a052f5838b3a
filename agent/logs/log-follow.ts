// Live follow of VM logs, `tail -F` style: every follow polls its log's name (~500 ms), reads what
// was appended and sends it as `log.append` frames with the follow's id. A new file under the name
// (virtlogd rotated it) is "rotated" and read from its start, once the old file's last bytes are
// sent; a file that got shorter is "truncated" and read from 0; a name that vanished is "missing",
// and "appeared" when it is back. The path is confined like every log read (log-path.ts).
//
// Bounded: at most MAX_FOLLOWS at once, one shared timer, and per follow and tick at most one frame
// of ≤ LOG_CHUNK_BYTES (two when a rotation ends one file and starts the next), so a fast-growing log
// costs ≤ 2 frames/s per follow. A follow that falls more than MAX_LOG_BYTES behind skips to near the
// end and says so in the text; a UTF-8 character is never split between frames.
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from "node:fs";
import { LOG_CHUNK_BYTES, MAX_FRAME_BYTES, MAX_LOG_BYTES } from "../../protocol/wire-constants.ts";
import { AgentFailure } from "../host/libvirt.ts";
import type { Logger } from "../logger.ts";
import { openedPathIs, resolveLogPath } from "./log-path.ts";
import type { Send } from "../link/send.ts";

export const MAX_FOLLOWS = 16;
export const FOLLOW_POLL_MS = 500;

type FollowEvent = "rotated" | "truncated" | "appeared" | "missing";

export type LogFollowerOptions = {
  logDir: string;
  send: Send;
  log: Logger;
  pollMs?: number;
  /** bytes per frame (tests make it small); never above LOG_CHUNK_BYTES */
  chunkBytes?: number;
  /** how far behind a follow may fall before it skips ahead */
  maxBacklogBytes?: number;
};

/** One followed log: the open file, where we are in it, and what was last said about it. */
type Follow = {
  id: string;
  name: string;
  seq: number;
  fd: number | null;
  fileId: string;
  offset: number;
  /** the name was missing at the last look (and "missing" was sent) */
  missing: boolean;
};

export class LogFollower {
  private readonly o: Required<LogFollowerOptions>;
  // Bounded by MAX_FOLLOWS; a follow is deleted when it is stopped or its link goes.
  private readonly follows = new Map<string, Follow>();
  private timer: NodeJS.Timeout | null = null;

  constructor(opts: LogFollowerOptions) {
    this.o = {
      pollMs: FOLLOW_POLL_MS,
      chunkBytes: LOG_CHUNK_BYTES,
      maxBacklogBytes: MAX_LOG_BYTES,
      ...opts,
    };
    this.o.chunkBytes = Math.min(this.o.chunkBytes, LOG_CHUNK_BYTES);
  }

  get count(): number {
    return this.follows.size;
  }

  /** Starts following `name`'s log from its current end: throws AgentFailure when it cannot, else
   *  calls `ack` before the first frame (a log not there yet is followed too: "missing" at once). */
  start(id: string, name: string, ack: () => void): void {
    if (this.follows.has(id)) return ack(); // the same follow asked twice: it is already running
    if (this.follows.size >= MAX_FOLLOWS)
      throw new AgentFailure("not_allowed", `this agent follows at most ${MAX_FOLLOWS} logs at once`);
    const follow: Follow = { id, name, seq: 0, fd: null, fileId: "", offset: 0, missing: false };
    const path = this.resolve(name); // invalid_name is thrown here, before anything is kept
    // Where the follow starts is fixed before the ack: whatever is written after the ack is sent.
    if (path) this.open(follow, path, "end");
    ack();
    this.follows.set(id, follow);
    this.o.log.info({ followId: id, name, following: this.follows.size }, "log follow started");
    if (!path) {
      follow.missing = true;
      this.emit(follow, "", "missing");
    }
    if (!this.timer) this.timer = setInterval(() => this.tick(), this.o.pollMs);
  }

  stop(id: string): boolean {
    const follow = this.follows.get(id);
    if (!follow) return false;
    this.close(follow);
    this.follows.delete(id);
    this.o.log.info({ followId: id, following: this.follows.size }, "log follow stopped");
    if (this.follows.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
    return true;
  }

  /** The link dropped or the agent stops: every follow ends (the control plane starts them again). */
  stopAll(): void {
    for (const id of [...this.follows.keys()]) this.stop(id);
  }

  /** One look at every followed log (the timer calls it; tests may too). */
  tick(): void {
    for (const follow of [...this.follows.values()]) {
      try {
        this.look(follow);
      } catch (err) {
        this.o.log.warn(
          { followId: follow.id, err: (err as Error).message },
          "log follow: could not read; will look again",
        );
      }
    }
  }

  private look(f: Follow): void {
    const path = this.resolve(f.name);
    if (!path) {
      if (f.missing) return;
      // The name is gone (removed, or moved away): what the old file still held is sent first.
      if (f.fd !== null) this.drain(f);
      this.close(f);
      f.missing = true;
      this.emit(f, "", "missing");
      return;
    }
    const st = statSync(path);
    const id = `${st.dev}:${st.ino}`;
    if (f.fd === null || f.missing) {
      const wasMissing = f.missing;
      this.close(f);
      this.open(f, path, "start");
      f.missing = false;
      this.emit(f, this.readNew(f), wasMissing ? "appeared" : undefined);
      return;
    }
    if (id !== f.fileId) {
      this.drain(f); // the rotated-away file's last lines, then the new file from its start
      this.close(f);
      this.open(f, path, "start");
      this.emit(f, this.readNew(f), "rotated");
      return;
    }
    const size = fstatSync(f.fd).size;
    if (size < f.offset) {
      f.offset = 0;
      this.emit(f, this.readNew(f), "truncated");
      return;
    }
    const text = this.readNew(f);
    if (text) this.emit(f, text);
  }

  /** The confined real path of the log, or null when there is none (or it points outside). */
  private resolve(name: string): string | null {
    try {
      return resolveLogPath(this.o.logDir, name);
    } catch (err) {
      if (err instanceof AgentFailure && err.code === "log_not_found") return null;
      throw err;
    }
  }

  private open(f: Follow, path: string, from: "start" | "end") {
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch {
      return; // gone between the look and the open: the next look says missing
    }
    const st = fstatSync(fd);
    if (!st.isFile() || !openedPathIs(fd, path)) {
      closeSync(fd); // not a regular file, or not the confined file any more: the next look resolves again
      return;
    }
    f.fd = fd;
    f.fileId = `${st.dev}:${st.ino}`;
    f.offset = from === "end" ? st.size : 0;
  }

  private close(f: Follow) {
    if (f.fd !== null) closeSync(f.fd);
    f.fd = null;
  }

  /** The old file's remaining bytes (one frame's worth at most) before it is let go. */
  private drain(f: Follow) {
    if (f.fd === null) return;
    const text = this.readNew(f);
    if (text) this.emit(f, text);
  }

  /** New text since `offset`: at most one frame, cut on a character boundary (unless `final`: the
   *  file is being let go); skips ahead, saying so, when the follow fell too far behind. */
  private readNew(f: Follow, final = false): string {
    if (f.fd === null) return "";
    const size = fstatSync(f.fd).size;
    let note = "";
    let skipping = false;
    if (size - f.offset > this.o.maxBacklogBytes) {
      const to = size - this.o.chunkBytes;
      note = `[quantix-agent: ${to - f.offset} bytes of this log skipped: it grew faster than it can be followed]\n`;
      f.offset = to;
      skipping = true;
    }
    const want = Math.min(this.o.chunkBytes, size - f.offset);
    if (want <= 0) return note;
    const buf = Buffer.allocUnsafe(want);
    const got = readSync(f.fd, buf, 0, want, f.offset);
    const start = skipping ? leadingContinuationBytes(buf.subarray(0, got)) : 0; // a skip may land mid-character
    let end = got - (final ? 0 : incompleteTail(buf.subarray(start, got)));
    // JSON escaping can grow control characters six-fold: the frame must still fit MAX_FRAME_BYTES.
    while (end - start > 8 && JSON.stringify(buf.toString("utf8", start, end)).length > MAX_FRAME_BYTES - 1024) {
      end = start + ((end - start) >> 1);
      end -= incompleteTail(buf.subarray(start, end));
    }
    f.offset += end;
    return note + buf.toString("utf8", start, end);
  }

  private emit(f: Follow, text: string, event?: FollowEvent) {
    if (!text && !event) return;
    this.o.send({ type: "log.append", id: f.id, payload: { seq: f.seq++, text, ...(event ? { event } : {}) } });
  }
}

/** Continuation bytes at the front (after a skip lands mid-character). */
function leadingContinuationBytes(b: Buffer): number {
  let i = 0;
  while (i < 3 && i < b.length && (b[i] & 0xc0) === 0x80) i++;
  return i;
}

/** Bytes at the end that begin a UTF-8 character not yet complete (wait for the rest). */
function incompleteTail(b: Buffer): number {
  for (let back = 1; back <= Math.min(3, b.length); back++) {
    const c = b[b.length - back];
    if ((c & 0xc0) === 0x80) continue; // continuation: look further back for the lead byte
    const need = c >= 0xf0 && c < 0xf8 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}
