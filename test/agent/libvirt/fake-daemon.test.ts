// The client against a fake daemon (an in-process socket server, NOT libvirt) for what a real daemon
// never does: truncated, oversized, wrong-serial, wrong-program and random packets (property-based:
// the connection ends cleanly every time, with no crash, no hang and no unhandled rejection), a
// daemon gone silent (keepalive), a call nobody answers, and the stream protocol's corners.
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, LibvirtClient, LibvirtError, Proc } from "../../../agent/libvirt/index.ts";
import { encodePacket } from "../../../agent/libvirt/packet.ts";
import { KEEPALIVE_PROGRAM, MAX_PACKET_BYTES, PacketStatus, PacketType } from "../../../agent/libvirt/protocol.ts";
import { fakeDaemon, xdr, type FakeConn } from "./support.ts";

const UUID = "11111111-0000-4000-8000-000000000001";
const remoteError = (code: number, message: string) =>
  xdr()
    .int(code)
    .int(10)
    .optional(message, (w, m) => w.string(m))
    .int(2)
    .bool(false)
    .bool(false)
    .bool(false)
    .bool(false)
    .int(0)
    .int(0)
    .bool(false)
    .bytes();

let unhandled: unknown[] = [];
const onUnhandled = (err: unknown) => unhandled.push(err);
beforeAll(() => process.on("unhandledRejection", onUnhandled));
afterAll(() => process.off("unhandledRejection", onUnhandled));
afterEach(() => expect(unhandled).toEqual([]));

let fake: Awaited<ReturnType<typeof fakeDaemon>>;
afterEach(async () => fake?.close());

async function open(opts: Parameters<typeof LibvirtClient.connect>[1] = {}, fakeOpts = {}) {
  fake = await fakeDaemon(fakeOpts);
  const client = await LibvirtClient.connect(fake.uri, opts);
  const conn = await fake.connection();
  const closed = new Promise<LibvirtError>((r) => client.onClose(r));
  return { client, conn, closed };
}

/** What the fake daemon sends instead of sense, each the kind of packet named. */
const badPackets = {
  truncated: (c: FakeConn, call: { serial: number; procedure: number }) => {
    const p = encodePacket({ program: 0x20008086, version: 1, type: 1, status: 0, ...call }, new Uint8Array(16));
    c.raw(p.subarray(0, p.length - 5));
  },
  oversized: (c: FakeConn) => {
    const head = Buffer.alloc(28);
    head.writeUInt32BE(MAX_PACKET_BYTES + 4, 0);
    c.raw(head);
  },
  undersized: (c: FakeConn) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(12, 0);
    c.raw(head);
  },
  wrongSerial: (c: FakeConn, call: { serial: number; procedure: number }) =>
    c.send({ procedure: call.procedure, serial: call.serial + 1000 }, xdr().int(1).int(0).bytes()),
  wrongProcedure: (c: FakeConn, call: { serial: number; procedure: number }) =>
    c.send({ procedure: call.procedure + 1, serial: call.serial }, xdr().int(1).int(0).bytes()),
  wrongProgram: (c: FakeConn, call: { serial: number; procedure: number }) =>
    c.send({ program: 0x12345678, ...call }, xdr().int(1).int(0).bytes()),
  wrongVersion: (c: FakeConn, call: { serial: number; procedure: number }) =>
    c.send({ version: 2, ...call }, xdr().int(1).int(0).bytes()),
  shortBody: (c: FakeConn, call: { serial: number; procedure: number }) => c.send(call, xdr().int(1).bytes()),
  longBody: (c: FakeConn, call: { serial: number; procedure: number }) =>
    c.send(call, xdr().int(1).int(0).int(99).bytes()),
  badError: (c: FakeConn, call: { serial: number; procedure: number }) =>
    c.send({ ...call, status: PacketStatus.error }, xdr().int(1).bytes()),
  callFromDaemon: (c: FakeConn) => c.send({ type: PacketType.call, procedure: 1, serial: 5 }),
  continueReply: (c: FakeConn, call: { serial: number; procedure: number }) =>
    c.send({ ...call, status: PacketStatus.continue }),
  unknownKeepalive: (c: FakeConn) => c.send({ program: KEEPALIVE_PROGRAM, procedure: 9, type: PacketType.message }),
} as const;
type Bad = keyof typeof badPackets;
/** These the client itself must refuse (it ends the connection without waiting for the daemon to). */
const refusedByClient: Bad[] = Object.keys(badPackets).filter((k) => k !== "truncated") as Bad[];

