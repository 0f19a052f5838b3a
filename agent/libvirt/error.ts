// A libvirt failure as libvirt names it: its numeric error code (virErrorNumber), the part of libvirt
// it came from (virErrorDomain) and its message. Failures of the connection itself (closed, silent,
// a packet that makes no sense) carry libvirt's own code for them, VIR_ERR_RPC, from VIR_FROM_RPC.
import { ErrorCode, ErrorDomain, Limits } from "./protocol.ts";
import type { XdrReader } from "./xdr.ts";

export class LibvirtError extends Error {
  override name = "LibvirtError";
  readonly code: number;
  readonly domain: number;

  constructor(code: number, domain: number, message: string) {
    super(message);
    this.code = code;
    this.domain = domain;
  }

  /** A failure of the connection or the protocol, raised by this client (not sent by the daemon). */
  static rpc(message: string): LibvirtError {
    return new LibvirtError(ErrorCode.RPC, ErrorDomain.RPC, message);
  }

  toJSON() {
    return { code: this.code, domain: this.domain, message: this.message };
  }
}

const skipString = (r: XdrReader) => r.optional((x) => x.string(Limits.string));
const skipDomain = (r: XdrReader) =>
  r.optional((x) => {
    x.string(Limits.string);
    x.fixedOpaque(16);
    x.int();
  });

/** remote_error: {code, domain, message?, level, dom?, str1?, str2?, str3?, int1, int2, net?}. */
export function readRemoteError(r: XdrReader): LibvirtError {
  const code = r.int();
  const domain = r.int();
  const message = r.optional((x) => x.string(Limits.string));
  r.int(); // level
  skipDomain(r);
  skipString(r);
  skipString(r);
  skipString(r);
  r.int();
  r.int();
  r.optional((x) => {
    x.string(Limits.string);
    x.fixedOpaque(16);
  });
  return new LibvirtError(code, domain, message ?? `libvirt error ${code}`);
}
