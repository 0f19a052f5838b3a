// Just enough of RFB (the VNC protocol) for the agent's relay: the client's messages parsed so that a
// watcher's input (keys, pointer, cut text, QEMU's extended messages) is dropped whole, and the
// server's security types read so that a display asking for a password is refused, never relayed.

/** Client-to-server message types (RFC 6143 §7.5, plus the extensions QEMU and noVNC use). */
export const RFB_CLIENT = {
  setPixelFormat: 0,
  setEncodings: 2,
  framebufferUpdateRequest: 3,
  keyEvent: 4,
  pointerEvent: 5,
  clientCutText: 6,
  enableContinuousUpdates: 150,
  clientFence: 248,
  xvp: 250,
  setDesktopSize: 251,
  qemu: 255,
} as const;

/** What a watcher may not send: it would change the guest. */
const INPUT_TYPES: ReadonlySet<number> = new Set([
  RFB_CLIENT.keyEvent,
  RFB_CLIENT.pointerEvent,
  RFB_CLIENT.clientCutText,
  RFB_CLIENT.qemu,
  RFB_CLIENT.xvp, // power actions (reboot, shutdown) where a server offers them
]);

export const SECURITY_NONE = 1;
const SECURITY_NAMES: Record<number, string> = {
  2: "VNC password",
  5: "RA2",
  16: "Tight",
  18: "TLS",
  19: "VeNCrypt (TLS or x509, possibly with a password)",
  20: "SASL",
};
export const securityName = (t: number) => SECURITY_NAMES[t] ?? `type ${t}`;

export type ClientCounts = { passed: Record<number, number>; dropped: Record<number, number> };

/** The client's side of an RFB connection: the handshake passes, then whole messages, a watcher's
 *  input messages dropped. Messages may be split across and joined within chunks. */
export class RfbClientFilter {
  readonly counts: ClientCounts = { passed: {}, dropped: {} };
  /** the minor version the client asked for (3, 7 or 8), once its version is read */
  minor: number | null = null;
  private stage: "version" | "security" | "init" | "messages" | "opaque" = "version";
  private held: Uint8Array = new Uint8Array(0);
  private readonly readOnly: boolean;

  constructor(readOnly: boolean) {
    this.readOnly = readOnly;
  }

  /** The bytes of `chunk` (after what was held back) to pass on; throws on a stream a watcher cannot
   *  be kept safe on (an unknown message, a security type other than None). */
  feed(chunk: Uint8Array): Uint8Array {
    const data = this.held.byteLength ? join(this.held, chunk) : chunk;
    if (this.stage === "opaque") return data;
    const out: Uint8Array[] = [];
    let at = 0;
    while (at < data.byteLength) {
      const need = this.nextLength(data, at);
      if (need === null || at + need > data.byteLength) break; // wait for the rest
      const piece = data.subarray(at, at + need);
      if (this.stage === "messages") {
        const type = piece[0];
        const keep = !(this.readOnly && INPUT_TYPES.has(type));
        const tally = keep ? this.counts.passed : this.counts.dropped;
        tally[type] = (tally[type] ?? 0) + 1;
        if (keep) out.push(piece);
      } else {
        out.push(piece);
        this.advance(piece);
      }
      at += need;
      if (this.isOpaque()) {
        out.push(data.subarray(at));
        at = data.byteLength;
      }
    }
    this.held = data.slice(at);
    return out.length === 1 ? out[0] : join(...out);
  }

  private isOpaque(): boolean {
    return this.stage === "opaque";
  }

  private advance(piece: Uint8Array): void {
    if (this.stage === "version") {
      const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(new TextDecoder().decode(piece));
      if (!m) throw new RfbError("the viewer did not start with an RFB version");
      const minor = Number(m[2]);
      this.minor = minor >= 8 ? 8 : minor >= 7 ? 7 : 3;
      this.stage = this.minor === 3 ? "init" : "security";
    } else if (this.stage === "security") {
      if (piece[0] !== SECURITY_NONE)
        throw new RfbError(`the viewer chose ${securityName(piece[0])}; only displays without a password are relayed`);
      this.stage = "init";
    } else if (this.stage === "init") {
      this.stage = "messages";
    }
  }