describe("a fake daemon sending packets that make no sense", () => {
  it("ends the connection cleanly every time: pending calls fail with a LibvirtError, nothing hangs", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...(Object.keys(badPackets) as Bad[])),
        fc.array(fc.uint8Array({ minLength: 0, maxLength: 64 }), { maxLength: 3 }),
        fc.integer({ min: 1, max: 4 }),
        async (bad, noise, calls) => {
          const { client, conn, closed } = await open();
          const pending = Array.from({ length: calls }, () =>
            client.domainState(UUID).then(
              () => "answered",
              (e: unknown) => e,
            ),
          );
          const first = await conn.nextCall(Proc.DOMAIN_GET_STATE);
          badPackets[bad](conn, first);
          for (const n of noise) conn.raw(n); // whatever follows cannot revive it
          if (!refusedByClient.includes(bad)) setTimeout(() => conn.socket.end(), 20);
          const why = await closed;
          expect(why).toBeInstanceOf(LibvirtError);
          expect(why.code).toBe(ErrorCode.RPC);
          if (refusedByClient.includes(bad)) expect(why.message).toMatch(/protocol error/);
          for (const outcome of await Promise.all(pending)) expect(outcome).toBeInstanceOf(LibvirtError);
          await expect(client.hostname()).rejects.toBeInstanceOf(LibvirtError);
          await fake.close();
        },
      ),
      { numRuns: 40 },
    );
  });

  it("survives random byte streams: the connection ends (or goes on) without a crash or a hang", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 200 }), { minLength: 1, maxLength: 6 }), async (chunks) => {
        const { client, conn, closed } = await open();
        const pending = client.hostname().catch((e: unknown) => e);
        await conn.nextCall(Proc.CONNECT_GET_HOSTNAME);
        for (const c of chunks) conn.raw(c);
        setTimeout(() => conn.socket.end(), 20);
        expect(await closed).toBeInstanceOf(LibvirtError);
        const outcome = await pending;
        expect(typeof outcome === "string" || outcome instanceof LibvirtError).toBe(true);
        await fake.close();
      }),
      { numRuns: 40 },
    );
  });

  it("delivers the daemon's error as {code, domain, message} and keeps the connection", async () => {
    const { client, conn } = await open();
    const call = client.domainState(UUID);
    const p = await conn.nextCall(Proc.DOMAIN_GET_STATE);
    conn.reply(p, remoteError(42, "Domain not found: no domain with matching uuid"), PacketStatus.error);
    const err = await call.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).toJSON()).toEqual({
      code: 42,
      domain: 10,
      message: "Domain not found: no domain with matching uuid",
    });
    expect(client.closedWith).toBeNull();
    await client.close();
  });
});

