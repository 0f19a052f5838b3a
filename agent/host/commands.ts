// Carries out the control plane's commands against libvirt and the log directory. A command whose
// deadline (in the control plane's clock) has passed when it is read is answered `expired` and not
// carried out. Power actions go to power.ts (acked at once, one VM's after another, deadlines
// checked again when their turn comes, progress while under way).
import { lastLines } from "../../protocol/log-excerpt.ts";
import type { AgentMessage, Command, ServerMessage } from "../../protocol/wire.ts";
import {
  EXCERPT_MAX_BYTES,
  LOG_CHUNK_BYTES,
  MAX_FRAME_BYTES,
  type WireFeature,
} from "../../protocol/wire-constants.ts";
import { AgentFailure, type Libvirt } from "./libvirt.ts";
import type { LogFollower } from "../logs/log-follow.ts";
import { PowerActions, toFailure, type PowerActionsOptions } from "./power.ts";
import { logFacts, readVmLog, type VmLog } from "../logs/vm-log.ts";

/** What power actions need (power.ts), plus the log directory and the live-follow room. */
export type CommandRunnerOptions = PowerActionsOptions & {
  logDir: string;
  /** live follows (`vm.logs.follow`); without it a follow is answered not_allowed */
  follower?: LogFollower;
};

type FollowCommand = Extract<ServerMessage, { type: "vm.logs.follow" }>;

/** The domain's name for its log: libvirt's own name for that UUID, never a name sent to us alone. */
export async function logNameFor(libvirt: Libvirt, vmId: string, fallback: string): Promise<string> {
  try {
    return await libvirt.nameOf(vmId);
  } catch (err) {
    // libvirt unreachable: the control plane's name is still checked and confined by resolveLogPath.
    if (err instanceof AgentFailure && err.code === "libvirt_error") return fallback;
    throw err;
  }
}

/** Split log text into `log.chunk` texts of ≤ LOG_CHUNK_BYTES UTF-8 bytes whose frames fit MAX_FRAME_BYTES. */
export function splitLogText(text: string, chunkBytes = LOG_CHUNK_BYTES): string[] {
  if (text === "") return [];
  const bytes = Buffer.from(text);
  const out: string[] = [];
  const push = (piece: Buffer) => {
    const s = piece.toString("utf8");
    // JSON escaping can grow control characters six-fold: halve until the frame fits.
    if (JSON.stringify(s).length > MAX_FRAME_BYTES - 1024 && piece.length > 8) {
      let mid = piece.length >> 1;
      while (mid < piece.length && (piece[mid] & 0xc0) === 0x80) mid++;
      push(piece.subarray(0, mid));
      push(piece.subarray(mid));
    } else out.push(s);
  };
  for (let i = 0; i < bytes.length; ) {
    let end = Math.min(bytes.length, i + chunkBytes);
    while (end < bytes.length && (bytes[end] & 0xc0) === 0x80) end--; // never split a character
    push(bytes.subarray(i, end));
    i = end;
  }
  return out;
}

/** Whether a result frame holding `meta` and `text` fits MAX_FRAME_BYTES. JSON escapes a control
 *  character as six bytes: text under a sixth of the room surely fits, without encoding it twice. */
function fitsOneFrame(text: string, meta: object): boolean {
  const room = MAX_FRAME_BYTES - Buffer.byteLength(JSON.stringify(meta)) - 1024; // 1 KiB: type, id, keys
  return Buffer.byteLength(text) * 6 <= room || Buffer.byteLength(JSON.stringify(text)) <= room;
}

/** A log read's answer as frames: the result alone, holding the text, when `oneFrame` (the control
 *  plane announced `logText`) and it fits in one frame, since each frame is an event for the node's
 *  object to wake for and parse; else `log.chunk` frames, then the result. */
export function logAnswerFrames(id: string, tail: VmLog, oneFrame: boolean): AgentMessage[] {
  const meta = logFacts(tail);
  if (oneFrame && fitsOneFrame(tail.text, meta))
    return [{ type: "result", id, payload: { ...meta, chunks: 0, text: tail.text } }];
  const pieces = splitLogText(tail.text);
  return [
    ...pieces.map((text, seq): AgentMessage => ({ type: "log.chunk", id, payload: { seq, text } })),
    { type: "result", id, payload: { ...meta, chunks: pieces.length } },
  ];
}

/** `fn`'s result, run after what this turn started (a socket write under way) has gone out. */
const nextTurn = <T>(fn: () => T): Promise<T> =>
  new Promise((resolve, reject) =>
    setImmediate(() => {
      try {
        resolve(fn());
      } catch (err) {
        reject(err);
      }
    }),
  );

