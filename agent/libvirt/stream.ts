// A libvirt stream as a duplex byte stream (the serial console): data both ways on the call's serial.
// In: CONTINUE packets carry data, an empty CONTINUE is end of file, OK confirms our finish, ERROR
// carries remote_error. Out: CONTINUE packets of data, OK to finish, ERROR to abort. Nothing here
// blocks on the other direction, so tearing down while both directions are busy cannot deadlock.
import { LibvirtError, readRemoteError } from "./error.ts";
import { MAX_STREAM_CHUNK, PacketStatus } from "./protocol.ts";
import type { StreamPort, StreamSink } from "./rpc.ts";
import { XdrReader } from "./xdr.ts";

export type StreamEnd = { error?: LibvirtError };

/** While paused, up to this much is kept here; beyond it the socket is no longer read. */
const HOLD_AFTER_BYTES = 1024 * 1024;
/** How long close() waits for the daemon to confirm the finish before it lets go. */
const FINISH_WAIT_MS = 5_000;

export class ConsoleStream implements StreamSink {
  private port: StreamPort | null = null;
  private readonly dataListeners: ((chunk: Uint8Array) => void)[] = [];
  private readonly endListeners: ((reason: StreamEnd) => void)[] = [];
  private readonly queue: Uint8Array[] = [];
  private queued = 0;
  private paused = false;
  private holding = false;
  /** the end as the daemon (or the connection) gave it, delivered once the queue is drained */
  private endReason: StreamEnd | null = null;
  private endDelivered = false;
  /** set once we sent OK (finish) or ERROR (abort): waits for the daemon's confirmation */
  private closing: { done: () => void; promise: Promise<void> } | null = null;
  /** the daemon is done with the stream (it confirmed, sent an error, or the connection ended) */
  private settled = false;
  private bytesIn = 0;
  private bytesOut = 0;

  /** @internal the router's way back, given once the call is sent */
  attach(port: StreamPort): void {
    this.port = port;
  }

  /** Bytes received and sent so far. */
  get counts(): { in: number; out: number } {
    return { in: this.bytesIn, out: this.bytesOut };
  }

  get ended(): boolean {
    return this.endReason !== null;
  }

  onData(cb: (chunk: Uint8Array) => void): void {
    this.dataListeners.push(cb);
    queueMicrotask(() => this.drain());
  }

  onEnd(cb: (reason: StreamEnd) => void): void {
    if (this.endDelivered) queueMicrotask(() => cb(this.endReason!));
    else this.endListeners.push(cb);
  }

  /** Stop delivering data (it is kept, and past a bound the connection stops reading). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.drain();
  }

  /** Sends bytes to the guest; ignored once the stream has ended. Returns false when the socket
   *  holds more than its high-water mark unsent: wait for onDrain before writing more. The daemon
   *  feeds input to the guest as fast as the guest reads it and, while it does, takes no further
   *  packets of this connection, so a writer that ignores this delays every call behind its input. */
  write(bytes: Uint8Array): boolean {
    if (this.endReason || this.closing || !this.port) return true;
    let below = true;
    for (let at = 0; at < bytes.byteLength; at += MAX_STREAM_CHUNK) {
      const chunk = bytes.subarray(at, at + MAX_STREAM_CHUNK);
      below = this.port.send(PacketStatus.continue, chunk) && below;
      this.bytesOut += chunk.byteLength;
    }
    return below;
  }

  /** Called once the socket has sent what write() held back (at once when nothing is held). */
  onDrain(cb: () => void): void {
    if (this.port) this.port.onDrain(cb);
    else queueMicrotask(cb);
  }

  /** Finishes the stream (libvirt's virStreamFinish): resolves once the daemon confirmed or let go. */
  close(): Promise<void> {
    return this.shut(PacketStatus.ok);
  }

  /** Aborts the stream (virStreamAbort): the daemon drops what is in flight. */
  abort(): Promise<void> {
    return this.shut(PacketStatus.error);
  }

  private shut(status: number): Promise<void> {
    if (this.closing) return this.closing.promise;
    let done!: () => void;
    const promise = new Promise<void>((r) => (done = r));
    this.closing = { done, promise };
    if (this.settled || !this.port) {
      this.finishClosing();
      return promise;
    }
    this.port.send(status);
    const timer = setTimeout(() => {
      this.end({});
      this.finishClosing();
    }, FINISH_WAIT_MS);
    timer.unref();
    void promise.then(() => clearTimeout(timer));
    return promise;
  }

  private finishClosing() {
    this.port?.detach();
    this.closing?.done();
  }

  /** @internal a packet of this stream, from the router */
  packet(status: number, body: Uint8Array): void {
    if (status === PacketStatus.continue) {
      if (body.byteLength === 0) {
        // End of file (the guest's console hung up): tell the daemon we are done with it too.
        this.end({});
        if (!this.closing) void this.close();
        return;
      }
      if (this.endReason) return;
      this.bytesIn += body.byteLength;
      this.queue.push(body);
      this.queued += body.byteLength;
      this.drain();
      return;
    }
    this.settled = true;
    if (status === PacketStatus.ok) {
      this.end({});
      this.finishClosing();
      return;
    }
    const r = new XdrReader(body);
    const error = readRemoteError(r); // a body that does not decode is the router's protocol error
    r.end();
    this.end(this.closing ? {} : { error });
    this.finishClosing();
  }

  /** @internal the connection under the stream ended */
  connectionClosed(err: LibvirtError): void {
    this.settled = true;
    this.end(this.closing ? {} : { error: err });
    this.closing?.done();
  }

  private end(reason: StreamEnd) {
    if (this.endReason) return;
    this.endReason = reason;
    this.drain();
  }

  private drain() {
    while (this.queue.length && !this.paused && this.dataListeners.length) {
      const chunk = this.queue.shift()!;
      this.queued -= chunk.byteLength;
      for (const cb of this.dataListeners) deliver(cb, chunk);
    }
    const hold = this.queued > HOLD_AFTER_BYTES && !this.endReason;
    if (hold !== this.holding) {
      this.holding = hold;
      this.port?.hold(hold);
    }
    // The end comes after the data before it; a stream closed by us does not wait for a paused reader.
    if (this.endReason && !this.endDelivered && (this.queue.length === 0 || this.closing)) {
      this.endDelivered = true;
      if (this.holding) this.port?.hold((this.holding = false));
      for (const cb of this.endListeners.splice(0)) deliver(cb, this.endReason);
    }
  }
}

/** A listener that throws must not take the connection down with it: its error surfaces on its own. */
function deliver<T>(cb: (v: T) => void, v: T) {
  try {
    cb(v);
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}