describe("timeouts and keepalive", () => {
  it("times a call out, then drops its late reply without ending the connection", async () => {
    const { client, conn } = await open({ callTimeoutMs: 200 });
    const err = await client.domainState(UUID).catch((e: unknown) => e);
    expect(err).toMatchObject({ message: expect.stringMatching(/no answer to procedure 212 within 200 ms/) });
    const late = await conn.nextCall(Proc.DOMAIN_GET_STATE);
    conn.reply(late, xdr().int(1).int(0).bytes());
    const next = client.hostname();
    const h = await conn.nextCall(Proc.CONNECT_GET_HOSTNAME);
    conn.reply(h, xdr().string("host").bytes());
    expect(await next).toBe("host");
    expect(client.closedWith).toBeNull();
    await client.close();
  });

  it("answers the daemon's PING with a PONG", async () => {
    const { client, conn } = await open();
    conn.send({ program: KEEPALIVE_PROGRAM, procedure: 1, type: PacketType.message });
    await expect.poll(() => conn.received.some((p) => p.program === KEEPALIVE_PROGRAM && p.procedure === 2)).toBe(true);
    await client.close();
  });

  it("notices a daemon gone silent after its keepalive count, failing what waits", async () => {
    const { client, conn, closed } = await open(
      { keepaliveIntervalMs: 200, keepaliveCount: 3 },
      { keepalive: true, answerPings: false },
    );
    const waiting = client.hostname().catch((e: unknown) => e);
    const t0 = Date.now();
    const why = await closed;
    expect(why.message).toMatch(/silent for \d+ s/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    expect(await waiting).toBe(why);
    expect(conn.received.filter((p) => p.program === KEEPALIVE_PROGRAM && p.procedure === 1).length).toBeGreaterThan(0);
  });

  it("keeps a connection whose daemon answers its PINGs", async () => {
    const { client, conn } = await open({ keepaliveIntervalMs: 100, keepaliveCount: 3 }, { keepalive: true });
    await expect
      .poll(() => conn.received.filter((p) => p.program === KEEPALIVE_PROGRAM && p.procedure === 1).length)
      .toBeGreaterThanOrEqual(8); // well past 3 intervals
    expect(client.closedWith).toBeNull();
    await client.close();
  });
});

describe("console streams on the fake daemon", () => {
  async function console_(opts?: { force?: boolean; devName?: string }) {
    const o = await open();
    const opening = o.client.openConsole(UUID, opts);
    const call = await o.conn.nextCall(Proc.DOMAIN_OPEN_CONSOLE);
    const data = (bytes: string | Uint8Array, status: number = PacketStatus.continue) =>
      o.conn.send(
        { type: PacketType.stream, procedure: Proc.DOMAIN_OPEN_CONSOLE, serial: call.serial, status },
        typeof bytes === "string" ? Buffer.from(bytes) : bytes,
      );
    return { ...o, opening, call, data };
  }

  it("sends the flags and device, takes data sent before the reply, and writes on the call's serial", async () => {
    const { client, conn, opening, call, data } = await console_({ force: true, devName: "serial0" });
    expect([...call.body.subarray(-4)]).toEqual([0, 0, 0, 1]); // flags: FORCE
    expect(Buffer.from(call.body).includes(Buffer.from("serial0"))).toBe(true);
    data("early "); // a daemon may start the stream before its reply
    conn.reply(call);
    const stream = await opening;
    const got: string[] = [];
    stream.onData((c) => got.push(Buffer.from(c).toString()));
    data("late");
    await expect.poll(() => got.join("")).toBe("early late");
    stream.write(Buffer.from("typed"));
    await expect
      .poll(() => conn.received.find((p) => p.type === PacketType.stream && p.serial === call.serial))
      .toMatchObject({ procedure: Proc.DOMAIN_OPEN_CONSOLE, status: PacketStatus.continue });
    const sent = conn.received.find((p) => p.type === PacketType.stream)!;
    expect(Buffer.from(sent.body).toString()).toBe("typed");
    await client.close();
  });

  it("ends on an empty CONTINUE (end of file) and finishes the stream with the daemon", async () => {
    const { client, conn, opening, call, data } = await console_();
    conn.reply(call);
    const stream = await opening;
    const ends: unknown[] = [];
    const got: string[] = [];
    stream.onData((c) => got.push(Buffer.from(c).toString()));
    stream.onEnd((e) => ends.push(e));
    data("bye");
    data(new Uint8Array(0));
    await expect.poll(() => ends).toEqual([{}]);
    expect(got).toEqual(["bye"]);
    await expect
      .poll(() => conn.received.some((p) => p.type === PacketType.stream && p.status === PacketStatus.ok))
      .toBe(true);
    stream.write(Buffer.from("ignored after the end"));
    expect(conn.received.filter((p) => p.status === PacketStatus.continue)).toHaveLength(0);
    await client.close();
  });

  it("ends with the daemon's error packet as a LibvirtError", async () => {
    const { client, conn, opening, call, data } = await console_();
    conn.reply(call);
    const stream = await opening;
    const end = new Promise<{ error?: LibvirtError }>((r) => stream.onEnd(r));
    data(remoteError(1, "stream had unexpected termination"), PacketStatus.error);
    const { error } = await end;
    expect(error).toBeInstanceOf(LibvirtError);
    expect(error).toMatchObject({ code: 1, message: "stream had unexpected termination" });
    expect(client.closedWith).toBeNull();
    await client.close();
  });

  it("holds data while paused and delivers it, then the end, on resume", async () => {
    const { client, conn, opening, call, data } = await console_();
    conn.reply(call);
    const stream = await opening;
    const got: string[] = [];
    const ends: unknown[] = [];
    stream.onData((c) => got.push(Buffer.from(c).toString()));
    stream.onEnd((e) => ends.push(e));
    stream.pause();
    data("a");
    data("b");
    data(new Uint8Array(0));
    // The end of file arrived (the client finishes at once) while the reader was paused.
    await expect
      .poll(() => conn.received.some((p) => p.type === PacketType.stream && p.status === PacketStatus.ok))
      .toBe(true);
    expect(got).toEqual([]);
    expect(ends).toEqual([]);
    stream.resume();
    expect(got).toEqual(["a", "b"]);
    expect(ends).toEqual([{}]);
    await client.close();
  });

  it("close() sends OK and resolves on the daemon's confirmation; abort() sends ERROR", async () => {
    const { client, conn, opening, call } = await console_();
    conn.reply(call);
    const stream = await opening;
    const closing = stream.close();
    await expect
      .poll(() => conn.received.find((p) => p.type === PacketType.stream && p.status === PacketStatus.ok))
      .toBeDefined();
    conn.send({ type: PacketType.stream, procedure: Proc.DOMAIN_OPEN_CONSOLE, serial: call.serial });
    await closing;
    expect(stream.ended).toBe(true);

    const second = client.openConsole(UUID);
    const call2 = await conn.nextCall(Proc.DOMAIN_OPEN_CONSOLE);
    conn.reply(call2);
    const s2 = await second;
    void s2.abort();
    await expect
      .poll(() => conn.received.find((p) => p.serial === call2.serial && p.status === PacketStatus.error))
      .toBeDefined();
    await client.close();
  });

  it("ends an open stream with the connection's error when the daemon goes away", async () => {
    const { conn, opening, call } = await console_();
    conn.reply(call);
    const stream = await opening;
    const end = new Promise<{ error?: LibvirtError }>((r) => stream.onEnd(r));
    conn.socket.destroy();
    expect((await end).error?.message).toMatch(/closed the connection/);
  });
});