/** What `read` makes of the log of the domain libvirt names, and libvirt's answer. While libvirt
 *  answers (`naming`, a call already on its way), `read` runs under the name the control plane sent,
 *  on the next turn; that result stands when libvirt names the domain the same (the usual case),
 *  else, or when it threw, `read` runs again under libvirt's name (which says why it fails). A name
 *  sent to us alone is never the answer. */
async function readUnderLibvirtName<N extends { name: string }, T>(
  naming: Promise<N>,
  sentName: string,
  read: (name: string) => T,
): Promise<[N, T]> {
  const [named, early] = await Promise.all([
    naming,
    nextTurn(() => {
      try {
        return { value: read(sentName) };
      } catch {
        return null;
      }
    }),
  ]);
  return [named, named.name === sentName && early ? early.value : read(named.name)];
}

export class CommandRunner {
  private readonly o: CommandRunnerOptions;
  readonly power: PowerActions;

  constructor(opts: CommandRunnerOptions) {
    this.o = opts;
    this.power = new PowerActions(opts);
  }

  /** Returns once the command is answered (tests wait on it; the link does not). */
  handle(cmd: Command | FollowCommand): Promise<void> {
    const { id } = cmd;
    if (cmd.type === "vm.start" || cmd.type === "vm.stop" || cmd.type === "vm.forceStop") return this.power.handle(cmd);
    const late = this.o.serverNow() - cmd.payload.deadline;
    if (late > 0) {
      this.o.log.warn(
        { id, type: cmd.type, vmId: cmd.payload.vmId, lateMs: late },
        "command arrived after its deadline: not carried out",
      );
      this.fail(
        id,
        new AgentFailure("expired", `deadline passed ${late} ms before the command was read; not carried out`),
      );
      return Promise.resolve();
    }
    switch (cmd.type) {
      case "vm.state":
        return this.answer(id, async () => {
          const { vmId, name: sentName, excerptLines } = cmd.payload;
          if (!excerptLines) {
            const { state, libvirtState } = await this.o.libvirt.state(vmId);
            return void this.o.send({ type: "result", id, payload: { state, libvirtState } });
          }
          // The state and libvirt's name for the log, asked at once; the excerpt read meanwhile.
          const [{ state, libvirtState }, logExcerpt] = await readUnderLibvirtName(
            this.o.libvirt.stateAndName(vmId),
            sentName,
            (name) => this.excerpt(id, name, excerptLines),
          );
          this.o.send({ type: "result", id, payload: { state, libvirtState, logExcerpt } });
        });
      case "vm.logs":
        return this.answer(id, () => this.sendLogs(cmd));
      case "vm.logs.follow":
        return this.answer(id, () => this.follow(cmd));
    }
  }

  /** Acked once it runs; then `log.append` frames with this id until unfollowed or the link drops. */
  private async follow(cmd: FollowCommand) {
    const { follower } = this.o;
    if (!follower) throw new AgentFailure("not_allowed", "this agent does not follow logs");
    const name = await logNameFor(this.o.libvirt, cmd.payload.vmId, cmd.payload.name);
    follower.start(cmd.id, name, () => this.o.send({ type: "ack", id: cmd.id, payload: {} }));
  }

  /** The last lines of the log of the domain libvirt names `name`, for a reset's event; null when
   *  there is no log to read (never fails the state answer). */
  private excerpt(id: string, name: string, lines: number): string | null {
    try {
      // Read with room to spare: the newest lines are kept when they are longer than the excerpt's budget.
      return lastLines(readVmLog(this.o.logDir, name, lines, 16 * EXCERPT_MAX_BYTES).text, lines);
    } catch (err) {
      if (!(err instanceof AgentFailure))
        this.o.log.warn({ id, err: (err as Error)?.message }, "could not read a log excerpt");
      return null;
    }
  }

  private async sendLogs(cmd: Extract<Command, { type: "vm.logs" }>) {
    const { vmId, name: sentName, lines, maxBytes } = cmd.payload;
    const [, tail] = await readUnderLibvirtName(
      logNameFor(this.o.libvirt, vmId, sentName).then((name) => ({ name })),
      sentName,
      (name) => readVmLog(this.o.logDir, name, lines, maxBytes),
    );
    const oneFrame = this.o.peerFeatures?.().has("logText" satisfies WireFeature) ?? false;
    for (const frame of logAnswerFrames(cmd.id, tail, oneFrame)) this.o.send(frame);
  }

  private async answer(id: string, work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (err) {
      this.fail(id, err);
    }
  }

  private fail(id: string, err: unknown) {
    const failure = toFailure(err, this.o.log, id);
    this.o.send({ type: "error", id, payload: { code: failure.code, message: failure.message.slice(0, 2000) } });
  }
}
