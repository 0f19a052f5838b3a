// Graphical consoles (VNC) through the control plane: a ticket of type vnc opens the same socket
// route; the node's Durable Object gives each socket its own agent relay (console.open with display),
// passes RFB bytes both ways unchanged, forwards the browser's acks as the agent's credit, and ends
// with the serial console's endings. TestAgent plays the agent.
import { SELF } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { decodeLinkFrame, encodeLinkOutput } from "../../protocol/console.ts";
import {
  agentsClosedAfterEach,
  api,
  BASE,
  eventually,
  expectError,
  json,
  TestAgent,
  vmInfo,
  type Frame,
} from "./support.ts";

const agents = agentsClosedAfterEach();
const sockets: Viewer[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
});

/** A browser's graphical console socket: text messages parsed, RFB bytes kept as they came. */
class Viewer {
  readonly ws: WebSocket;
  readonly messages: any[] = [];
  readonly rfb: Uint8Array[] = [];
  closed = false;

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e) => {
      if (typeof e.data === "string") this.messages.push(JSON.parse(e.data));
      else this.rfb.push(new Uint8Array(e.data as ArrayBuffer));
    });
    ws.addEventListener("close", () => (this.closed = true));
  }

  static async open(vmId: string, mode: "rw" | "ro", token?: string): Promise<Viewer> {
    const { ticket } = await json<{ ticket: string }>(
      await api(`/api/vms/${vmId}/console`, { json: { type: "vnc", mode }, token }),
      201,
    );
    const res = await SELF.fetch(`${BASE}/api/vms/${vmId}/console/ws`, { headers: { upgrade: "websocket" } });
    expect(res.status).toBe(101);
    res.webSocket!.accept();
    const viewer = new Viewer(res.webSocket!);
    sockets.push(viewer);
    viewer.ws.send(JSON.stringify({ type: "hello", ticket }));
    return viewer;
  }

  async message(type: string): Promise<any> {
    let found: any;
    await eventually(async () => expect((found = this.messages.find((m) => m.type === type))).toBeDefined());
    return found;
  }

  get bytes(): string {
    return this.rfb.map((b) => new TextDecoder().decode(b)).join("");
  }

  close(): void {
    try {
      this.ws.close(1000, "left");
    } catch {
      // closed already
    }
  }
}

async function nodeWithVm(features = ["console", "vnc"]) {
  const s = await TestAgent.forNewNode();
  s.agent.hello("host.test", features);
  agents.push(s.agent);
  const vm = vmInfo(`vnc ${s.name} ✓`);
  s.agent.inventory([vm]);
  await eventually(async () => expect((await api(`/api/vms/${vm.uuid}`)).status).toBe(200));
  return { ...s, vm };
}

async function agentOpens(agent: TestAgent): Promise<Frame> {
  const open = await agent.next("console.open");
  agent.send({ type: "console.opened", id: open.id, payload: {} });
  return open;
}

const text = (s: string) => new TextEncoder().encode(s);

