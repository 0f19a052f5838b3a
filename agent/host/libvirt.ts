// The agent's only door to the hypervisor: one connection of libvirt's own RPC protocol (the client
// in ./libvirt/), opened lazily, reopened with backoff after it drops, with the lifecycle events
// subscribed again on every (re)open. Domains become VmInfo; libvirt failures become AgentFailure
// with a protocol error code taken from libvirt's own error code (vm_not_found, not_allowed,
// libvirt_error), never from its message text.
import { hostname as osHostname } from "node:os";
import {
  DomainState,
  ErrorCode,
  LibvirtClient,
  LibvirtError,
  ListFlags,
  StatsFlags,
  StatsGroup,
  type DomainRef,
  type LifecycleEvent,
  type TypedParamValue,
} from "../libvirt/index.ts";
import type { StateResult, VmInfo } from "../../protocol/wire.ts";
import { LIBVIRT_STATES, mapLibvirtState } from "../../protocol/wire-constants.ts";
import { DomainName } from "../../protocol/server-frames.ts";
import type { Logger } from "../logger.ts";

export type AgentErrorCode =
  | "expired"
  | "vm_not_found"
  | "log_not_found"
  | "invalid_name"
  | "not_allowed"
  | "overridden"
  | "libvirt_error"
  | "internal";

/** A failure the control plane (or the local API) is told about as `{code, message}`. */
export class AgentFailure extends Error {
  readonly code: AgentErrorCode;
  constructor(code: AgentErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** libvirt's error code decides the class: no domain, operation invalid, or any other failure. */
export function failureOf(what: string, err: unknown): AgentFailure {
  if (err instanceof AgentFailure) return err;
  if (err instanceof LibvirtError) {
    if (err.code === ErrorCode.NO_DOMAIN)
      return new AgentFailure("vm_not_found", `${what}: no such domain on this host`);
    if (err.code === ErrorCode.OPERATION_INVALID) return new AgentFailure("not_allowed", `${what}: ${err.message}`);
    return new AgentFailure("libvirt_error", `${what}: ${err.message}`);
  }
  return new AgentFailure("libvirt_error", `${what}: ${(err as Error)?.message ?? String(err)}`);
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

function checkedUuid(uuid: string): string {
  if (!UUID.test(uuid)) throw new AgentFailure("vm_not_found", `${uuid.slice(0, 80)} is not a domain UUID`);
  return uuid;
}

/** libvirt's state number as the agent reports it. */
function stateResult(state: number): StateResult {
  const libvirtState = LIBVIRT_STATES[state] ?? "nostate";
  return { state: mapLibvirtState(libvirtState), libvirtState };
}

/** The domain, unless its name is one libvirt itself refuses (a `/`, NUL), which no frame may carry. */
function named(dom: DomainRef): DomainRef {
  if (!DomainName(dom.name))
    throw new AgentFailure("invalid_name", `domain ${dom.uuid} has a name libvirt itself refuses ('/' or NUL)`);
  return dom;
}

export type DomainCounters = {
  uuid: string;
  name: string;
  vcpus: number;
  cpuTimeNs: number;
  memoryKiB: number;
  maxMemKiB: number;
  running: boolean;
  /** libvirt's bulk statistics of the domain (`cpu.time`, `block.0.rd.bytes`, ...) as numbers */
  stats: Map<string, number>;
};

export type LifecycleOptions = {
  /** a domain started, stopped, paused, ... */
  onLifecycle: (event: LifecycleEvent) => void;
  /** events (re)started: some may have been missed meanwhile */
  onStart?: () => void;
};

const numeric = (v: TypedParamValue): number | null =>
  v.type === "string" ? null : v.type === "boolean" ? Number(v.value) : Number(v.value);

export type LibvirtOptions = {
  /** the first and the longest wait between reconnects while events are wanted */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
};

export class Libvirt {
  private readonly uri: string;
  private readonly log: Logger;
  private readonly reconnectMinMs: number;
  private readonly reconnectMaxMs: number;
  private client: LibvirtClient | null = null;
  private opening: Promise<LibvirtClient> | null = null;
  private lifecycle: LifecycleOptions | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private closed = false;
  private eventsLive = false;

  constructor(uri: string, log: Logger, opts: LibvirtOptions = {}) {
    this.uri = uri;
    this.log = log;
    this.reconnectMinMs = opts.reconnectMinMs ?? 1_000;
    this.reconnectMaxMs = opts.reconnectMaxMs ?? 30_000;
  }

  /** Whether lifecycle events are flowing now (the poll is then only a safety net). */
  get eventsRunning(): boolean {
    return this.eventsLive;
  }

  private connection(): Promise<LibvirtClient> {
    if (this.client && !this.client.closedWith) return Promise.resolve(this.client);
    if (this.closed) return Promise.reject(new AgentFailure("libvirt_error", "the libvirt connection is closed"));
    this.opening ??= (async () => {
      let client: LibvirtClient;
      try {
        client = await LibvirtClient.connect(this.uri);
      } catch (err) {
        throw new AgentFailure("libvirt_error", `cannot connect to libvirt at ${this.uri}: ${(err as Error).message}`);
      } finally {
        this.opening = null;
      }
      if (this.closed) {
        await client.close();
        throw new AgentFailure("libvirt_error", "the libvirt connection is closed");
      }
      this.failures = 0;
      this.log.info({ uri: this.uri }, "libvirt connected");
      this.client = client;
      client.onClose((err) => this.dropped(client, err));
      if (this.lifecycle) await this.subscribe(client, this.lifecycle);
      return client;
    })();
    return this.opening;
  }

  private dropped(client: LibvirtClient, err: LibvirtError) {
    if (this.client !== client) return;
    this.client = null;
    this.eventsLive = false;
    if (this.closed) return;
    this.log.warn({ err: err.message }, "libvirt connection lost; reopening");
    if (this.lifecycle) this.scheduleReconnect();
  }

  /** While events are wanted the connection is kept open: reopened with backoff until it is. */
  private scheduleReconnect() {
    if (this.reconnectTimer || this.closed) return;
    const delay = Math.min(this.reconnectMaxMs, this.reconnectMinMs * 2 ** Math.min(this.failures, 10));
    this.failures++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connection().catch((err: Error) => {
        this.log.warn(
          { err: err.message, retryInMs: Math.min(this.reconnectMaxMs, this.reconnectMinMs * 2 ** this.failures) },
          "libvirt daemon not reachable yet; polling meanwhile, trying again",
        );
        this.scheduleReconnect();
      });
    }, delay);
    this.reconnectTimer.unref?.();
  }

  private async subscribe(client: LibvirtClient, opts: LifecycleOptions) {
    try {
      await client.lifecycleEvents(opts.onLifecycle);
      this.eventsLive = true;
      this.log.info({ uri: this.uri }, "libvirt lifecycle events: subscribed");
      opts.onStart?.();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "libvirt lifecycle events unavailable; polling only");
    }
  }

