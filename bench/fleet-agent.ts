// A NAMED FAKE host agent for the fleet bench and the protocol fault tests: the real agent's link
// (agent/link/connection.ts: backoff with jitter, heartbeat) over a real `ws` WebSocket, but an in-memory
// host instead of libvirt, so a thousand of them fit in one process. It speaks protocol/wire.ts and
// answers commands as the real agent does (ack then result for power actions, log.chunk + result for
// logs, `expired` past a deadline); tests can hold, drop or rewrite answers to inject faults.
import { pino } from "pino";
import WebSocket from "ws";
import { AgentLink, type LinkTimings } from "../agent/link/connection.ts";
import {
  AGENT_CONNECT_PATH,
  AGENT_ENROLL_PATH,
  EnrollResponse,
  INVENTORY_CHUNK,
  PROTOCOL_VERSION,
  mapLibvirtState,
  type AgentMessage,
  type Command,
  type LibvirtState,
  type ServerMessage,
  type VmInfo,
} from "../protocol/wire.ts";

export type SimVm = { uuid: string; name: string; libvirtState: LibvirtState };

/** What the fake does with a command: answer as the real agent would, or leave it to the test. */
export type CommandPolicy = (cmd: Command, agent: SimAgent) => "answer" | "hold";

export const wsUrl = (httpUrl: string) => httpUrl.replace(/^http/, "ws") + AGENT_CONNECT_PATH;

/** Trades a join token for a node credential, as the real agent does on its first run. */
export async function enroll(
  baseUrl: string,
  joinToken: string,
  hostname = "sim-host",
): Promise<{ nodeId: string; credential: string }> {
  const res = await fetch(baseUrl + AGENT_ENROLL_PATH, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ joinToken, hostname }),
  });
  if (!res.ok) throw new Error(`enroll: HTTP ${res.status} ${await res.text()}`);
  return EnrollResponse.parse(await res.json());
}

/** `count` domains with fresh UUIDs and names `<prefix>-<n>`, in a mix of states. */
export function simVms(count: number, prefix = "vm"): SimVm[] {
  const states: LibvirtState[] = ["running", "shutoff", "running", "paused"];
  return Array.from({ length: count }, (_, i) => ({
    uuid: crypto.randomUUID(),
    name: `${prefix}-${i}`,
    libvirtState: states[i % states.length],
  }));
}

export class SimAgent {
  readonly link: AgentLink;
  readonly vms = new Map<string, SimVm>();
  /** commands received, in order (all of them, answered or held) */
  readonly received: Command[] = [];
  /** the control plane's error frames: what it did not take of what this agent sent */
  readonly refusals: { code: string; message: string }[] = [];
  /** every time the link came up (welcome received), epoch ms */
  readonly connectedAt: number[] = [];
  /** every connection attempt (the link entering "connecting"), epoch ms */
  readonly attemptedAt: number[] = [];
  /** every link lost while online: the close code and reason the control plane gave */
  readonly linkLost: { code: number; reason: string }[] = [];
  policy: CommandPolicy = () => "answer";
  private welcomed: (() => void) | null = null;
  private syncs = 0;

  constructor(url: string, credential: string, vms: SimVm[], timings: Partial<LinkTimings> = {}) {
    for (const v of vms) this.vms.set(v.uuid, { ...v });
    this.link = new AgentLink({
      url: wsUrl(url),
      credential: () => credential,
      timings,
      // Only the link's "link lost" warnings are kept (their close code and reason), nothing printed.
      log: pino(
        { level: "warn" },
        {
          write: (line: string) => {
            const e = JSON.parse(line) as { msg?: string; code?: number; reason?: string };
            if (e.msg === "link lost") this.linkLost.push({ code: e.code ?? 0, reason: e.reason ?? "" });
          },
        },
      ),
      events: {
        onOpen: () => {
          this.send({
            type: "hello",
            id: crypto.randomUUID(),
            payload: {
              agentVersion: "sim-0",
              hostname: "sim-host",
              libvirtVersion: "sim",
              protocolVersion: PROTOCOL_VERSION,
              ...(this.features ? { features: this.features } : {}),
            },
          });
          this.sendInventory();
        },
        onMessage: (msg) => this.onMessage(msg),
        onRefused: () => {},
        onStateChange: (state) => {
          if (state === "connecting") this.attemptedAt.push(Date.now());
        },
      },
    });
  }

  /** What the hello announces (a plain simulated agent announces nothing optional). */
  protected features: string[] | undefined = undefined;

  /** A `metrics.live` lease (sent only to an agent that announced `liveMetrics`). */
  protected onLiveMetrics(_leaseMs: number): void {}

  /** The control plane stored the metrics batch `id` (only ever said to one that sent it). */
  protected onMetricsStored(_id: string): void {}

