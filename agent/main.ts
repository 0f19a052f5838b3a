// The Quantix Edge node agent: enrolls, keeps the outbound link to the control plane, reports the
// host's domains, carries out commands and (with --listen) serves the host-local API.
// Exit status: 0 stopped by a signal, 2 bad configuration, 3 join token or credential refused, 1 other.
import { hostname as osHostname } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import pkg from "../package.json" with { type: "json" };
import type { AgentMessage, ServerMessage } from "../protocol/wire.ts";
import { CLOSE, PROTOCOL_VERSION, WIRE_FEATURES } from "../protocol/wire-constants.ts";
import { ConfigError, EXIT_BAD_CONFIG, USAGE, loadConfig, type AgentConfig } from "./config.ts";
import { backoffDelay } from "./link/connection.ts";
import {
  CREDENTIAL_REFUSED,
  EXIT_REFUSED,
  RefusedError,
  enroll,
  isNewJoinToken,
  readCredential,
  writeCredential,
  type NodeCredential,
} from "./link/credentials.ts";
import { CommandRunner } from "./host/commands.ts";
import { ConsoleStreams } from "./console/console.ts";
import { consoleOpener } from "./console/console-opener.ts";
import { VncRelays } from "./console/vnc.ts";
import { liveXmlFrom } from "./console/vnc-display.ts";
import { serveDebugCounts } from "./debug-counts.ts";
import { HostTokenCheck, ensureHostToken, rotateHostToken } from "./local/host-token.ts";
import { cleartextServerProblem } from "./link/cleartext-server.ts";
import { InventoryReporter } from "./host/inventory.ts";
import { LogFollower } from "./logs/log-follow.ts";
import { Libvirt } from "./host/libvirt.ts";
import { MetricsSampler } from "./host/metrics.ts";
import { startLocalApi, type LocalApi } from "./local/local-api.ts";
import { LocalConsoles } from "./local/local-console.ts";
import { createLogger, type Logger } from "./logger.ts";
import { createLink, type Link } from "./link/transport.ts";
import { SelfUpdater, checkPendingUpdate } from "./link/self-update.ts";

/** Set by the bundle's build (scripts/build-agent.ts); from a checkout, package.json's version. */
declare const QX_BUILD_VERSION: string | undefined;
export const AGENT_VERSION: string = typeof QX_BUILD_VERSION === "string" ? QX_BUILD_VERSION : pkg.version;
/** The installed bundle an update replaces (the unit runs `quantix-agent.mjs`; --check-update runs
 *  from the kept previous file beside it); none when running from a checkout. */
const AGENT_FILE =
  typeof QX_BUILD_VERSION === "string" ? join(dirname(fileURLToPath(import.meta.url)), "quantix-agent.mjs") : null;

function fatal(code: number, message: string): never {
  process.stderr.write(`quantix-agent: ${message}\n`);
  process.exit(code);
}

function parseConfig(): AgentConfig {
  try {
    const config = loadConfig(process.argv.slice(2), process.env);
    if (config === "help") {
      process.stdout.write(USAGE + "\n");
      process.exit(0);
    }
    return config;
  } catch (err) {
    if (err instanceof ConfigError) fatal(EXIT_BAD_CONFIG, `${err.message} (--help for usage)`);
    throw err;
  }
}

class Agent {
  private readonly config: AgentConfig;
  private readonly log: Logger;
  private readonly libvirt: Libvirt;
  private cred: NodeCredential | null;
  private link: Link | null = null;
  private localApi: LocalApi | null = null;
  private localConsoles: LocalConsoles | null = null;
  private readonly inventory: InventoryReporter;
  private readonly runner: CommandRunner;
  private readonly follower: LogFollower;
  private readonly consoles: ConsoleStreams;
  private readonly displays: VncRelays;
  private readonly metrics: MetricsSampler;
  private readonly updater: SelfUpdater;
  private reenrolled = false;
  private stopping = false;
  private hello = { hostname: osHostname(), libvirtVersion: "unknown" };
  /** what the current link's control plane announced in its welcome (none until it did) */
  private peerFeatures: ReadonlySet<string> = new Set();

