// The server half of a long-poll link: the frames queued for an agent that cannot keep a
// WebSocket, and the one poll waiting for them. The queue lives in memory: losing it (the object
// evicted between two polls) costs only commands that then fail through their deadlines.
import { MAX_POLL_MESSAGES, type ServerMessage } from "../../protocol/wire.ts";

/** Why a link ended, as a poll or send naming it is answered from then on. */
export type LinkEnded = { status: 401 | 409 | 410; code: string; message: string };

export type PollAnswer =
  | { ok: true; connId: string; cursor: string; messages: ServerMessage[] }
  | ({ ok: false } & LinkEnded);

/** Frames not picked up by the agent; a link piling up more than this is not being polled. */
const MAX_QUEUED = 2_000;

export class PollOutbox {
  readonly connId: string;
  /** Cursors are `<epoch>.<seq>`: a cursor of an outbox lost with the object's memory matches nothing. */
  private readonly epoch = crypto.randomUUID().slice(0, 8);
  private seq = 0;
  // Bounded by MAX_QUEUED: a push beyond it fails the send instead of growing.
  private queue: { seq: number; frame: ServerMessage }[] = [];

  /** Frames not yet picked up (the debug counts of a local soak run). */
  get queued(): number {
    return this.queue.length;
  }
  private waiting: { answer: (a: PollAnswer) => void; timer: ReturnType<typeof setTimeout> } | null = null;
  private ended: LinkEnded | null = null;

  constructor(connId: string) {
    this.connId = connId;
  }

  /** A poll is held open right now (the agent is alive and listening). */
  get polling(): boolean {
    return this.waiting !== null;
  }

  push(frame: ServerMessage): void {
    if (this.ended) throw new Error(`long-poll link ${this.connId} has ended`);
    if (this.queue.length >= MAX_QUEUED)
      throw new Error(`long-poll link ${this.connId} has ${MAX_QUEUED} frames nobody picked up`);
    this.queue.push({ seq: ++this.seq, frame });
    this.flush();
  }

  /** Answers at once when frames are due (or the link ended), else holds the poll up to `waitMs`.
   *  A newer poll on the same link answers the older one (empty), so only one is ever held. */
  take(cursor: string | undefined, waitMs: number): Promise<PollAnswer> {
    if (this.ended) return Promise.resolve({ ok: false, ...this.ended });
    const [epoch, seq] = (cursor ?? "").split(".");
    if (epoch === this.epoch) {
      const seen = Number(seq);
      if (Number.isInteger(seen)) this.queue = this.queue.filter((q) => q.seq > seen);
    }
    this.answerWaiting();
    if (this.queue.length > 0 || waitMs <= 0) return Promise.resolve(this.answer());
    return new Promise((resolve) => {
      // A timer in a Durable Object keeps it awake; a held poll does that anyway (the agent is
      // connected), and it ends by itself within waitMs.
      const timer = setTimeout(() => this.answerWaiting(), waitMs);
      this.waiting = { answer: resolve, timer };
    });
  }

  /** Ends the link: a held poll learns why, and so does every later poll or send naming it. */
  end(why: LinkEnded): void {
    this.ended = why;
    this.queue = [];
    const w = this.waiting;
    this.waiting = null;
    if (w) {
      clearTimeout(w.timer);
      w.answer({ ok: false, ...why });
    }
  }

  private answer(): PollAnswer {
    const messages = this.queue.slice(0, MAX_POLL_MESSAGES);
    // Handed out but kept until a later poll's cursor says this answer arrived.
    const upTo = messages.at(-1)?.seq ?? this.seq;
    return { ok: true, connId: this.connId, cursor: `${this.epoch}.${upTo}`, messages: messages.map((q) => q.frame) };
  }

  private answerWaiting(): void {
    const w = this.waiting;
    if (!w) return;
    this.waiting = null;
    clearTimeout(w.timer);
    w.answer(this.answer());
  }

  private flush(): void {
    if (this.waiting) this.answerWaiting();
  }
}
