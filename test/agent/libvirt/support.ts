// Shared pieces of the libvirt client's tests: a recording relay that sits between the client and a
// real daemon and notes every packet's header each way (to check procedure numbers on the wire), and
// a fake daemon (an in-process unix-socket server, named as such) for what a real daemon never does.
import { mkdtempSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PacketSplitter, encodePacket, type Header, type Packet } from "../../../agent/libvirt/packet.ts";
import { PacketStatus, PacketType, REMOTE_PROGRAM } from "../../../agent/libvirt/protocol.ts";
import { XdrWriter } from "../../../agent/libvirt/xdr.ts";

export const SYSTEM_SOCKET = "/var/run/libvirt/libvirt-sock";
export const socketDir = () => mkdtempSync(join(tmpdir(), "qx-libvirt-"));

export type Recorded = Header & { from: "client" | "daemon"; bodyBytes: number };

/** Relays a unix socket to `target`, recording each packet's header in both directions. */
export async function recordingRelay(target: string) {
  const path = join(socketDir(), "relay.sock");
  const packets: Recorded[] = [];
  const sockets: Socket[] = [];
  const note = (from: Recorded["from"]) => {
    const splitter = new PacketSplitter();
    return (chunk: Buffer) => {
      for (const { body, ...h } of splitter.push(chunk)) packets.push({ ...h, from, bodyBytes: body.byteLength });
    };
  };
  const server = createServer((client) => {
    const daemon = connect(target);
    sockets.push(client, daemon);
    client.on("data", note("client"));
    daemon.on("data", note("daemon"));
    client.pipe(daemon).on("error", () => {});
    daemon.pipe(client).on("error", () => {});
    client.on("close", () => daemon.destroy());
    daemon.on("close", () => client.destroy());
    client.on("error", () => {});
    daemon.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    packets,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A reply/message body builder for the fake daemon. */
export const xdr = () => new XdrWriter();

export type FakeConn = {
  socket: Socket;
  /** packets the client sent */
  received: Packet[];
  send(h: Partial<Header>, body?: Uint8Array): void;
  raw(bytes: Uint8Array): void;
  /** answers a call: a REPLY of its procedure and serial */
  reply(call: Header, body?: Uint8Array, status?: number): void;
  /** the next call of this procedure (or any), as the client sent it */
  nextCall(procedure?: number): Promise<Packet>;
};

/**
 * A fake libvirt daemon: NOT libvirt. It answers the opening sequence (AUTH_LIST → none,
 * CONNECT_OPEN, SUPPORTS_FEATURE → `keepalive`) like a daemon, then hands each connection to the
 * test, which sends what a real daemon never would (truncated, oversized, wrong-serial packets...).
 */
export async function fakeDaemon(opts: { keepalive?: boolean; answerPings?: boolean } = {}) {
  const path = join(socketDir(), "fake-daemon.sock");
  const conns: FakeConn[] = [];
  const waiters: ((c: FakeConn) => void)[] = [];
  const untaken: FakeConn[] = [];
  const server: Server = createServer((socket) => {
    socket.on("error", () => {});
    const received: Packet[] = [];
    const callWaiters: { procedure?: number; resolve: (p: Packet) => void }[] = [];
    const conn: FakeConn = {
      socket,
      received,
      send: (h, body) => {
        if (!socket.destroyed)
          socket.write(
            encodePacket(
              {
                program: REMOTE_PROGRAM,
                version: 1,
                procedure: 0,
                type: PacketType.reply,
                serial: 0,
                status: PacketStatus.ok,
                ...h,
              },
              body,
            ),
          );
      },
      reply: (call, body, status = PacketStatus.ok) =>
        conn.send({ procedure: call.procedure, serial: call.serial, type: PacketType.reply, status }, body),
      raw: (bytes) => {
        if (!socket.destroyed) socket.write(bytes);
      },
      nextCall: (procedure) =>
        new Promise((resolve) => {
          const seen = received.find(
            (p) => p.type === PacketType.call && (procedure === undefined || p.procedure === procedure),
          );
          if (seen) {
            received.splice(received.indexOf(seen), 1);
            resolve(seen);
          } else callWaiters.push({ procedure, resolve });
        }),
    };
    let opened = false;
    const splitter = new PacketSplitter();
    socket.on("data", (chunk) => {
      let packets: Packet[];
      try {
        packets = splitter.push(chunk);
      } catch {
        return void socket.destroy();
      }
      for (const p of packets) {
        if (p.program !== REMOTE_PROGRAM) {
          received.push(p);
          // keepalive: a daemon that answers pings sends a PONG
          if (opts.answerPings !== false && p.procedure === 1)
            conn.send({ program: 0x6b656570, procedure: 2, type: PacketType.message });
          continue;
        }
        if (!opened) {
          const reply = (body?: Uint8Array) => conn.send({ procedure: p.procedure, serial: p.serial }, body);
          if (p.procedure === 66)
            reply(
              xdr()
                .array([0], (w, v) => w.int(v))
                .bytes(),
            );
          else if (p.procedure === 1) reply();
          else if (p.procedure === 60) {
            reply(
              xdr()
                .int(opts.keepalive ? 1 : 0)
                .bytes(),
            );
            opened = true;
            conns.push(conn);
            const waiter = waiters.shift();
            if (waiter) waiter(conn);
            else untaken.push(conn);
          }
          continue;
        }
        if (p.procedure === 2 && p.type === PacketType.call) {
          conn.reply(p); // CONNECT_CLOSE
          continue;
        }
        const i = callWaiters.findIndex((w) => w.procedure === undefined || w.procedure === p.procedure);
        if (p.type === PacketType.call && i >= 0) callWaiters.splice(i, 1)[0].resolve(p);
        else received.push(p);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    uri: `test:///fake.xml?socket=${path}`,
    /** the next connection that finished the opening sequence */
    connection: () =>
      new Promise<FakeConn>((r) => {
        const ready = untaken.shift();
        if (ready) r(ready);
        else waiters.push(r);
      }),
    close: () => {
      for (const c of conns) c.socket.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
