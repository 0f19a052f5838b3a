// The agent's only door to the hypervisor: @unraid/libvirt, opened lazily and reopened after the
// libvirt connection drops. Domains become VmInfo; libvirt failures become AgentFailure with a
// protocol error code (vm_not_found, not_allowed, libvirt_error).
import { readFileSync } from "node:fs";
import { hostname as osHostname } from "node:os";
import { Hypervisor, type Domain } from "@unraid/libvirt";
import { DomainName, LIBVIRT_STATES, mapLibvirtState, type StateResult, type VmInfo } from "../protocol/wire.ts";
import type { Logger } from "./logger.ts";

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

const NOT_FOUND = /domain not found|no domain with matching/i;
const NOT_ALLOWED = /operation is not valid|already running|not running|is not active|domain is already active/i;
// Messages that mean the connection itself is gone: drop it so the next call reopens.
const CONNECTION_LOST =
  /end of file|cannot recv|cannot write|connection.*(closed|reset)|not connected|broken pipe|no connection driver|failed to connect/i;

export type DomainCounters = {
  uuid: string;
  name: string;
  vcpus: number;
  cpuTimeNs: number;
  memoryKiB: number;
  maxMemKiB: number;
  running: boolean;
};

export class Libvirt {
  private readonly uri: string;
  private readonly log: Logger;
  private hv: Hypervisor | null = null;
  private opening: Promise<Hypervisor> | null = null;

  constructor(uri: string, log: Logger) {
    this.uri = uri;
    this.log = log;
  }

  private connection(): Promise<Hypervisor> {
    if (this.hv) return Promise.resolve(this.hv);
    this.opening ??= (async () => {
      const hv = new Hypervisor({ uri: this.uri });
      try {
        await hv.connectOpen();
      } catch (err) {
        throw new AgentFailure("libvirt_error", `cannot connect to libvirt at ${this.uri}: ${(err as Error).message}`);
      } finally {
        this.opening = null;
      }
      this.log.info({ uri: this.uri }, "libvirt connected");
      this.hv = hv;
      return hv;
    })();
    return this.opening;
  }

  /** Runs one libvirt call, translating its errors (and dropping a dead connection). */
  private async call<T>(what: string, fn: (hv: Hypervisor) => Promise<T>): Promise<T> {
    const hv = await this.connection();
    try {
      return await fn(hv);
    } catch (err) {
      if (err instanceof AgentFailure) throw err;
      const message = (err as Error).message ?? String(err);
      if (NOT_FOUND.test(message)) throw new AgentFailure("vm_not_found", `${what}: no such domain on this host`);
      if (NOT_ALLOWED.test(message)) throw new AgentFailure("not_allowed", `${what}: ${message}`);
      if (CONNECTION_LOST.test(message) && this.hv === hv) {
        this.log.warn({ err: message }, "libvirt connection lost; reopening on next call");
        this.hv = null;
        hv.connectClose().catch(() => {});
      }
      throw new AgentFailure("libvirt_error", `${what}: ${message}`);
    }
  }

  /** Every domain whatever its name (its log path is confined where the log is opened, log-path.ts);
   *  only a name libvirt itself refuses (a `/`, NUL), which no frame may carry, is left out. */
  private async describe(hv: Hypervisor, dom: Domain): Promise<VmInfo | null> {
    const [name, uuid, info] = await Promise.all([
      hv.domainGetName(dom),
      hv.domainGetUUIDString(dom),
      hv.domainGetInfo(dom),
    ]);
    if (!DomainName.safeParse(name).success) {
      this.log.warn({ uuid, name: name.slice(0, 80) }, "domain name holds '/' or NUL, which libvirt refuses; skipped");
      return null;
    }
    const libvirtState = LIBVIRT_STATES[info.state] ?? "nostate";
    return {
      uuid: uuid.toLowerCase(),
      name,
      libvirtState,
      state: mapLibvirtState(libvirtState),
      vcpus: info.nrVirtCpu,
      memoryMiB: Math.round(info.maxMem / 1024), // libvirt reports KiB
    };
  }