describe("graphical consoles (VNC)", { timeout: 30_000 }, () => {
  it("each viewer gets its own agent relay; RFB bytes pass both ways unchanged and without offsets; acks are the agent's credit", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await Viewer.open(vm.uuid, "rw");
    expect(await a.message("ready")).toEqual({ type: "ready", display: "vnc", mode: "rw", writer: true, offset: 0 });
    const openA = await agentOpens(agent);
    expect(openA.payload).toMatchObject({ vmId: vm.uuid, display: { type: "vnc", mode: "rw" }, force: false });
    const b = await Viewer.open(vm.uuid, "ro");
    expect(await b.message("ready")).toMatchObject({ display: "vnc", mode: "ro", writer: false });
    const openB = await agentOpens(agent);
    expect(openB.payload.display).toEqual({ type: "vnc", mode: "ro" });
    expect(openB.payload.channel).not.toBe(openA.payload.channel);

    agent.ws.send(encodeLinkOutput(openA.payload.channel, 0, text("RFB 003.008\n")));
    await eventually(async () => expect(a.bytes).toBe("RFB 003.008\n"));
    expect(b.bytes).toBe(""); // another viewer's RFB session is its own
    a.ws.send(text("RFB 003.008\n"));
    await eventually(async () => expect(agent.binary).toHaveLength(1));
    const input = decodeLinkFrame(agent.binary[0])!;
    expect(input).toMatchObject({ kind: "input", channel: openA.payload.channel });
    expect(new TextDecoder().decode(input.bytes)).toBe("RFB 003.008\n");

    // The browser's ack (bytes received) goes to the agent as that relay's credit; more is clamped.
    a.ws.send(JSON.stringify({ type: "ack", offset: 12 }));
    const ack = await agent.next("console.ack");
    expect(ack).toMatchObject({ id: openA.id, payload: { offset: 12 } });
    a.ws.send(JSON.stringify({ type: "ack", offset: 1_000_000 }));
    a.ws.send(JSON.stringify({ type: "ack", offset: 5 })); // an old ack is ignored
    await new Promise((r) => setTimeout(r, 200));
    expect(agent.frames.filter((f) => f.type === "console.ack" && f.id === openA.id).length).toBe(1);

    const events = (await json(await api(`/api/vms/${vm.uuid}/events`))).events;
    const opened = events.filter((e: any) => e.action === "console.opened");
    expect(opened).toHaveLength(2);
    // Which console it was has a field of its own; reason stays for why something happened.
    for (const e of opened) expect(e).toMatchObject({ type: "vnc", reason: null });

    // Leaving closes that viewer's relay on the agent.
    a.close();
    const close = await agent.next("console.close");
    expect(close.id).toBe(openA.id);
  });

  it("the agent's endings reach the browser: no_display, password_required", async () => {
    const { agent, vm } = await nodeWithVm();
    const a = await Viewer.open(vm.uuid, "rw");
    const open = await agent.next("console.open");
    agent.send({
      type: "console.closed",
      id: open.id,
      payload: { reason: "no_display", message: "this VM has no VNC display" },
    });
    expect(await a.message("closed")).toMatchObject({ reason: "no_display", message: "this VM has no VNC display" });
    const b = await Viewer.open(vm.uuid, "rw");
    const openB = await agent.next("console.open");
    agent.send({
      type: "console.closed",
      id: openB.id,
      payload: { reason: "password_required", message: "VNC password" },
    });
    expect(await b.message("closed")).toMatchObject({ reason: "password_required" });
  });

  it("the agent going away ends them with host_offline; revoking the token ends them with revoked", async () => {
    const { agent, vm } = await nodeWithVm();
    const tokenRes = await json(
      await api("/api/tokens", { json: { name: "vnc op to revoke", role: "operator" } }),
      201,
    );
    const revoked = await Viewer.open(vm.uuid, "rw", tokenRes.token);
    await agentOpens(agent);
    const other = await Viewer.open(vm.uuid, "ro");
    await agentOpens(agent);
    await json(await api(`/api/tokens/${tokenRes.id}`, { method: "DELETE" }));
    expect(await revoked.message("closed")).toMatchObject({ reason: "revoked" });
    expect(other.closed).toBe(false);
    agent.ws.close(1000, "agent stops");
    expect(await other.message("closed")).toMatchObject({ reason: "host_offline" });
  });

  it("a viewer token gets 403; an agent without the vnc feature gets no relay (unsupported)", async () => {
    const { vm } = await nodeWithVm(["console"]);
    const viewer = await json(await api("/api/tokens", { json: { name: "vnc viewer", role: "viewer" } }), 201);
    await expectError(
      await api(`/api/vms/${vm.uuid}/console`, { json: { type: "vnc", mode: "ro" }, token: viewer.token }),
      403,
      "forbidden",
    );
    await expectError(await api(`/api/vms/${vm.uuid}/console`, { json: { type: "spice", mode: "ro" } }), 400);
    const a = await Viewer.open(vm.uuid, "rw");
    expect(await a.message("closed")).toMatchObject({ reason: "unsupported" });
  });
});
