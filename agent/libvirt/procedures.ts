// The remote program's procedures this client uses, one typed function each, all written to one
// pattern: encode the arguments (remote_protocol.x's `remote_<name>_args`), call, decode the reply
// (`remote_<name>_ret`). Nothing here knows about serials or sockets; nothing below knows these names.
import { Limits, Proc } from "./protocol.ts";
import type { RpcConnection, StreamPort, StreamSink } from "./rpc.ts";
import { XdrError, type XdrReader, XdrWriter } from "./xdr.ts";

/** remote_nonnull_domain: how the daemon names a domain in every call (it finds it by UUID). */
export type DomainRef = { name: string; uuid: string; id: number };

export function uuidBytes(uuid: string): Uint8Array {
  const hex = uuid.replaceAll("-", "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new XdrError(`not a UUID: ${JSON.stringify(uuid.slice(0, 60))}`);
  return Uint8Array.from(hex.match(/../g)!, (b) => Number.parseInt(b, 16));
}

export function uuidString(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export const readDomain = (r: XdrReader): DomainRef => ({
  name: r.string(Limits.string),
  uuid: uuidString(r.fixedOpaque(16)),
  id: r.int(),
});

export const writeDomain = (w: XdrWriter, d: DomainRef) => {
  w.string(d.name, Limits.string).fixedOpaque(uuidBytes(d.uuid), 16).int(d.id);
};

const none = (): void => {};
const args = (write: (w: XdrWriter) => void) => {
  const w = new XdrWriter();
  write(w);
  return w.bytes();
};
const noArgs = new Uint8Array(0);
const domainArgs = (dom: DomainRef) => args((w) => writeDomain(w, dom));
const domainFlagsArgs = (dom: DomainRef, flags: number) => args((w) => (writeDomain(w, dom), w.uint(flags)));

/** Calls that wait on the guest or start QEMU get longer than a query (the agent caps them itself). */
const LONG = { timeoutMs: 15 * 60_000 };

export type DomainInfo = { state: number; maxMemKiB: bigint; memoryKiB: bigint; vcpus: number; cpuTimeNs: bigint };

export type TypedParamValue =
  | { type: "int"; value: number }
  | { type: "uint"; value: number }
  | { type: "llong"; value: bigint }
  | { type: "ullong"; value: bigint }
  | { type: "double"; value: number }
  | { type: "boolean"; value: boolean }
  | { type: "string"; value: string };

export type DomainStatsRecord = { domain: DomainRef; params: Map<string, TypedParamValue> };

/** remote_typed_param: a field name and a union switched on virTypedParameterType (1..7). */
export function readTypedParam(r: XdrReader): [string, TypedParamValue] {
  const field = r.string(Limits.string);
  const type = r.int();
  switch (type) {
    case 1:
      return [field, { type: "int", value: r.int() }];
    case 2:
      return [field, { type: "uint", value: r.uint() }];
    case 3:
      return [field, { type: "llong", value: r.hyper() }];
    case 4:
      return [field, { type: "ullong", value: r.uhyper() }];
    case 5:
      return [field, { type: "double", value: r.double() }];
    case 6:
      return [field, { type: "boolean", value: r.int() !== 0 }];
    case 7:
      return [field, { type: "string", value: r.string(Limits.typedParamString) }];
    default:
      throw new XdrError(`typed parameter ${JSON.stringify(field.slice(0, 60))} of unknown type ${type}`);
  }
}

export type LifecycleEvent = { domain: DomainRef; event: number; detail: number };

export const procedures = {
  authList: (rpc: RpcConnection) => rpc.call(Proc.AUTH_LIST, noArgs, (r) => r.array((x) => x.int(), Limits.authTypes)),

  authPolkit: (rpc: RpcConnection) => rpc.call(Proc.AUTH_POLKIT, noArgs, (r) => r.int() !== 0),

  connectOpen: (rpc: RpcConnection, name: string, flags = 0) =>
    rpc.call(
      Proc.CONNECT_OPEN,
      args((w) => w.optional(name, (x, v) => x.string(v, Limits.string)).uint(flags)),
      none,
    ),

  connectClose: (rpc: RpcConnection, timeoutMs?: number) => rpc.call(Proc.CONNECT_CLOSE, noArgs, none, { timeoutMs }),

  supportsFeature: (rpc: RpcConnection, feature: number) =>
    rpc.call(
      Proc.CONNECT_SUPPORTS_FEATURE,
      args((w) => w.int(feature)),
      (r) => r.int() !== 0,
    ),

  libVersion: (rpc: RpcConnection) => rpc.call(Proc.CONNECT_GET_LIB_VERSION, noArgs, (r) => r.uhyper()),

  hostname: (rpc: RpcConnection) => rpc.call(Proc.CONNECT_GET_HOSTNAME, noArgs, (r) => r.string(Limits.string)),

  listAllDomains: (rpc: RpcConnection, flags: number) =>
    rpc.call(
      Proc.CONNECT_LIST_ALL_DOMAINS,
      args((w) => w.int(1).uint(flags)),
      (r) => {
        const domains = r.array(readDomain, Limits.domainList);
        r.uint(); // ret: the count, the same as domains.length
        return domains;
      },
    ),

  lookupByUuid: (rpc: RpcConnection, uuid: string) =>
    rpc.call(
      Proc.DOMAIN_LOOKUP_BY_UUID,
      args((w) => w.fixedOpaque(uuidBytes(uuid), 16)),
      readDomain,
    ),

  lookupByName: (rpc: RpcConnection, name: string) =>
    rpc.call(
      Proc.DOMAIN_LOOKUP_BY_NAME,
      args((w) => w.string(name, Limits.string)),
      readDomain,
    ),

  getState: (rpc: RpcConnection, dom: DomainRef, flags = 0) =>
    rpc.call(Proc.DOMAIN_GET_STATE, domainFlagsArgs(dom, flags), (r) => ({ state: r.int(), reason: r.int() })),

  /** remote_domain_get_info_ret: `unsigned char` and `unsigned short` each take a 4-byte unit. */
  getInfo: (rpc: RpcConnection, dom: DomainRef) =>
    rpc.call(
      Proc.DOMAIN_GET_INFO,
      domainArgs(dom),
      (r): DomainInfo => ({
        state: r.uint() & 0xff,
        maxMemKiB: r.uhyper(),
        memoryKiB: r.uhyper(),
        vcpus: r.uint() & 0xffff,
        cpuTimeNs: r.uhyper(),
      }),
    ),

  getXmlDesc: (rpc: RpcConnection, dom: DomainRef, flags = 0) =>
    rpc.call(Proc.DOMAIN_GET_XML_DESC, domainFlagsArgs(dom, flags), (r) => r.string(Limits.string)),

  create: (rpc: RpcConnection, dom: DomainRef) => rpc.call(Proc.DOMAIN_CREATE, domainArgs(dom), none, LONG),

  createXml: (rpc: RpcConnection, xml: string, flags = 0) =>
    rpc.call(
      Proc.DOMAIN_CREATE_XML,
      args((w) => w.string(xml, Limits.string).uint(flags)),
      readDomain,
      LONG,
    ),

  defineXml: (rpc: RpcConnection, xml: string) =>
    rpc.call(
      Proc.DOMAIN_DEFINE_XML,
      args((w) => w.string(xml, Limits.string)),
      readDomain,
      LONG,
    ),

  undefineFlags: (rpc: RpcConnection, dom: DomainRef, flags = 0) =>
    rpc.call(Proc.DOMAIN_UNDEFINE_FLAGS, domainFlagsArgs(dom, flags), none),

  shutdown: (rpc: RpcConnection, dom: DomainRef) => rpc.call(Proc.DOMAIN_SHUTDOWN, domainArgs(dom), none, LONG),

  destroy: (rpc: RpcConnection, dom: DomainRef) => rpc.call(Proc.DOMAIN_DESTROY, domainArgs(dom), none, LONG),

  destroyFlags: (rpc: RpcConnection, dom: DomainRef, flags: number) =>
    rpc.call(Proc.DOMAIN_DESTROY_FLAGS, domainFlagsArgs(dom, flags), none, LONG),

  suspend: (rpc: RpcConnection, dom: DomainRef) => rpc.call(Proc.DOMAIN_SUSPEND, domainArgs(dom), none, LONG),

  resume: (rpc: RpcConnection, dom: DomainRef) => rpc.call(Proc.DOMAIN_RESUME, domainArgs(dom), none, LONG),

  reboot: (rpc: RpcConnection, dom: DomainRef, flags = 0) =>
    rpc.call(Proc.DOMAIN_REBOOT, domainFlagsArgs(dom, flags), none, LONG),

  pmWakeup: (rpc: RpcConnection, dom: DomainRef) =>
    rpc.call(Proc.DOMAIN_PM_WAKEUP, domainFlagsArgs(dom, 0), none, LONG),

  getAllDomainStats: (rpc: RpcConnection, doms: DomainRef[], stats: number, flags: number) =>
    rpc.call(
      Proc.CONNECT_GET_ALL_DOMAIN_STATS,
      args((w) => w.array(doms, writeDomain, Limits.domainList).uint(stats).uint(flags)),
      (r) =>
        r.array(
          (x): DomainStatsRecord => ({
            domain: readDomain(x),
            params: new Map(x.array(readTypedParam, Limits.domainStats)),
          }),
          Limits.domainList,
        ),
    ),

  /** remote_connect_domain_event_callback_register_any_args: {int eventID; remote_domain dom (optional)}. */
  eventRegisterAny: (rpc: RpcConnection, eventId: number, dom: DomainRef | null = null) =>
    rpc.call(
      Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
      args((w) => w.int(eventId).optional(dom, writeDomain)),
      (r) => r.int(),
    ),

  eventDeregisterAny: (rpc: RpcConnection, callbackId: number) =>
    rpc.call(
      Proc.CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY,
      args((w) => w.int(callbackId)),
      none,
    ),

  /** The body of DOMAIN_EVENT_CALLBACK_LIFECYCLE after its callback id: {dom; int event; int detail}. */
  readLifecycle: (r: XdrReader): LifecycleEvent => ({ domain: readDomain(r), event: r.int(), detail: r.int() }),

  /** DOMAIN_OPEN_CONSOLE {dom; remote_string dev_name; uint flags}: its data flows on the call's serial. */
  openConsole: (rpc: RpcConnection, dom: DomainRef, devName: string | null, flags: number, sink: StreamSink) =>
    rpc.callWithStream(
      Proc.DOMAIN_OPEN_CONSOLE,
      args((w) => {
        writeDomain(w, dom);
        w.optional(devName, (x, v) => x.string(v, Limits.string)).uint(flags);
      }),
      none,
      sink,
    ) satisfies { reply: Promise<void>; port: StreamPort },
};
