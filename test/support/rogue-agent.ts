// A rogue agent: a valid node credential on a real WebSocket, flooding its node's session with the
// costliest frames the protocol accepts (vm.changed of 500 VMs flipping RUNNING <-> STOPPED) as fast
// as the frame limit allows, reconnecting whenever it is closed. For the isolation test and bench.
import { randomUUID } from "node:crypto";
import WebSocket from "ws";
import { AGENT_CONNECT_PATH, AGENT_ENROLL_PATH, INVENTORY_CHUNK, PROTOCOL_VERSION } from "../../protocol/wire.ts";
import type { ControlPlane } from "./control-plane.ts";

export type RogueOutcome = {
  framesSent: number;
  links: number;
  /** close codes and reasons the control plane gave, in order */
  closes: { code: number; reason: string }[];
  /** connects refused (e.g. 429 from the connect limit) */
  refusedConnects: number;
};

const vmOf = (id: string, i: number, running: boolean) => ({
  uuid: id,
  name: `rogue-${i}`,
  state: running ? "RUNNING" : "STOPPED",
  libvirtState: running ? "running" : "shutoff",
  vcpus: 2,
  memoryMiB: 2048,
});

export class RogueAgent {
  readonly uuids = Array.from({ length: INVENTORY_CHUNK }, () => randomUUID());
  private readonly cp: ControlPlane;
  readonly credential: string;
  readonly nodeId: string;

  private constructor(cp: ControlPlane, nodeId: string, credential: string) {
    this.cp = cp;
    this.nodeId = nodeId;
    this.credential = credential;
  }

  static async enroll(cp: ControlPlane, name: string): Promise<RogueAgent> {
    const created = await cp.api("/api/nodes", { method: "POST", json: { name } });
    const { node, joinToken } = (await created.json()) as { node: { id: string }; joinToken: string };
    const res = await fetch(`${cp.url}${AGENT_ENROLL_PATH}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ joinToken, hostname: "rogue.test" }),
    });
    const { credential } = (await res.json()) as { credential: string };
    return new RogueAgent(cp, node.id, credential);
  }

  private open(): Promise<WebSocket | null> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`${this.cp.url.replace(/^http/, "ws")}${AGENT_CONNECT_PATH}`, {
        headers: { authorization: `Bearer ${this.credential}` },
      });
      ws.once("unexpected-response", () => resolve(null));
      ws.once("error", () => resolve(null));
      ws.once("message", () => resolve(ws)); // the welcome
    });
  }

  /** Floods for `ms` at `framesPerSecond` (kept under the frame limit, so only the cost limits act). */
  async flood(ms: number, framesPerSecond: number): Promise<RogueOutcome> {
    const out: RogueOutcome = { framesSent: 0, links: 0, closes: [], refusedConnects: 0 };
    const until = Date.now() + ms;
    let flip = false;
    while (Date.now() < until) {
      const ws = await this.open();
      if (!ws) {
        out.refusedConnects++;
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      out.links++;
      const closed = new Promise<void>((r) =>
        ws.once("close", (code, reason) => {
          out.closes.push({ code, reason: reason.toString() });
          r();
        }),
      );
      const send = (frame: unknown) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(frame));
      send({
        type: "hello",
        id: "h",
        payload: {
          agentVersion: "rogue",
          hostname: "rogue.test",
          libvirtVersion: "9.0.0",
          protocolVersion: PROTOCOL_VERSION,
        },
      });
      if (out.links === 1) {
        const vms = this.uuids.map((id, i) => vmOf(id, i, true));
        send({ type: "inventory", id: "inv", payload: { syncId: "s", seq: 0, done: true, vms } });
      }
      let ended = false;
      void closed.then(() => (ended = true));
      const every = 1000 / framesPerSecond;
      let next = Date.now();
      while (!ended && Date.now() < until) {
        flip = !flip;
        const vms = this.uuids.map((id, i) => vmOf(id, i, flip));
        send({ type: "vm.changed", id: `f${out.framesSent}`, payload: { vms, removed: [] } });
        out.framesSent++;
        next += every;
        await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
      }
      if (!ended) ws.close(1000, "flood over");
      await closed;
    }
    return out;
  }
}