  async listDomains(): Promise<VmInfo[]> {
    return this.call("list domains", async (hv) => {
      const doms = await hv.connectListAllDomains();
      const vms = await Promise.all(doms.map((d) => this.describe(hv, d).catch(() => null))); // vanished mid-list
      return vms
        .filter((v): v is VmInfo => v !== null)
        .sort((a, b) => a.name.localeCompare(b.name) || (a.uuid < b.uuid ? -1 : 1));
    });
  }

  /** The running domains' counters for the metrics sampler (cpuTime in ns, memory in KiB). */
  async activeCounters(): Promise<DomainCounters[]> {
    return this.call("active domain counters", async (hv) => {
      const doms = await hv.connectListAllDomains(1); // VIR_CONNECT_LIST_DOMAINS_ACTIVE
      const rows = await Promise.all(
        doms
          .map(async (d) => {
            const [name, uuid, info] = await Promise.all([
              hv.domainGetName(d),
              hv.domainGetUUIDString(d),
              hv.domainGetInfo(d),
            ]);
            return {
              uuid: uuid.toLowerCase(),
              name,
              vcpus: info.nrVirtCpu,
              cpuTimeNs: info.cpuTime,
              memoryKiB: info.memory,
              maxMemKiB: info.maxMem,
              running: info.state === 1 || info.state === 2,
            };
          })
          .map((p) => p.catch(() => null)), // vanished mid-list
      );
      return rows.filter((r): r is DomainCounters => r !== null);
    });
  }

  async domain(uuid: string): Promise<VmInfo> {
    return this.call(`domain ${uuid}`, async (hv) => {
      const info = await this.describe(hv, await hv.domainLookupByUUIDString(uuid));
      if (!info)
        throw new AgentFailure("invalid_name", `domain ${uuid} has a name libvirt itself refuses ('/' or NUL)`);
      return info;
    });
  }

  async state(uuid: string): Promise<StateResult> {
    const { state, libvirtState } = await this.domain(uuid);
    return { state, libvirtState };
  }

  /** Start a shut-off domain; a paused one is resumed, a pm-suspended one woken (start is allowed from PAUSED too). */
  async start(uuid: string): Promise<void> {
    const { libvirtState } = await this.domain(uuid);
    await this.call(`start ${uuid}`, async (hv) => {
      const dom = await hv.domainLookupByUUIDString(uuid);
      if (libvirtState === "paused") return hv.domainResume(dom);
      if (libvirtState === "pmsuspended") return hv.domainPMWakeup(dom);
      if (libvirtState !== "shutoff")
        throw new AgentFailure("not_allowed", `start ${uuid}: the domain is ${libvirtState}`);
      return hv.domainCreate(dom);
    });
  }

  /** Asks the guest to shut down (ACPI); returns at once, the guest may take its time or ignore it. */
  async shutdown(uuid: string): Promise<void> {
    await this.call(`shutdown ${uuid}`, async (hv) => hv.domainShutdown(await hv.domainLookupByUUIDString(uuid)));
  }

  async destroy(uuid: string): Promise<void> {
    await this.call(`destroy ${uuid}`, async (hv) => hv.domainDestroy(await hv.domainLookupByUUIDString(uuid)));
  }

  async hostname(): Promise<string> {
    try {
      return await this.call("hostname", (hv) => hv.connectGetHostname());
    } catch {
      return osHostname();
    }
  }

  /** libvirt's version from the loaded libvirt.so.0.MAJOR*1000+MINOR.MICRO (the binding has no call for it). */
  async version(): Promise<string> {
    await this.connection().catch(() => {});
    try {
      const m = /libvirt\.so\.0\.(\d+)\.(\d+)/.exec(readFileSync("/proc/self/maps", "utf8"));
      if (m) return `${Math.floor(Number(m[1]) / 1000)}.${Number(m[1]) % 1000}.${m[2]}`;
    } catch {
      // not Linux: fall through
    }
    return "unknown";
  }

  async close(): Promise<void> {
    const hv = this.hv;
    this.hv = null;
    await hv?.connectClose().catch(() => {});
  }
}