  /** Lifecycle events of every domain, subscribed now and again after every reconnect. */
  watchLifecycle(opts: LifecycleOptions): void {
    this.lifecycle = opts;
    if (this.client && !this.client.closedWith) void this.subscribe(this.client, opts);
    else
      this.connection().catch((err: Error) => {
        this.log.warn({ err: err.message }, "libvirt daemon not reachable yet; polling meanwhile, trying again");
        this.scheduleReconnect();
      });
  }

  /** Runs one libvirt call, translating its errors. */
  private async call<T>(what: string, fn: (c: LibvirtClient) => Promise<T>): Promise<T> {
    const client = await this.connection();
    try {
      return await fn(client);
    } catch (err) {
      throw failureOf(what, err);
    }
  }

  private lookup(c: LibvirtClient, uuid: string): Promise<DomainRef> {
    return c.lookupByUuid(checkedUuid(uuid));
  }

  /** Every domain whatever its name (its log path is confined where the log is opened, log-path.ts);
   *  only a name libvirt itself refuses (a `/`, NUL), which no frame may carry, is left out. */
  private async describe(c: LibvirtClient, dom: DomainRef): Promise<VmInfo | null> {
    const info = await c.domainInfo(dom);
    if (!DomainName(dom.name)) {
      this.log.warn(
        { uuid: dom.uuid, name: dom.name.slice(0, 80) },
        "domain name holds '/' or NUL, which libvirt refuses; skipped",
      );
      return null;
    }
    return {
      uuid: dom.uuid,
      name: dom.name,
      ...stateResult(info.state),
      vcpus: info.vcpus,
      memoryMiB: Math.round(Number(info.maxMemKiB) / 1024), // libvirt reports KiB
    };
  }

