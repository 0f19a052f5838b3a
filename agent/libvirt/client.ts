// A connection to a libvirt daemon over its own RPC protocol, with what callers mean: list and look
// up domains, their state, info and XML, start / shut down / destroy them, bulk statistics,
// lifecycle events and the serial console. Opening is libvirt's own sequence: AUTH_LIST, AUTH_POLKIT
// when the daemon asks for it, CONNECT_OPEN with the URI, then keepalive when the daemon offers it.
import { connect as netConnect, type Socket } from "node:net";
import { LibvirtError } from "./error.ts";
import {
  type DomainInfo,
  type DomainRef,
  type DomainStatsRecord,
  type LifecycleEvent,
  procedures,
} from "./procedures.ts";
import { AuthType, ErrorCode, ErrorDomain, EVENT_ID_LIFECYCLE, FEATURE_PROGRAM_KEEPALIVE, Proc } from "./protocol.ts";
import { RpcConnection, type RpcOptions } from "./rpc.ts";
import { ConsoleStream } from "./stream.ts";
import { resolveUri } from "./uri.ts";

export type ConnectOptions = RpcOptions & {
  /** how long to wait for the socket and the opening sequence (default 30 s) */
  connectTimeoutMs?: number;
};

/** A domain given by UUID alone: the daemon finds domains by UUID, so this saves a lookup. */
export type DomainLike = DomainRef | string;

/** virDomainState */
export const DomainState = {
  nostate: 0,
  running: 1,
  blocked: 2,
  paused: 3,
  shutdown: 4,
  shutoff: 5,
  crashed: 6,
  pmsuspended: 7,
} as const;

/** virDomainEventType (a lifecycle event's `event`) */
export const LifecycleEventType = {
  defined: 0,
  undefined: 1,
  started: 2,
  suspended: 3,
  resumed: 4,
  stopped: 5,
  shutdown: 6,
  pmsuspended: 7,
  crashed: 8,
} as const;

/** virConnectListAllDomainsFlags (the ones used here) */
export const ListFlags = { active: 1, inactive: 2 } as const;

/** virDomainStatsTypes */
export const StatsGroup = {
  state: 1,
  cpuTotal: 2,
  balloon: 4,
  vcpu: 8,
  interface: 16,
  block: 32,
} as const;

/** virConnectGetAllDomainStatsFlags (the ones used here) */
export const StatsFlags = { active: 1, inactive: 2, nowait: 1 << 29 } as const;

export const DestroyFlags = { default: 0, graceful: 1 } as const;

export type { DomainInfo, DomainRef, DomainStatsRecord, LifecycleEvent };

/** A lifecycle subscription; close() deregisters it with the daemon. */
export type Subscription = { close(): Promise<void> };

const asDomain = (d: DomainLike): DomainRef => (typeof d === "string" ? { name: "", uuid: d, id: -1 } : d);

function dial(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("no answer"));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function withDeadline<T>(work: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(LibvirtError.rpc(`${what}: no answer within ${ms} ms`));
    }, ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

export class LibvirtClient {
  readonly uri: string;
  private readonly rpc: RpcConnection;

  private constructor(uri: string, rpc: RpcConnection) {
    this.uri = uri;
    this.rpc = rpc;
  }

