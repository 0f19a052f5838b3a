// The router of one libvirt connection: one read loop over the socket; replies go to their callers
// by serial (each with a timeout), events to their subscribers by callback id, stream packets to
// their streams, keepalive PINGs are answered with PONGs. A packet that makes no sense, a silent
// daemon or a closed socket ends the connection: every pending call and stream fails at once.
import type { Socket } from "node:net";
import { LibvirtError, readRemoteError } from "./error.ts";
import { FramingError, PacketSplitter, encodePacket, type Packet } from "./packet.ts";
import {
  KEEPALIVE_PING,
  KEEPALIVE_PONG,
  KEEPALIVE_PROGRAM,
  KEEPALIVE_VERSION,
  PacketStatus,
  PacketType,
  REMOTE_PROGRAM,
  REMOTE_VERSION,
} from "./protocol.ts";
import { XdrError, XdrReader } from "./xdr.ts";

export type RpcOptions = {
  /** how long a call waits for its reply (default 60 s) */
  callTimeoutMs?: number;
  /** how long without a packet before we PING (default 5 s, as libvirt's own client) */
  keepaliveIntervalMs?: number;
  /** PING intervals without any packet before the daemon counts as gone (default 3: about 15 s) */
  keepaliveCount?: number;
};

/** What a stream's owner is told: its packets, and the end of the connection under it. */
export type StreamSink = {
  packet(status: number, body: Uint8Array): void;
  connectionClosed(err: LibvirtError): void;
};

/** A stream's way back to the daemon; the serial stays inside. */
export type StreamPort = {
  /** false once the socket holds more than its high-water mark unsent (wait for onDrain) */
  send(status: number, body?: Uint8Array): boolean;
  onDrain(cb: () => void): void;
  /** stop routing this stream's packets (late ones are then dropped) */
  detach(): void;
  /** hold back reading the socket while the stream's owner cannot take more (back-pressure) */
  hold(on: boolean): void;
};

type Pending = {
  procedure: number;
  decode: (r: XdrReader) => unknown;
  resolve: (v: unknown) => void;
  reject: (e: LibvirtError) => void;
  timer: NodeJS.Timeout | null;
};

export type EventHandler = (procedure: number, body: XdrReader) => void;

/** Late replies to calls that timed out are dropped, not taken as a protocol error; this many are remembered. */
const ABANDONED_KEEP = 1024;

export class RpcConnection {
  private readonly socket: Socket;
  private readonly callTimeoutMs: number;
  private readonly keepaliveIntervalMs: number;
  private readonly keepaliveCount: number;
  private readonly splitter = new PacketSplitter();
  private readonly pending = new Map<number, Pending>();
  private readonly abandoned = new Set<number>();
  private readonly streams = new Map<number, StreamSink>();
  private readonly events = new Map<number, EventHandler>();
  private readonly closeListeners: ((err: LibvirtError) => void)[] = [];
  private readonly holders = new Set<object>();
  private serial = 0;
  private lastHeard = Date.now();
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private ended: LibvirtError | null = null;

  constructor(socket: Socket, opts: RpcOptions = {}) {
    this.socket = socket;
    this.callTimeoutMs = opts.callTimeoutMs ?? 60_000;
    this.keepaliveIntervalMs = opts.keepaliveIntervalMs ?? 5_000;
    this.keepaliveCount = opts.keepaliveCount ?? 3;
    socket.on("data", (chunk: Buffer) => this.read(chunk));
    socket.on("error", (err: NodeJS.ErrnoException) =>
      this.fail(
        LibvirtError.rpc(
          err.code === "ECONNRESET" || err.code === "EPIPE"
            ? `the libvirt daemon closed the connection (${err.code})`
            : `libvirt connection failed: ${err.message}`,
        ),
      ),
    );
    socket.on("close", () =>
      this.fail(
        LibvirtError.rpc(
          this.splitter.partial
            ? "the libvirt daemon closed the connection in the middle of a packet"
            : "the libvirt daemon closed the connection",
        ),
      ),
    );
  }

  /** Why the connection ended, or null while it is open. */
  get closedWith(): LibvirtError | null {
    return this.ended;
  }

  onClose(listener: (err: LibvirtError) => void): void {
    if (this.ended) queueMicrotask(() => listener(this.ended!));
    else this.closeListeners.push(listener);
  }

  /** Calls a procedure of the remote program; resolves with its decoded reply, rejects with a LibvirtError. */
  call<T>(
    procedure: number,
    args: Uint8Array,
    decode: (r: XdrReader) => T,
    opts: { timeoutMs?: number; stream?: StreamSink } = {},
  ): Promise<T> {
    return this.start(procedure, args, decode, opts).reply;
  }