  constructor(config: AgentConfig, log: Logger, cred: NodeCredential | null) {
    this.config = config;
    this.log = log;
    this.cred = cred;
    this.libvirt = new Libvirt(config.libvirtUri, log);
    const send = (msg: AgentMessage) => this.link?.send(msg) ?? false;
    const peerFeatures = () => this.peerFeatures;
    this.inventory = new InventoryReporter({
      libvirt: this.libvirt,
      send,
      log,
      pollMs: config.pollIntervalMs,
      digestIntervalMs: config.digestIntervalMs,
      peerFeatures,
    });
    const serverNow = () => this.link?.serverNow() ?? Date.now();
    this.metrics = new MetricsSampler({
      libvirt: this.libvirt,
      intervalMs: config.metricsIntervalMs,
      log,
      send,
      peerFeatures,
      serverNow,
      // Samples go in batches while nobody watches (each costs the control plane rows written).
      batchTicks: Math.max(1, Math.round(config.metricsBatchMs / Math.max(1, config.metricsIntervalMs))),
      spoolFile: join(config.stateDir, "metrics-unsent.jsonl"),
      paceBytesPerSecond: config.metricsPace,
    });
    this.updater = new SelfUpdater({
      agentFile: AGENT_FILE,
      stateDir: config.stateDir,
      server: config.server ?? "",
      version: AGENT_VERSION,
      credential: () => this.cred?.credential ?? "",
      log,
      send,
      peerFeatures,
      exit: (code) => void this.stop(code),
      confirmWithinMs: config.updateConfirmMs,
    });
    this.follower = new LogFollower({ logDir: config.logDir, send, log, pollMs: config.followPollMs });
    this.consoles = new ConsoleStreams({
      opener: consoleOpener(config.libvirtUri, log),
      send,
      sendBytes: (data) => this.link?.sendBytes(data) ?? false,
      isRunning: async (uuid) => (await this.libvirt.state(uuid)).libvirtState !== "shutoff",
      log,
    });
    this.displays = new VncRelays({
      liveXml: liveXmlFrom(config.libvirtUri),
      send,
      sendBytes: (data) => this.link?.sendBytes(data) ?? false,
      isRunning: async (uuid) => (await this.libvirt.state(uuid)).libvirtState !== "shutoff",
      log,
    });
    this.runner = new CommandRunner({
      libvirt: this.libvirt,
      logDir: config.logDir,
      send,
      log,
      serverNow: () => this.link?.serverNow() ?? Date.now(),
      stopPollMs: config.stopPollMs,
      progressMs: config.progressIntervalMs,
      operationCapMs: config.operationCapMs,
      peerFeatures,
      onPowerDone: () => void this.inventory.pollNow(),
      follower: this.follower,
    });
  }

  /** Sizes of the agent's in-memory collections (the soak bench's debug counts). */
  debugCounts(): Record<string, number> {
    return {
      follows: this.follower.count,
      powerQueues: this.runner.power.queuedVms,
      inventoryReported: this.inventory.reportedCount,
      ...this.metrics.counts(),
      ...this.consoles.debugCounts(),
      ...this.displays.debugCounts(),
      ...(this.localConsoles?.debugCounts() ?? {}),
    };
  }

  async start() {
    const { config } = this;
    if (config.server && (!this.cred || this.cred.server !== config.server) && !config.token) {
      fatal(
        EXIT_BAD_CONFIG,
        `no node credential in ${config.stateDir} for ${config.server}: give the node's join token with --token (or QX_TOKEN)`,
      );
    }
    if (config.server && config.insecureHttp && cleartextServerProblem(config.server)) {
      this.log.warn(
        { server: config.server },
        "--insecure-http: the join token, the node credential and all traffic travel in clear text",
      );
    }
    // The local API first: it needs no enrollment, and serves the host while the control plane is out of reach.
    if (config.listen) {
      const check = this.hostTokenCheck();
      this.localConsoles = new LocalConsoles(
        consoleOpener(config.libvirtUri, this.log),
        async (uuid) => (await this.libvirt.state(uuid)).libvirtState !== "shutoff",
        this.log,
        liveXmlFrom(config.libvirtUri),
      );
      this.localApi = await startLocalApi({
        ...config.listen,
        acceptsToken: (bearer) => check.accepts(bearer),
        libvirt: this.libvirt,
        metrics: this.metrics,
        logDir: config.logDir,
        webDir: config.webDir,
        log: this.log,
        consoles: this.localConsoles,
      }).catch((err: Error) =>
        fatal(EXIT_BAD_CONFIG, `--listen ${config.listen!.host}:${config.listen!.port}: ${err.message}`),
      );
    }
    this.metrics.start();
    // libvirt's lifecycle events: a state change reaches the record at once, not at the next poll.
    const look = () => void this.inventory.pollNow();
    if (config.events === "auto") this.libvirt.watchLifecycle({ onLifecycle: look, onStart: look });
    if (!config.server) return;
    this.updater.start();
    if (!this.cred || this.cred.server !== config.server) await this.enroll(config.token!);
    if (this.stopping) return;
    this.hello = { hostname: await this.libvirt.hostname(), libvirtVersion: await this.libvirt.version() };
    this.connect();
  }