  /** Opens `uri` on the local daemon that serves it. Throws UnsupportedUriError for a URI this
   *  client cannot speak, LibvirtError when the daemon is not there or refuses. */
  static async connect(uri: string, opts: ConnectOptions = {}): Promise<LibvirtClient> {
    const target = resolveUri(uri);
    const timeoutMs = opts.connectTimeoutMs ?? 30_000;
    let socket: Socket | null = null;
    const failures: string[] = [];
    for (const path of target.sockets) {
      try {
        socket = await dial(path, timeoutMs);
        break;
      } catch (err) {
        failures.push(`${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    if (!socket)
      throw new LibvirtError(
        ErrorCode.SYSTEM_ERROR,
        ErrorDomain.RPC,
        `cannot reach the libvirt daemon for ${uri} (${failures.join("; ")})`,
      );
    const rpc = new RpcConnection(socket, opts);
    try {
      await withDeadline(LibvirtClient.open(rpc, target.name), timeoutMs, `opening ${uri}`, () => rpc.close());
    } catch (err) {
      rpc.close();
      throw err;
    }
    return new LibvirtClient(uri, rpc);
  }

  private static async open(rpc: RpcConnection, name: string) {
    // The daemon refuses every other call before AUTH_LIST (and answers NONE to root on a polkit socket).
    const types = await procedures.authList(rpc);
    if (types.length && !types.includes(AuthType.none)) {
      if (!types.includes(AuthType.polkit))
        throw new LibvirtError(
          ErrorCode.AUTH_FAILED,
          ErrorDomain.REMOTE,
          `the libvirt daemon asks for authentication this client does not offer (types ${types.join(", ")}; SASL is not supported)`,
        );
      if (!(await procedures.authPolkit(rpc)))
        throw new LibvirtError(ErrorCode.AUTH_FAILED, ErrorDomain.REMOTE, "polkit authentication did not complete");
    }
    await procedures.connectOpen(rpc, name);
    if (await procedures.supportsFeature(rpc, FEATURE_PROGRAM_KEEPALIVE)) rpc.startKeepalive();
  }

  /** Why the connection ended, or null while it is open. */
  get closedWith(): LibvirtError | null {
    return this.rpc.closedWith;
  }

  /** Called once when the connection ends, whoever ended it (every pending call has failed by then). */
  onClose(listener: (err: LibvirtError) => void): void {
    this.rpc.onClose(listener);
  }

  listDomains(flags = 0): Promise<DomainRef[]> {
    return procedures.listAllDomains(this.rpc, flags);
  }

  lookupByUuid(uuid: string): Promise<DomainRef> {
    return procedures.lookupByUuid(this.rpc, uuid);
  }

  lookupByName(name: string): Promise<DomainRef> {
    return procedures.lookupByName(this.rpc, name);
  }

  /** virDomainGetState: {state (virDomainState), reason}. */
  domainState(dom: DomainLike): Promise<{ state: number; reason: number }> {
    return procedures.getState(this.rpc, asDomain(dom));
  }

  domainInfo(dom: DomainLike): Promise<DomainInfo> {
    return procedures.getInfo(this.rpc, asDomain(dom));
  }

  domainXml(dom: DomainLike, flags = 0): Promise<string> {
    return procedures.getXmlDesc(this.rpc, asDomain(dom), flags);
  }

  /** Starts a defined domain (virDomainCreate). */
  start(dom: DomainLike): Promise<void> {
    return procedures.create(this.rpc, asDomain(dom));
  }

  createXml(xml: string, flags = 0): Promise<DomainRef> {
    return procedures.createXml(this.rpc, xml, flags);
  }

  defineXml(xml: string): Promise<DomainRef> {
    return procedures.defineXml(this.rpc, xml);
  }

  undefine(dom: DomainLike, flags = 0): Promise<void> {
    return procedures.undefineFlags(this.rpc, asDomain(dom), flags);
  }

  /** Asks the guest to shut down; returns once the request is made, not when the guest is off. */
  shutdown(dom: DomainLike): Promise<void> {
    return procedures.shutdown(this.rpc, asDomain(dom));
  }

  /** Powers the domain off now (DestroyFlags.graceful: give QEMU a moment to flush first). */
  destroy(dom: DomainLike, flags = 0): Promise<void> {
    return flags
      ? procedures.destroyFlags(this.rpc, asDomain(dom), flags)
      : procedures.destroy(this.rpc, asDomain(dom));
  }

  suspend(dom: DomainLike): Promise<void> {
    return procedures.suspend(this.rpc, asDomain(dom));
  }

  resume(dom: DomainLike): Promise<void> {
    return procedures.resume(this.rpc, asDomain(dom));
  }

  pmWakeup(dom: DomainLike): Promise<void> {
    return procedures.pmWakeup(this.rpc, asDomain(dom));
  }

  reboot(dom: DomainLike, flags = 0): Promise<void> {
    return procedures.reboot(this.rpc, asDomain(dom), flags);
  }

  /** The daemon's libvirt version as MAJOR.MINOR.MICRO. */
  async libVersion(): Promise<string> {
    const v = await procedures.libVersion(this.rpc);
    return `${v / 1_000_000n}.${(v / 1000n) % 1000n}.${v % 1000n}`;
  }

  hostname(): Promise<string> {
    return procedures.hostname(this.rpc);
  }

  /** virConnectGetAllDomainStats: every domain's typed statistics of the `stats` groups (StatsGroup
   *  bits; 0 for all the daemon has), of `domains` when given, else of those `flags` select. */
  allDomainStats(opts: { stats?: number; flags?: number; domains?: DomainLike[] } = {}): Promise<DomainStatsRecord[]> {
    return procedures.getAllDomainStats(this.rpc, (opts.domains ?? []).map(asDomain), opts.stats ?? 0, opts.flags ?? 0);
  }

  /** Lifecycle events of every domain (started, stopped, suspended, ...), until close(). */
  async lifecycleEvents(listener: (e: LifecycleEvent) => void): Promise<Subscription> {
    const callbackId = await procedures.eventRegisterAny(this.rpc, EVENT_ID_LIFECYCLE);
    this.rpc.onEvent(callbackId, (procedure, r) => {
      if (procedure !== Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE) return;
      const event = procedures.readLifecycle(r);
      r.end();
      try {
        listener(event);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    });
    return {
      close: async () => {
        this.rpc.offEvent(callbackId);
        if (!this.rpc.closedWith) await procedures.eventDeregisterAny(this.rpc, callbackId);
      },
    };
  }

  /** The domain's console (its first serial console, or `devName` such as "serial0") as a duplex
   *  stream. Another client holding it makes this fail, unless `force` takes it over. */
  async openConsole(uuid: string, opts: { force?: boolean; devName?: string } = {}): Promise<ConsoleStream> {
    const stream = new ConsoleStream();
    const flags = opts.force ? 1 : 0; // VIR_DOMAIN_CONSOLE_FORCE
    const { reply, port } = procedures.openConsole(this.rpc, asDomain(uuid), opts.devName ?? null, flags, stream);
    stream.attach(port);
    try {
      await reply;
    } catch (err) {
      port.detach();
      throw err;
    }
    return stream;
  }

  /** CONNECT_CLOSE, then the socket; pending calls fail. */
  async close(): Promise<void> {
    if (this.rpc.closedWith) return;
    await procedures.connectClose(this.rpc, 2_000).catch(() => {});
    this.rpc.close();
  }
}