  /** The length of the next unit at `at`, or null until enough of it is here to tell. */
  private nextLength(d: Uint8Array, at: number): number | null {
    const left = d.byteLength - at;
    switch (this.stage) {
      case "version":
        return 12;
      case "security":
      case "init":
        return 1;
      case "opaque":
        return left;
      case "messages":
        break;
    }
    const view = new DataView(d.buffer, d.byteOffset + at, left);
    const type = d[at];
    switch (type) {
      case RFB_CLIENT.setPixelFormat:
        return 20;
      case RFB_CLIENT.setEncodings:
        return left < 4 ? null : 4 + 4 * view.getUint16(2);
      case RFB_CLIENT.framebufferUpdateRequest:
        return 10;
      case RFB_CLIENT.keyEvent:
        return 8;
      case RFB_CLIENT.pointerEvent:
        return 6;
      case RFB_CLIENT.clientCutText:
        // A negative length is the extended clipboard's: its absolute value of bytes follows.
        return left < 8 ? null : 8 + Math.abs(view.getInt32(4));
      case RFB_CLIENT.enableContinuousUpdates:
        return 10;
      case RFB_CLIENT.clientFence:
        return left < 9 ? null : 9 + view.getUint8(8);
      case RFB_CLIENT.xvp:
        return 4;
      case RFB_CLIENT.setDesktopSize:
        return left < 8 ? null : 8 + 16 * view.getUint8(6);
      case RFB_CLIENT.qemu: {
        if (left < 2) return null;
        const sub = view.getUint8(1);
        if (sub === 0) return 12; // extended key event
        if (sub === 1) {
          // audio: enable / disable are 4 bytes, set format 10
          if (left < 4) return null;
          return view.getUint16(2) === 2 ? 10 : 4;
        }
        break;
      }
    }
    if (!this.readOnly) {
      // A writer's unknown message cannot be measured: pass the rest as it comes (nothing to filter).
      this.stage = "opaque";
      return left;
    }
    throw new RfbError(`the viewer sent an RFB message this relay does not know (type ${type}) while watching`);
  }
}

export type SecurityVerdict =
  | { kind: "none" } // None offered: relay on
  | { kind: "failed" } // the server refused (its reason follows): pass it on as it is
  | { kind: "password"; offered: number[] };

/** The server's side of the handshake, held back until its security types are read: a display that
 *  offers None passes, one that only offers passwords (or TLS) is refused before the viewer sees it. */
export class RfbServerGate {
  verdict: SecurityVerdict | null = null;
  private versionSent = false;
  private held: Uint8Array = new Uint8Array(0);
  private clientMinor: number | null = null;

  /** The client's version is known (the server's security message depends on it). */
  clientVersion(minor: number): Uint8Array {
    this.clientMinor = minor;
    return this.feed(new Uint8Array(0));
  }

  /** Server bytes to pass to the viewer now. */
  feed(chunk: Uint8Array): Uint8Array {
    if (this.verdict) return chunk;
    this.held = join(this.held, chunk);
    const out: Uint8Array[] = [];
    if (!this.versionSent) {
      if (this.held.byteLength < 12) return new Uint8Array(0);
      out.push(this.held.slice(0, 12));
      this.held = this.held.slice(12);
      this.versionSent = true;
    }
    if (this.clientMinor === null) return join(...out);
    const verdict = this.readSecurity();
    if (!verdict) return join(...out);
    this.verdict = verdict;
    if (verdict.kind !== "password") out.push(this.held);
    this.held = new Uint8Array(0);
    return join(...out);
  }

  private readSecurity(): SecurityVerdict | null {
    const d = this.held;
    if (this.clientMinor === 3) {
      if (d.byteLength < 4) return null;
      const type = new DataView(d.buffer, d.byteOffset).getUint32(0);
      if (type === 0) return { kind: "failed" };
      return type === SECURITY_NONE ? { kind: "none" } : { kind: "password", offered: [type] };
    }
    if (d.byteLength < 1) return null;
    const count = d[0];
    if (count === 0) return { kind: "failed" };
    if (d.byteLength < 1 + count) return null;
    const offered = [...d.subarray(1, 1 + count)];
    return offered.includes(SECURITY_NONE) ? { kind: "none" } : { kind: "password", offered };
  }
}

export class RfbError extends Error {}

function join(...parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
