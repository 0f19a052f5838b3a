// Live follow (`tail -F`) on real files: appends from the end, coalesced; rotation (the old file's
// last lines first, then the new one from its start), truncation, a vanished and reappearing log,
// a log symlinked out of the dir; frames bounded and characters never split; the follow limit,
// expired follows. Then the real agent process over a loopback control plane: follow, unfollow,
// and every follow ending with the link.
import {
  appendFileSync,
  mkdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import type { AgentMessage } from "../../protocol/wire.ts";
import { CommandRunner } from "../../agent/host/commands.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { LogFollower, MAX_FOLLOWS } from "../../agent/logs/log-follow.ts";
import {
  LoopbackControlPlane,
  TEST_URI,
  VMS,
  recorder,
  silentLog,
  spawnAgentProcess,
  tempDir,
  until,
  type AgentProcess,
} from "./helpers.ts";

type Append = Extract<AgentMessage, { type: "log.append" }>;
const base = tempDir("qx-follow-");
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

let dirs = 0;
/** A log dir with `vm.log`, a follower whose timer never fires on its own (the test ticks), and what it sent. */
function setup(opts: { chunkBytes?: number; maxBacklogBytes?: number } = {}) {
  const dir = join(base, `d${dirs++}`);
  mkdirSync(dir);
  const log = join(dir, "vm.log");
  const rec = recorder();
  const follower = new LogFollower({ logDir: dir, send: rec.send, log: silentLog, pollMs: 3_600_000, ...opts });
  cleanups.push(() => follower.stopAll());
  const appends = (id = "f") =>
    rec
      .of(id)
      .filter((m): m is Append => m.type === "log.append")
      .map((m) => m.payload);
  return { dir, log, rec, follower, appends };
}
const acked: string[] = [];
const ack = (id: string) => () => void acked.push(id);

describe("following a log like tail -F", () => {
  it("sends what is appended after the start, coalesced per look, seq counting up", () => {
    const { log, follower, appends } = setup();
    writeFileSync(log, "already there\n");
    follower.start("f", "vm", ack("f"));
    expect(acked).toContain("f");
    follower.tick();
    expect(appends()).toEqual([]); // nothing new: nothing sent
    appendFileSync(log, "one\n");
    appendFileSync(log, "two\n");
    follower.tick();
    appendFileSync(log, "three\n");
    follower.tick();
    expect(appends()).toEqual([
      { seq: 0, text: "one\ntwo\n" },
      { seq: 1, text: "three\n" },
    ]);
  });

  it("rotation: the old file's last lines, then 'rotated' and the new file from its start", () => {
    const { log, follower, appends } = setup();
    writeFileSync(log, "a\n");
    follower.start("f", "vm", ack("f"));
    appendFileSync(log, "last line before rotation\n");
    renameSync(log, `${log}.1`); // virtlogd's rotation: rename, then a new file under the name
    writeFileSync(log, "first line after\n");
    follower.tick();
    appendFileSync(`${log}.1`, "written to the old file late\n"); // never read: the old file was let go
    appendFileSync(log, "second line after\n");
    follower.tick();
    expect(appends()).toEqual([
      { seq: 0, text: "last line before rotation\n" },
      { seq: 1, text: "first line after\n", event: "rotated" },
      { seq: 2, text: "second line after\n" },
    ]);
  });

  it("truncation (copytruncate): 'truncated' and the file read from 0", () => {
    const { log, follower, appends } = setup();
    writeFileSync(log, "a long first life of this file\n");
    follower.start("f", "vm", ack("f"));
    truncateSync(log, 0);
    appendFileSync(log, "new\n");
    follower.tick();
    expect(appends()).toEqual([{ seq: 0, text: "new\n", event: "truncated" }]);
  });

  it("a log that vanishes is 'missing', and 'appeared' with all of it when it is back; a follow may start missing", () => {
    const { log, follower, appends } = setup();
    follower.start("f", "vm", ack("f")); // no log yet (a VM never started)
    expect(appends()).toEqual([{ seq: 0, text: "", event: "missing" }]);
    follower.tick();
    writeFileSync(log, "booted\n");
    follower.tick();
    appendFileSync(log, "tail\n");
    unlinkSync(log);
    follower.tick();
    follower.tick();
    expect(appends()).toEqual([
      { seq: 0, text: "", event: "missing" },
      { seq: 1, text: "booted\n", event: "appeared" },
      { seq: 2, text: "tail\n" }, // the removed file's last bytes come first
      { seq: 3, text: "", event: "missing" },
    ]);
  });

  it("a log replaced by a symlink out of the log dir is missing, never read", () => {
    const { log, follower, appends } = setup();
    writeFileSync(join(base, "outside-secret.txt"), "FOLLOW-SECRET\n");
    writeFileSync(log, "inside\n");
    follower.start("f", "vm", ack("f"));
    unlinkSync(log);
    symlinkSync(join(base, "outside-secret.txt"), log);
    follower.tick();
    appendFileSync(join(base, "outside-secret.txt"), "FOLLOW-SECRET more\n");
    follower.tick();
    expect(appends()).toEqual([{ seq: 0, text: "", event: "missing" }]);
    expect(JSON.stringify(appends())).not.toContain("SECRET");
  });

  it("frames hold at most chunkBytes, one per look, characters never split, nothing lost", () => {
    const { log, follower, appends } = setup({ chunkBytes: 1000 });
    writeFileSync(log, "");
    follower.start("f", "vm", ack("f"));
    const text = "€😀é ".repeat(900); // 10 bytes per repeat: every 1000-byte cut lands mid-character
    appendFileSync(log, text);
    appendFileSync(log, Buffer.from("€").subarray(0, 2)); // half a character written so far
    for (let i = 0; i < 12; i++) follower.tick();
    let got = appends();
    expect(got.length).toBeGreaterThanOrEqual(9);
    for (const a of got) {
      expect(Buffer.byteLength(a.text)).toBeLessThanOrEqual(1000);
      expect(a.text).not.toContain("\ufffd");
    }
    expect(got.map((a) => a.text).join("")).toBe(text); // the half character waits
    appendFileSync(log, Buffer.from("€").subarray(2));
    follower.tick();
    got = appends();
    expect(got.at(-1)!.text).toBe("€");
  });

  it("far behind: skips to near the end and says how much it skipped", () => {
    const { log, follower, appends } = setup({ chunkBytes: 100, maxBacklogBytes: 1000 });
    writeFileSync(log, "");
    follower.start("f", "vm", ack("f"));
    appendFileSync(log, "x".repeat(5000) + "\n" + "y".repeat(98) + "\n");
    follower.tick();
    expect(appends()).toEqual([
      {
        seq: 0,
        text:
          "[quantix-agent: 5000 bytes of this log skipped: it grew faster than it can be followed]\n" +
          "\n" +
          "y".repeat(98) +
          "\n",
      },
    ]);
  });

  it("stop ends a follow: no frame after it", () => {
    const { log, follower, appends } = setup();
    writeFileSync(log, "");
    follower.start("f", "vm", ack("f"));
    expect(follower.stop("f")).toBe(true);
    expect(follower.stop("f")).toBe(false);
    appendFileSync(log, "after the stop\n");
    follower.tick();
    expect(appends()).toEqual([]);
    expect(follower.count).toBe(0);
  });
});

describe("vm.logs.follow as a command", () => {
  const libvirt = new Libvirt(TEST_URI, silentLog);
  afterAll(() => libvirt.close());

  function runner() {
    const { dir, rec, follower } = setup();
    writeFileSync(join(dir, `${VMS.running.name}.log`), "x\n");
    const r = new CommandRunner({
      libvirt,
      logDir: dir,
      send: rec.send,
      log: silentLog,
      serverNow: Date.now,
      stopPollMs: 20,
      follower,
    });
    const follow = (id: string, deadline = Date.now() + 10_000) =>
      r.handle({ type: "vm.logs.follow", id, payload: { vmId: VMS.running.uuid, name: VMS.running.name, deadline } });
    return { rec, follower, follow };
  }

  it(`acks, then follows; the ${MAX_FOLLOWS + 1}th at once is not_allowed; a late one is expired and not started`, async () => {
    const { rec, follower, follow } = runner();
    for (let i = 0; i < MAX_FOLLOWS; i++) await follow(`f${i}`);
    expect(follower.count).toBe(MAX_FOLLOWS);
    expect(rec.of("f0").map((m) => m.type)).toEqual(["ack"]);
    await follow("one-too-many");
    expect(rec.of("one-too-many")).toEqual([
      expect.objectContaining({ type: "error", payload: expect.objectContaining({ code: "not_allowed" }) }),
    ]);
    follower.stop("f0");
    await follow("late", Date.now() - 1_000);
    expect(rec.of("late")).toEqual([
      expect.objectContaining({ type: "error", payload: expect.objectContaining({ code: "expired" }) }),
    ]);
    expect(follower.count).toBe(MAX_FOLLOWS - 1);
  });

  it("an unknown VM is vm_not_found, nothing followed", async () => {
    const { rec, follower } = runner();
    const r = new CommandRunner({
      libvirt,
      logDir: base,
      send: rec.send,
      log: silentLog,
      serverNow: Date.now,
      stopPollMs: 20,
      follower,
    });
    await r.handle({
      type: "vm.logs.follow",
      id: "ghost",
      payload: { vmId: "99999999-0000-4000-8000-000000000000", name: "ghost", deadline: Date.now() + 10_000 },
    });
    expect(rec.of("ghost")).toEqual([
      expect.objectContaining({ type: "error", payload: expect.objectContaining({ code: "vm_not_found" }) }),
    ]);
    expect(follower.count).toBe(0);
  });
});

describe("the agent process follows over the link", () => {
  it("follow → ack → appends through a rotation; unfollow stops it; a dropped link ends every follow", async () => {
    const cp = await LoopbackControlPlane.start();
    cleanups.push(() => cp.close());
    cp.joinTokens.set("join-follow", "cred-follow");
    const logDir = join(base, "agent-logs");
    mkdirSync(logDir);
    const log = join(logDir, `${VMS.running.name}.log`);
    writeFileSync(log, "before the follow\n");
    const agent: AgentProcess = spawnAgentProcess([
      "--server",
      cp.url,
      "--token",
      "join-follow",
      "--state-dir",
      join(base, "agent-state"),
      "--libvirt-uri",
      TEST_URI,
      "--log-dir",
      logDir,
      "--follow-poll",
      "100",
      "--backoff-base",
      "50",
      "--backoff-cap",
      "200",
      "--log-level",
      "warn",
    ]);
    cleanups.push(agent.kill);
    await cp.waitFor((m) => m.type === "inventory");
    const appendsOf = (id: string) =>
      cp.received.filter((m): m is Append => m.id === id && m.type === "log.append").map((m) => m.payload);
    const follow = (id: string) =>
      cp.send({
        type: "vm.logs.follow",
        id,
        payload: { vmId: VMS.running.uuid, name: VMS.running.name, deadline: Date.now() + 10_000 },
      });

    follow("live-1");
    await cp.waitFor((m) => m.id === "live-1" && m.type === "ack");
    appendFileSync(log, "qemu: guest booted\n");
    const appends = (id: string, n: number) =>
      until(() => appendsOf(id).length >= n).catch(() => {
        throw new Error(
          `${id}: fewer than ${n} appends: ${JSON.stringify(cp.received.filter((m) => m.id === id))}; agent said ${agent.out()}`,
        );
      });
    await appends("live-1", 1);
    expect(appendsOf("live-1")).toEqual([{ seq: 0, text: "qemu: guest booted\n" }]);
    renameSync(log, `${log}.1`);
    writeFileSync(log, "after rotation\n");
    await appends("live-1", 2);
    expect(appendsOf("live-1")).toEqual([
      { seq: 0, text: "qemu: guest booted\n" },
      { seq: 1, text: "after rotation\n", event: "rotated" },
    ]);

    cp.send({ type: "vm.logs.unfollow", id: "live-1", payload: {} });
    // The agent reads its frames in order: once a later question is answered, the unfollow was read.
    cp.send({
      type: "vm.state",
      id: "barrier",
      payload: { vmId: VMS.running.uuid, name: VMS.running.name, deadline: Date.now() + 10_000 },
    });
    await cp.waitFor((m) => m.id === "barrier" && m.type === "result");
    appendFileSync(log, "nobody follows this\n");
    await new Promise((r) => setTimeout(r, 400));
    expect(appendsOf("live-1")).toHaveLength(2);

    follow("live-2");
    await cp.waitFor((m) => m.id === "live-2" && m.type === "ack");
    cp.socket!.terminate(); // the link drops: the agent ends its follows, then reconnects
    await until(() => cp.received.filter((m) => m.type === "hello").length === 2);
    appendFileSync(log, "after the drop\n");
    await new Promise((r) => setTimeout(r, 400));
    expect(appendsOf("live-2")).toEqual([]);

    follow("live-3"); // the control plane asks again on the new link
    await cp.waitFor((m) => m.id === "live-3" && m.type === "ack");
    appendFileSync(log, "on the new link\n");
    await appends("live-3", 1);
    expect(appendsOf("live-3")[0]).toEqual({ seq: 0, text: "on the new link\n" });
    expect(agent.out()).not.toMatch(/"level":(50|60)/); // no error logged
  });
});
