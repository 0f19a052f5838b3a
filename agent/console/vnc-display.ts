// One viewer's connection to a VM's VNC display on this host, shared by the control plane's relay
// (vnc.ts) and the host view's (local-vnc.ts): the display found in the live XML, a connect timeout,
// the RFB gates (a watcher's input dropped, a display asking for a password refused before the viewer
// sees it) and why it ended. Where the bytes go, and how a slow viewer is held back, is the caller's.
import { connect, type Socket } from "node:net";
import { LibvirtClient } from "../libvirt/index.ts";
import { RfbClientFilter, RfbError, RfbServerGate, securityName, type ClientCounts } from "./rfb.ts";

/** Where a domain's VNC server listens, as its live XML says. */
export type VncTarget = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/** The first VNC display of a domain's live XML, or why there is none to reach. */
export function vncTarget(xml: string): VncTarget | { none: string } {
  const graphics = /<graphics\b[^>]*\btype=['"]vnc['"][^>]*?(?:\/>|>([\s\S]*?)<\/graphics>)/.exec(xml);
  if (!graphics) return { none: "this VM has no VNC display (no <graphics type='vnc'> in its definition)" };
  const head = graphics[0].slice(0, graphics[0].indexOf(">") + 1);
  const attr = (tag: string, name: string) => new RegExp(`\\b${name}=['"]([^'"]*)['"]`).exec(tag)?.[1];
  const listens = [...(graphics[1] ?? "").matchAll(/<listen\b[^>]*>/g)].map((m) => m[0]);
  const socketPath = attr(head, "socket") ?? listens.map((l) => attr(l, "socket")).find(Boolean);
  if (socketPath) return { kind: "unix", path: unescapeXml(socketPath) };
  const port = Number(attr(head, "port") ?? "-1");
  if (!Number.isInteger(port) || port <= 0)
    return { none: "this VM's VNC display has no port yet (is the VM running?)" };
  const listen = attr(head, "listen") ?? listens.map((l) => attr(l, "address")).find(Boolean) ?? "127.0.0.1";
  // A wildcard listen is reached on this host's own loopback.
  const host = listen === "0.0.0.0" ? "127.0.0.1" : listen === "::" ? "::1" : listen;
  return { kind: "tcp", host, port };
}

const unescapeXml = (s: string) =>
  s
    .replaceAll("&apos;", "'")
    .replaceAll("&quot;", '"')
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&amp;", "&");

/** The domain's live XML (a running domain's shows its VNC port). */
export type DomainXmlSource = (uuid: string) => Promise<string>;

export function liveXmlFrom(uri: string): DomainXmlSource {
  return async (uuid) => {
    const client = await LibvirtClient.connect(uri, { connectTimeoutMs: 10_000 });
    try {
      return await client.domainXml(uuid);
    } finally {
      await client.close().catch(() => {});
    }
  };
}

/** Why a display connection ended on its own side (a VM without a display, a refused handshake, the
 *  VNC server gone), in the words both the link's `console.closed` and the host view's `closed` use. */
export type DisplayEnd = { reason: "no_display" | "vm_stopped" | "password_required" | "error"; message?: string };

export type DisplayDeps = {
  liveXml: DomainXmlSource;
  isRunning: (uuid: string) => Promise<boolean>;
  /** how long to wait for the VNC server to accept (default 10 s) */
  connectTimeoutMs?: number;
};

/** What the caller does with what happens on the display's side. None is called after close(). */
export type DisplayViewer = {
  /** the VNC server accepted */
  opened(): void;
  /** server bytes for the viewer (the handshake's security part held back until it is judged) */
  bytes(data: Uint8Array): void;
  ended(end: DisplayEnd): void;
};

/** Starts connecting a viewer to the VM's display; the connection can be closed at once (say, the
 *  viewer left while the live XML was read), after which nothing more is reported. */
export function connectDisplay(
  vmId: string,
  readOnly: boolean,
  deps: DisplayDeps,
  viewer: DisplayViewer,
): DisplayConnection {
  const display = new DisplayConnection(vmId, readOnly, deps, viewer);
  void display.start();
  return display;
}

export class DisplayConnection {
  private readonly client: RfbClientFilter;
  private readonly server = new RfbServerGate();
  private socket: Socket | null = null;
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  private readonly vmId: string;
  private readonly deps: DisplayDeps;
  private readonly viewer: DisplayViewer;

  constructor(vmId: string, readOnly: boolean, deps: DisplayDeps, viewer: DisplayViewer) {
    this.vmId = vmId;
    this.client = new RfbClientFilter(readOnly);
    this.deps = deps;
    this.viewer = viewer;
  }

  /** The viewer's RFB messages passed and dropped, by kind (never their content). */
  get counts(): ClientCounts {
    return this.client.counts;
  }

  get closed(): boolean {
    return this.done;
  }

  /** Looks the display up and connects to it. */
  async start(): Promise<void> {
    let target: VncTarget | { none: string };
    try {
      target = vncTarget(await this.deps.liveXml(this.vmId));
    } catch (err) {
      const running = await this.deps.isRunning(this.vmId).catch(() => false);
      return this.end(
        running ? { reason: "no_display", message: (err as Error).message.slice(0, 500) } : { reason: "vm_stopped" },
      );
    }
    if ("none" in target) {
      const running = await this.deps.isRunning(this.vmId).catch(() => false);
      return this.end(
        running || !/port yet/.test(target.none)
          ? { reason: "no_display", message: target.none }
          : { reason: "vm_stopped" },
      );
    }
    if (this.done) return;
    const socket =
      target.kind === "unix" ? connect({ path: target.path }) : connect({ host: target.host, port: target.port });
    this.socket = socket;
    socket.setNoDelay(true);
    this.timer = setTimeout(
      () => socket.destroy(new Error("the VNC server did not answer in time")),
      this.deps.connectTimeoutMs ?? 10_000,
    );
    socket.once("connect", () => {
      clearTimeout(this.timer);
      if (!this.done) this.viewer.opened();
    });
    socket.on("data", (chunk: Buffer) =>
      this.fromServer(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)),
    );
    socket.on("error", (err) => {
      clearTimeout(this.timer);
      this.end({ reason: "no_display", message: `cannot reach the VM's VNC display: ${err.message}`.slice(0, 500) });
    });
    socket.on("close", () => {
      clearTimeout(this.timer);
      if (this.done) return;
      void this.deps
        .isRunning(this.vmId)
        .catch(() => false)
        .then((running) =>
          this.end(
            running
              ? { reason: "error", message: "the VM's VNC server closed the connection" }
              : { reason: "vm_stopped" },
          ),
        );
    });
  }

  private fromServer(bytes: Uint8Array): void {
    if (this.done) return;
    const pass = this.server.feed(bytes);
    const verdict = this.server.verdict;
    if (verdict?.kind === "password")
      return this.end({
        reason: "password_required",
        message: `this VM's VNC display asks for ${verdict.offered.map(securityName).join(" or ")}; only a display without a password, on the host's loopback, is relayed`,
      });
    if (pass.byteLength) this.viewer.bytes(pass);
  }

  /** The viewer's RFB bytes, through its filter to the VNC server. False when the server is not
   *  reading them: hold the viewer back until drained(). */
  fromViewer(bytes: Uint8Array): boolean {
    if (this.done) return true;
    let pass: Uint8Array;
    try {
      const before = this.client.minor;
      pass = this.client.feed(bytes);
      if (before === null && this.client.minor !== null) {
        const held = this.server.clientVersion(this.client.minor);
        if (held.byteLength) this.viewer.bytes(held);
      }
    } catch (err) {
      const refused = err instanceof RfbError && /password/.test(err.message);
      this.end({ reason: refused ? "password_required" : "error", message: (err as Error).message });
      return true;
    }
    if (!pass.byteLength || !this.socket || this.done) return true;
    return this.socket.write(pass);
  }

  /** Calls `then` once the VNC server has read what it was sent. */
  drained(then: () => void): void {
    if (!this.socket || this.done) return then();
    this.socket.once("drain", then);
  }

  /** Stops reading the VNC server (the viewer is behind). */
  pause(): void {
    this.socket?.pause();
  }

  resume(): void {
    this.socket?.resume();
  }

  /** Ends the connection from the viewer's side: nothing more is reported. */
  close(): void {
    this.done = true;
    clearTimeout(this.timer);
    this.socket?.destroy();
  }

  private end(end: DisplayEnd): void {
    if (this.done) return;
    this.close();
    this.viewer.ended(end);
  }
}