  async listDomains(): Promise<VmInfo[]> {
    return this.call("list domains", async (c) => {
      const doms = await c.listDomains();
      const vms = await Promise.all(doms.map((d) => this.describe(c, d).catch(() => null))); // vanished mid-list
      return (
        vms
          .filter((v): v is VmInfo => v !== null)
          // By code unit, not localeCompare: a stable order is all that is needed, and ICU's collation
          // would page 3 MiB of the node binary into an idle agent.
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.uuid < b.uuid ? -1 : 1))
      );
    });
  }

  /** The running domains' counters for the metrics sampler (cpuTime in ns, memory in KiB), with
   *  libvirt's bulk statistics (CPU, balloon, block, network) of each, in one call for them all. */
  async activeCounters(): Promise<DomainCounters[]> {
    return this.call("active domain counters", async (c) => {
      const [doms, records] = await Promise.all([
        c.listDomains(ListFlags.active),
        c.allDomainStats({
          stats: StatsGroup.cpuTotal | StatsGroup.balloon | StatsGroup.block | StatsGroup.interface,
          flags: StatsFlags.active | StatsFlags.nowait,
        }),
      ]);
      const statsOf = new Map(
        records.map((r) => [
          r.domain.uuid,
          new Map(
            [...r.params].flatMap(([k, v]) => {
              const n = numeric(v);
              return n === null ? [] : [[k, n] as const];
            }),
          ),
        ]),
      );
      const rows = await Promise.all(
        doms.map(async (d) => {
          const info = await c.domainInfo(d).catch(() => null); // vanished mid-list
          if (!info) return null;
          return {
            uuid: d.uuid,
            name: d.name,
            vcpus: info.vcpus,
            cpuTimeNs: Number(info.cpuTimeNs),
            memoryKiB: Number(info.memoryKiB),
            maxMemKiB: Number(info.maxMemKiB),
            running: info.state === DomainState.running || info.state === DomainState.blocked,
            stats: statsOf.get(d.uuid) ?? new Map(),
          };
        }),
      );
      return rows.filter((r): r is DomainCounters => r !== null);
    });
  }

  async domain(uuid: string): Promise<VmInfo> {
    return this.call(`domain ${uuid}`, async (c) => {
      const info = await this.describe(c, await this.lookup(c, uuid));
      if (!info)
        throw new AgentFailure("invalid_name", `domain ${uuid} has a name libvirt itself refuses ('/' or NUL)`);
      return info;
    });
  }

  /** The domain's state, in one call: libvirt's drivers find a domain by its UUID, so no lookup
   *  goes first (the name a reference carries is not looked at). */
  async state(uuid: string): Promise<StateResult> {
    return this.call(`state ${uuid}`, async (c) => stateResult((await c.domainState(checkedUuid(uuid))).state));
  }

  /** libvirt's own name for the domain (one call). */
  async nameOf(uuid: string): Promise<string> {
    return this.call(`domain ${uuid}`, async (c) => named(await this.lookup(c, uuid)).name);
  }

  /** The domain's state and libvirt's name for it, asked at once: one wait on the daemon, not two. */
  async stateAndName(uuid: string): Promise<StateResult & { name: string }> {
    return this.call(`domain ${uuid}`, async (c) => {
      const [dom, { state }] = await Promise.all([this.lookup(c, uuid), c.domainState(checkedUuid(uuid))]);
      return { ...stateResult(state), name: named(dom).name };
    });
  }

  /** Start a shut-off domain; a paused one is resumed, a pm-suspended one woken (start is allowed from PAUSED too). */
  async start(uuid: string): Promise<void> {
    const { libvirtState } = await this.state(uuid);
    await this.call(`start ${uuid}`, async (c) => {
      const dom = await this.lookup(c, uuid);
      if (libvirtState === "paused") return c.resume(dom);
      if (libvirtState === "pmsuspended") return c.pmWakeup(dom);
      if (libvirtState !== "shutoff")
        throw new AgentFailure("not_allowed", `start ${uuid}: the domain is ${libvirtState}`);
      return c.start(dom);
    });
  }

  /** Asks the guest to shut down (ACPI); returns at once, the guest may take its time or ignore it. */
  async shutdown(uuid: string): Promise<void> {
    await this.call(`shutdown ${uuid}`, async (c) => c.shutdown(await this.lookup(c, uuid)));
  }

  async destroy(uuid: string): Promise<void> {
    await this.call(`destroy ${uuid}`, async (c) => c.destroy(await this.lookup(c, uuid)));
  }

  async hostname(): Promise<string> {
    try {
      return await this.call("hostname", (c) => c.hostname());
    } catch {
      return osHostname();
    }
  }

  /** The daemon's libvirt version (MAJOR.MINOR.MICRO), or "unknown" while it cannot be reached. */
  async version(): Promise<string> {
    try {
      return await this.call("version", (c) => c.libVersion());
    } catch {
      return "unknown";
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = null;
    this.eventsLive = false;
    await client?.close().catch(() => {});
  }
}