  /** The host token file (made on the first --listen run); its path is logged, never its content. */
  private hostTokenCheck(): HostTokenCheck {
    let file;
    try {
      file = ensureHostToken(this.config.stateDir);
    } catch (err) {
      fatal(
        EXIT_BAD_CONFIG,
        `--listen: cannot keep the host token in ${this.config.stateDir}: ${(err as Error).message}`,
      );
    }
    if (file.modeFixed)
      this.log.warn(
        { hostTokenFile: file.path },
        "the host token file was readable by others: its mode is 0600 again; rotate it with --rotate-host-token",
      );
    this.log.info(
      { hostTokenFile: file.path, created: file.created },
      "host view: sign in with the token in this file",
    );
    return new HostTokenCheck(file.path, (message) => this.log.warn(message));
  }

  /** Trade a join token for the node credential; retries while the server is unreachable. */
  private async enroll(joinToken: string) {
    const server = this.config.server!;
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        const cred = await enroll(server, joinToken, osHostname());
        writeCredential(this.config.stateDir, cred);
        this.cred = cred;
        this.log.info({ nodeId: cred.nodeId, stateDir: this.config.stateDir }, "enrolled; node credential kept");
        return;
      } catch (err) {
        if (err instanceof RefusedError) return this.refused(err.message);
        const delay = backoffDelay(attempt, this.config, Math.random);
        this.log.warn({ err: (err as Error).message, retryInMs: delay }, "enrollment failed; retrying");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private connect() {
    const { config } = this;
    this.link = createLink({
      server: config.server!,
      transport: config.transport,
      pollWaitMs: config.pollWaitMs,
      websocketRetryMs: config.websocketRetryMs,
      credential: () => this.cred!.credential,
      timings: config,
      log: this.log,
      events: {
        onOpen: () => {
          this.peerFeatures = new Set(); // a control plane says again what it understands, in this link's welcome
          this.link!.send({
            type: "hello",
            id: "hello",
            payload: {
              agentVersion: AGENT_VERSION,
              protocolVersion: PROTOCOL_VERSION,
              ...this.hello,
              features: [...WIRE_FEATURES],
            },
          });
          void this.inventory.fullSync();
          this.inventory.startPolling();
        },
        onMessage: (msg) => this.onMessage(msg),
        onBytes: (data) => {
          this.consoles.onBytes(data);
          this.displays.onBytes(data);
        },
        onRefused: (detail) => void this.onCredentialRefused(detail),
        onBackoff: (delayMs, attempt) => this.log.info({ delayMs, attempt }, "reconnecting after backoff"),
        onStateChange: (state) => {
          if (state === "online") return;
          this.inventory.stopPolling();
          this.follower.stopAll(); // follows live on one link: the control plane asks again after a reconnect
          this.consoles.closeAll(); // so do consoles
          this.displays.closeAll();
          this.metrics.endLive(); // and live metrics: the control plane asks again while someone watches
          this.metrics.linkLost(); // batches not acknowledged on it go again
        },
      },
    });
    this.link.start();
  }

  private onMessage(msg: ServerMessage) {
    switch (msg.type) {
      case "welcome":
        this.peerFeatures = new Set(msg.payload.features ?? []);
        this.log.info(
          { nodeId: msg.payload.nodeId, clockOffsetMs: this.link?.clockOffsetMs, features: msg.payload.features ?? [] },
          "welcomed by the control plane",
        );
        this.updater.onWelcome();
        return;
      case "agent.update":
        void this.updater.apply(msg);
        return;
      case "resync":
        void this.inventory.resync(msg.id, msg.payload);
        return;
      case "console.open":
      case "console.ack":
      case "console.close":
        if (msg.type === "console.open" ? msg.payload.display !== undefined : this.displays.owns(msg.id))
          this.displays.handle(msg);
        else this.consoles.handle(msg);
        return;
      case "metrics.live":
        this.metrics.live(msg.payload.leaseMs);
        return;
      case "metrics.stored":
        this.metrics.stored(msg.id);
        return;
      case "vm.logs.unfollow":
        this.follower.stop(msg.id); // an unknown id: already stopped (it crossed a drop), nothing to say
        return;
      case "error":
        this.log.error(
          { code: msg.payload.code, frame: msg.id },
          `control plane refused part of what this agent sent: ${msg.payload.message}`,
        );
        return;
      default:
        void this.runner.handle(msg);
    }
  }

  /** A refused credential is never retried; one re-enrollment when a different join token was given. */
  private async onCredentialRefused(detail: string) {
    if (this.stopping) return;
    if (!this.reenrolled && isNewJoinToken(this.cred, this.config.token)) {
      this.reenrolled = true;
      this.log.warn({ detail }, "node credential refused; enrolling again with the join token given");
      await this.enroll(this.config.token);
      if (!this.stopping) this.connect();
      return;
    }
    this.refused(`${CREDENTIAL_REFUSED} (${detail})`);
  }

  private refused(message: string) {
    this.log.error(message);
    process.stderr.write(`quantix-agent: ${message}\n`);
    void this.stop(EXIT_REFUSED);
  }

  /** Stop reconnecting, close the link cleanly, close the local API, exit under a hard deadline. */
  async stop(code: number) {
    if (this.stopping) return;
    this.stopping = true;
    setTimeout(() => process.exit(code), this.config.shutdownDeadlineMs).unref();
    this.inventory.stopPolling();
    this.follower.stopAll();
    this.consoles.closeAll();
    this.displays.closeAll();
    this.metrics.stop();
    this.metrics.flush(); // the samples of the last batch, while the link is still up
    await Promise.allSettled([this.link?.stop(CLOSE.goingAway), this.localApi?.close()]);
    await this.libvirt.close();
    this.log.info({ code }, "agent stopped");
    this.log.flush?.();
    process.exit(code);
  }
}

/** `--enroll`: the installer's step. One trade of the join token for the credential, then exit; a
 *  credential already won with this same token is kept (running the installer again). */
async function enrollOnce(config: AgentConfig): Promise<never> {
  const server = config.server!;
  const token = config.token!;
  let kept: NodeCredential | null = null;
  try {
    kept = readCredential(config.stateDir);
  } catch {
    // unreadable: enroll afresh
  }
  if (kept?.server === server && !isNewJoinToken(kept, token)) {
    process.stdout.write(`quantix-agent: already enrolled as node ${kept.nodeId} with this join token\n`);
    process.exit(0);
  }
  try {
    const cred = await enroll(server, token, osHostname());
    writeCredential(config.stateDir, cred);
    process.stdout.write(`quantix-agent: enrolled as node ${cred.nodeId}; credential kept in ${config.stateDir}\n`);
    process.exit(0);
  } catch (err) {
    if (err instanceof RefusedError) fatal(EXIT_REFUSED, err.message);
    fatal(1, `cannot enroll now: ${(err as Error).message}`);
  }
}

const config = parseConfig();
if (config.rotateHostToken) {
  // A one-shot command: the running agent reads the file again at its next request, no restart.
  try {
    const path = rotateHostToken(config.stateDir);
    process.stdout.write(
      `quantix-agent: new host token written to ${path} (mode 0600); the old one is refused from now on\n`,
    );
    process.exit(0);
  } catch (err) {
    fatal(1, `--rotate-host-token: cannot write ${config.stateDir}: ${(err as Error).message}`);
  }
}
if (config.enrollOnly) await enrollOnce(config);
if (config.checkUpdate) {
  // Never fails the start it precedes: whatever happens, the unit goes on to start the agent.
  try {
    process.stdout.write(
      `quantix-agent: ${AGENT_FILE ? checkPendingUpdate(AGENT_FILE, config.stateDir) : "not an installed bundle"}\n`,
    );
  } catch (err) {
    process.stderr.write(`quantix-agent: --check-update: ${(err as Error).message}\n`);
  }
  process.exit(0);
}
const log = createLogger(config.logLevel);
let cred: NodeCredential | null;
try {
  cred = readCredential(config.stateDir);
} catch (err) {
  fatal(EXIT_BAD_CONFIG, `cannot read ${config.stateDir}/node.json: ${(err as Error).message}`);
}
const agent = new Agent(config, log, cred);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    log.info({ signal: sig }, "stopping");
    void agent.stop(0);
  });
}
process.on("uncaughtException", (err) => {
  log.fatal({ err: err.stack }, "uncaught exception");
  void agent.stop(1);
});
process.on("unhandledRejection", (err) => {
  log.fatal({ err: (err as Error)?.stack ?? String(err) }, "unhandled rejection");
  void agent.stop(1);
});
serveDebugCounts(() => agent.debugCounts());
await agent.start();
