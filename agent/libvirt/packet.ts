// libvirt's RPC framing: a big-endian length word that counts itself and everything after it, a
// 24-byte header (program, version, procedure, type, serial, status), then the body. The splitter
// turns the socket's byte chunks into whole packets and refuses a length no daemon may send.
import { HEADER_BYTES, LENGTH_BYTES, MAX_PACKET_BYTES } from "./protocol.ts";

export type Header = {
  program: number;
  version: number;
  procedure: number;
  type: number;
  serial: number;
  status: number;
};
export type Packet = Header & { body: Uint8Array };

/** A byte stream that cannot be libvirt's framing: the connection cannot go on. */
export class FramingError extends Error {
  override name = "FramingError";
}

export function encodePacket(h: Header, body: Uint8Array = new Uint8Array(0)): Buffer {
  const total = LENGTH_BYTES + HEADER_BYTES + body.byteLength;
  if (total > MAX_PACKET_BYTES) throw new FramingError(`packet of ${total} bytes is over ${MAX_PACKET_BYTES}`);
  const out = Buffer.allocUnsafe(total);
  out.writeUInt32BE(total, 0);
  out.writeUInt32BE(h.program >>> 0, 4);
  out.writeUInt32BE(h.version >>> 0, 8);
  out.writeInt32BE(h.procedure, 12);
  out.writeInt32BE(h.type, 16);
  out.writeUInt32BE(h.serial >>> 0, 20);
  out.writeInt32BE(h.status, 24);
  out.set(body, 28);
  return out;
}

/** Reassembles packets from chunks; chunks are joined once per packet, not once per chunk. */
export class PacketSplitter {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** Bytes of a packet not yet complete (non-zero when the peer stops mid-packet). */
  get partial(): number {
    return this.buffered;
  }

  /** Adds a chunk; returns the packets it completed. Throws FramingError on an impossible length. */
  push(chunk: Buffer): Packet[] {
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    const out: Packet[] = [];
    for (;;) {
      if (this.buffered < LENGTH_BYTES) return out;
      const length = this.peekLength();
      if (length < LENGTH_BYTES + HEADER_BYTES)
        throw new FramingError(`packet length ${length} is shorter than its header`);
      if (length > MAX_PACKET_BYTES)
        throw new FramingError(`packet length ${length} is over the ${MAX_PACKET_BYTES}-byte maximum`);
      if (this.buffered < length) return out;
      const whole = this.take(length);
      out.push({
        program: whole.readUInt32BE(4),
        version: whole.readUInt32BE(8),
        procedure: whole.readInt32BE(12),
        type: whole.readInt32BE(16),
        serial: whole.readUInt32BE(20),
        status: whole.readInt32BE(24),
        body: whole.subarray(28),
      });
    }
  }

  private peekLength(): number {
    const first = this.chunks[0];
    if (first.byteLength >= LENGTH_BYTES) return first.readUInt32BE(0);
    const head = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [head];
    return head.readUInt32BE(0);
  }

  private take(n: number): Buffer {
    const joined = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    const packet = joined.subarray(0, n);
    const rest = joined.subarray(n);
    this.chunks = rest.byteLength ? [rest] : [];
    this.buffered = rest.byteLength;
    return packet;
  }
}