  /** Calls a procedure that opens a stream on its serial (its packets may come before the reply). */
  callWithStream<T>(
    procedure: number,
    args: Uint8Array,
    decode: (r: XdrReader) => T,
    sink: StreamSink,
    opts: { timeoutMs?: number } = {},
  ): { reply: Promise<T>; port: StreamPort } {
    return this.start(procedure, args, decode, { ...opts, stream: sink });
  }

  private start<T>(
    procedure: number,
    args: Uint8Array,
    decode: (r: XdrReader) => T,
    opts: { timeoutMs?: number; stream?: StreamSink },
  ): { reply: Promise<T>; port: StreamPort } {
    const serial = this.nextSerial();
    const port = this.portFor(procedure, serial);
    const reply = new Promise<T>((resolve, reject) => {
      if (this.ended) return reject(this.ended);
      const timeoutMs = opts.timeoutMs ?? this.callTimeoutMs;
      const entry: Pending = {
        procedure,
        decode,
        resolve: resolve as (v: unknown) => void,
        reject,
        timer: null,
      };
      if (timeoutMs > 0) {
        entry.timer = setTimeout(() => {
          this.pending.delete(serial);
          this.abandon(serial);
          this.streams.delete(serial);
          reject(LibvirtError.rpc(`libvirt gave no answer to procedure ${procedure} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.pending.set(serial, entry);
      if (opts.stream) this.streams.set(serial, opts.stream);
      this.write({ type: PacketType.call, procedure, serial, status: PacketStatus.ok }, args);
    });
    return { reply, port };
  }

  private portFor(procedure: number, serial: number): StreamPort {
    const key = {};
    return {
      send: (status, body) =>
        !this.ended && this.streams.has(serial)
          ? this.write({ type: PacketType.stream, procedure, serial, status }, body)
          : true,
      onDrain: (cb) => {
        if (this.socket.writableNeedDrain && !this.ended) this.socket.once("drain", cb);
        else queueMicrotask(cb);
      },
      detach: () => {
        this.streams.delete(serial);
        this.hold(key, false);
      },
      hold: (on) => this.hold(key, on),
    };
  }

  /** Subscribes to the events carrying this callback id (the daemon gives it at registration). */
  onEvent(callbackId: number, handler: EventHandler): void {
    this.events.set(callbackId, handler);
  }

  offEvent(callbackId: number): void {
    this.events.delete(callbackId);
  }

  /** Sends our own PINGs and notices a daemon that stays silent (once the daemon agreed to keepalive). */
  startKeepalive(): void {
    if (this.keepaliveTimer || this.ended) return;
    this.lastHeard = Date.now();
    this.keepaliveTimer = setInterval(() => this.keepaliveTick(), this.keepaliveIntervalMs);
    this.keepaliveTimer.unref();
  }

  private keepaliveTick() {
    if (this.holders.size) return; // we stopped reading: silence is ours, not the daemon's
    const silentMs = Date.now() - this.lastHeard;
    if (silentMs >= this.keepaliveIntervalMs * this.keepaliveCount) {
      this.fail(
        LibvirtError.rpc(
          `the libvirt daemon has been silent for ${Math.round(silentMs / 1000)} s (no answer to keepalive): connection closed`,
        ),
      );
      return;
    }
    if (silentMs >= this.keepaliveIntervalMs - 50) this.keepalive(KEEPALIVE_PING);
  }

  /** Ends the connection; every pending call and stream fails with `err`. */
  close(err = LibvirtError.rpc("the libvirt connection was closed by this client")): void {
    this.fail(err);
  }

  private nextSerial(): number {
    this.serial = this.serial >= 0xffffffff ? 1 : this.serial + 1;
    return this.serial;
  }

  private abandon(serial: number) {
    this.abandoned.add(serial);
    if (this.abandoned.size > ABANDONED_KEEP) this.abandoned.delete(this.abandoned.values().next().value!);
  }

  private hold(key: object, on: boolean) {
    const before = this.holders.size;
    if (on) this.holders.add(key);
    else this.holders.delete(key);
    if (before === 0 && this.holders.size > 0) this.socket.pause();
    if (before > 0 && this.holders.size === 0 && !this.ended) {
      this.lastHeard = Date.now();
      this.socket.resume();
    }
  }

  private write(h: { type: number; procedure: number; serial: number; status: number }, body?: Uint8Array): boolean {
    if (this.ended) return true;
    return this.socket.write(encodePacket({ program: REMOTE_PROGRAM, version: REMOTE_VERSION, ...h }, body));
  }

  private keepalive(procedure: number) {
    if (this.ended) return;
    this.socket.write(
      encodePacket({
        program: KEEPALIVE_PROGRAM,
        version: KEEPALIVE_VERSION,
        procedure,
        type: PacketType.message,
        serial: 0,
        status: PacketStatus.ok,
      }),
    );
  }

  private read(chunk: Buffer) {
    if (this.ended) return;
    this.lastHeard = Date.now();
    try {
      for (const packet of this.splitter.push(chunk)) {
        this.route(packet);
        if (this.ended) return;
      }
    } catch (err) {
      if (err instanceof FramingError || err instanceof XdrError || err instanceof ProtocolError)
        this.fail(LibvirtError.rpc(`libvirt protocol error: ${err.message}; connection closed`));
      else this.fail(LibvirtError.rpc(`libvirt connection failed: ${(err as Error).message}`));
    }
  }

  private route(p: Packet) {
    if (p.program === KEEPALIVE_PROGRAM) {
      if (p.version !== KEEPALIVE_VERSION || p.type !== PacketType.message)
        throw new ProtocolError(`keepalive packet of version ${p.version}, type ${p.type}`);
      if (p.procedure === KEEPALIVE_PING) this.keepalive(KEEPALIVE_PONG);
      else if (p.procedure !== KEEPALIVE_PONG) throw new ProtocolError(`keepalive procedure ${p.procedure}`);
      return;
    }
    if (p.program !== REMOTE_PROGRAM) throw new ProtocolError(`packet of unknown program 0x${p.program.toString(16)}`);
    if (p.version !== REMOTE_VERSION) throw new ProtocolError(`packet of program version ${p.version}`);
    switch (p.type) {
      case PacketType.reply:
        return this.reply(p);
      case PacketType.message:
        return this.event(p);
      case PacketType.stream:
        // A stream ended here may still have packets on the way: dropped.
        this.streams.get(p.serial)?.packet(p.status, p.body);
        return;
      default:
        throw new ProtocolError(`packet of type ${p.type}, which a daemon does not send to a client`);
    }
  }

  private reply(p: Packet) {
    const call = this.pending.get(p.serial);
    if (!call) {
      if (this.abandoned.delete(p.serial)) return; // its caller gave up waiting
      throw new ProtocolError(`reply with serial ${p.serial}, which no call is waiting for`);
    }
    if (call.procedure !== p.procedure)
      throw new ProtocolError(`reply to procedure ${p.procedure} for a call of procedure ${call.procedure}`);
    this.pending.delete(p.serial);
    if (call.timer) clearTimeout(call.timer);
    const r = new XdrReader(p.body);
    if (p.status === PacketStatus.ok) {
      let value: unknown;
      try {
        value = call.decode(r);
        r.end();
      } catch (err) {
        call.reject(
          LibvirtError.rpc(`libvirt protocol error: reply to procedure ${p.procedure}: ${(err as Error).message}`),
        );
        throw err;
      }
      call.resolve(value);
    } else if (p.status === PacketStatus.error) {
      this.streams.delete(p.serial);
      let err: LibvirtError;
      try {
        err = readRemoteError(r);
        r.end();
      } catch (e) {
        call.reject(
          LibvirtError.rpc(`libvirt protocol error: error reply to procedure ${p.procedure} does not decode`),
        );
        throw e;
      }
      call.reject(err);
    } else {
      call.reject(LibvirtError.rpc(`libvirt protocol error: reply of status ${p.status}`));
      throw new ProtocolError(`reply of status ${p.status}`);
    }
  }

  private event(p: Packet) {
    const r = new XdrReader(p.body);
    const callbackId = r.int(); // every callback-style event starts with the id its registration returned
    this.events.get(callbackId)?.(p.procedure, r);
  }

  private fail(err: LibvirtError) {
    if (this.ended) return;
    this.ended = err;
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.socket.destroy();
    const calls = [...this.pending.values()];
    this.pending.clear();
    for (const c of calls) {
      if (c.timer) clearTimeout(c.timer);
      c.reject(err);
    }
    const streams = [...this.streams.values()];
    this.streams.clear();
    this.events.clear();
    for (const s of streams) s.connectionClosed(err);
    for (const listener of this.closeListeners.splice(0)) listener(err);
  }
}

/** A packet that is well framed but not one a daemon sends here. */
class ProtocolError extends Error {
  override name = "ProtocolError";
}