  /** Starts the link; resolves on the first welcome. */
  start(): Promise<void> {
    const up = new Promise<void>((r) => (this.welcomed = r));
    this.link.start();
    return up;
  }

  stop(): Promise<void> {
    return this.link.stop();
  }

  send(msg: AgentMessage): boolean {
    return this.link.send(msg);
  }

  info(v: SimVm): VmInfo {
    return {
      uuid: v.uuid,
      name: v.name,
      state: mapLibvirtState(v.libvirtState),
      libvirtState: v.libvirtState,
      vcpus: 1,
      memoryMiB: 512,
    };
  }

  /** The full inventory in INVENTORY_CHUNK frames (seq from 0, done on the last). */
  sendInventory(): void {
    const all = [...this.vms.values()].map((v) => this.info(v));
    const syncId = `s${++this.syncs}`;
    const chunks = Math.max(1, Math.ceil(all.length / INVENTORY_CHUNK));
    for (let seq = 0; seq < chunks; seq++) {
      const vms = all.slice(seq * INVENTORY_CHUNK, (seq + 1) * INVENTORY_CHUNK);
      this.send({
        type: "inventory",
        id: crypto.randomUUID(),
        payload: { syncId, seq, done: seq === chunks - 1, vms },
      });
    }
  }

  private onMessage(msg: ServerMessage): void {
    if (msg.type === "welcome") {
      this.connectedAt.push(Date.now());
      this.welcomed?.();
      this.welcomed = null;
      return;
    }
    if (msg.type === "resync") return this.sendInventory();
    if (msg.type === "vm.logs.follow" || msg.type === "vm.logs.unfollow") return;
    if (msg.type === "console.open" || msg.type === "console.ack" || msg.type === "console.close") return;
    if (msg.type === "error") return void this.refusals.push(msg.payload);
    if (msg.type === "agent.update") return; // it announces no `update`: never sent one
    if (msg.type === "metrics.live") return this.onLiveMetrics(msg.payload.leaseMs); // asked only if announced
    if (msg.type === "metrics.stored") return this.onMetricsStored(msg.id); // answers a `batch` only
    this.received.push(msg);
    if (this.policy(msg, this) === "answer") this.answer(msg);
  }

  /** Answers a command the way the real agent does (agent/host/commands.ts), on this fake host. */
  answer(cmd: Command): void {
    const { id } = cmd;
    if (this.link.serverNow() > cmd.payload.deadline) {
      this.send({
        type: "error",
        id,
        payload: { code: "expired", message: "deadline passed before the command was read" },
      });
      return;
    }
    const vm = this.vms.get(cmd.payload.vmId);
    if (!vm) {
      this.send({ type: "error", id, payload: { code: "vm_not_found", message: `no domain ${cmd.payload.name}` } });
      return;
    }
    switch (cmd.type) {
      case "vm.state":
        this.send({
          type: "result",
          id,
          payload: { state: mapLibvirtState(vm.libvirtState), libvirtState: vm.libvirtState },
        });
        return;
      case "vm.logs": {
        const lines = Array.from(
          { length: cmd.payload.lines },
          (_, i) => `2026-01-01T00:00:00.000Z sim ${vm.name} line ${i}`,
        );
        const text = lines.join("\n") + "\n";
        this.send({ type: "log.chunk", id, payload: { seq: 0, text } });
        this.send({
          type: "result",
          id,
          payload: {
            logPath: `/var/log/libvirt/qemu/${vm.name}.log`,
            logSizeBytes: text.length,
            linesReturned: lines.length,
            truncated: false,
            lastModified: new Date().toISOString(),
            chunks: 1,
          },
        });
        return;
      }
      case "vm.start":
      case "vm.stop":
      case "vm.forceStop": {
        this.send({ type: "ack", id, payload: {} });
        vm.libvirtState = cmd.type === "vm.start" ? "running" : "shutoff";
        this.send({
          type: "result",
          id,
          payload: { state: mapLibvirtState(vm.libvirtState), libvirtState: vm.libvirtState, timedOut: false },
        });
        return;
      }
    }
  }
}

/** A bare WebSocket with a node credential, for frames the real link would never send. */
export function rawSocket(
  url: string,
  credential: string,
): Promise<{ ws: WebSocket; frames: string[]; closed: Promise<{ code: number; reason: string }> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(url), {
      headers: { authorization: `Bearer ${credential}` },
      perMessageDeflate: false,
    });
    const frames: string[] = [];
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      ws.on("close", (code, reason) => r({ code, reason: reason.toString() })),
    );
    ws.on("message", (d) => frames.push(d.toString()));
    ws.once("open", () => resolve({ ws, frames, closed }));
    ws.once("unexpected-response", (_q, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    ws.once("error", reject);
  });
}
