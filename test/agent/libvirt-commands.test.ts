// The agent against libvirt's own test driver (test:///…/fixtures/node.xml, one domain per libvirt
// state): inventory and the libvirt-to-VM-state mapping, every command, deadlines, per-VM ordering, change
// detection. Each test opens its own connection, so each starts from the fixture's states.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  LOG_CHUNK_BYTES,
  MAX_FRAME_BYTES,
  MAX_LOG_BYTES,
  STOP_GRACE_MS,
  type AgentMessage,
  type Command,
  type VmInfo,
} from "../../protocol/wire.ts";
import { CommandRunner } from "../../agent/host/commands.ts";
import { InventoryReporter, diffInventory } from "../../agent/host/inventory.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { TEST_URI, VMS, recorder, silentLog, tempDir } from "./helpers.ts";

const opened: Libvirt[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((l) => l.close()));
});

function setup(opts: { skewMs?: number; peerFeatures?: string[] } = {}) {
  const libvirt = new Libvirt(TEST_URI, silentLog);
  opened.push(libvirt);
  const rec = recorder();
  const logDir = tempDir("qx-logs-");
  const runner = new CommandRunner({
    libvirt,
    logDir,
    send: rec.send,
    log: silentLog,
    serverNow: () => Date.now() + (opts.skewMs ?? 0),
    stopPollMs: 20,
    peerFeatures: () => new Set(opts.peerFeatures ?? []),
  });
  return { libvirt, rec, runner, logDir };
}

let seq = 0;
const target = (vm: { uuid: string; name: string }, deadlineIn = 10_000) => ({
  vmId: vm.uuid,
  name: vm.name,
  deadline: Date.now() + deadlineIn,
});
const cmd = <T extends Command["type"]>(type: T, payload: Extract<Command, { type: T }>["payload"]) =>
  ({ type, id: `req-${++seq}`, payload }) as Extract<Command, { type: T }>;
const resultOf = (frames: AgentMessage[]) =>
  frames.find((m) => m.type === "result")?.payload as Record<string, unknown> | undefined;
const errorOf = (frames: AgentMessage[]) =>
  frames.find((m) => m.type === "error")?.payload as { code: string; message: string } | undefined;

describe("inventory from the test driver", () => {
  it("lists every domain with uuid, name, libvirt state, mapped state, vCPUs and memory", async () => {
    const { libvirt } = setup();
    const vms = await libvirt.listDomains();
    const byName = Object.fromEntries(vms.map((v) => [v.name, v]));
    expect(vms).toHaveLength(8);
    const expected: Record<string, [string, string]> = {
      "idle-nostate": ["nostate", "UNKNOWN"],
      "web-running": ["running", "RUNNING"],
      "batch-blocked": ["blocked", "RUNNING"],
      "db-paused": ["paused", "PAUSED"],
      "app-shutdown": ["shutdown", "STOPPING"],
      "old-shutoff": ["shutoff", "STOPPED"],
      "legacy-crashed": ["crashed", "ERROR"],
      "lab-pmsuspended": ["pmsuspended", "SUSPENDED"],
    };
    for (const [name, [libvirtState, state]] of Object.entries(expected)) {
      expect(byName[name], name).toMatchObject({ libvirtState, state });
    }
    expect(byName["db-paused"]).toMatchObject({ uuid: VMS.paused.uuid, vcpus: 4, memoryMiB: 2048 });
    expect(byName["old-shutoff"]).toMatchObject({ uuid: VMS.shutoff.uuid, vcpus: 2, memoryMiB: 4096 });
  });

  it("sends the full inventory in chunks, then only what changed", async () => {
    const { libvirt, rec } = setup();
    const inv = new InventoryReporter({ libvirt, send: rec.send, log: silentLog, pollMs: 60_000 });
    await inv.fullSync();
    const sync = rec.sent.filter((m) => m.type === "inventory");
    expect(sync).toHaveLength(1);
    expect(sync[0].payload).toMatchObject({ seq: 0, done: true });
    expect((sync[0].payload as { vms: unknown[] }).vms).toHaveLength(8);

    await inv.pollNow();
    expect(rec.sent.filter((m) => m.type === "vm.changed")).toHaveLength(0); // nothing changed: nothing sent

    await libvirt.start(VMS.shutoff.uuid);
    await libvirt.destroy(VMS.running.uuid);
    await inv.pollNow();
    const changes = rec.sent.filter((m) => m.type === "vm.changed");
    expect(changes).toHaveLength(1);
    const payload = changes[0].payload as { vms: { name: string; state: string }[]; removed: string[] };
    expect(payload.vms.map((v) => `${v.name}:${v.state}`).sort()).toEqual([
      "old-shutoff:RUNNING",
      "web-running:STOPPED",
    ]);
    expect(payload.removed).toEqual([]);
  });

  it("diffs: new, changed and removed domains", () => {
    const a: VmInfo = {
      uuid: VMS.running.uuid,
      name: "a",
      state: "RUNNING",
      libvirtState: "running",
      vcpus: 1,
      memoryMiB: 1,
    };
    const b: VmInfo = { ...a, uuid: VMS.paused.uuid, name: "b" };
    const before = new Map<string, VmInfo>([
      [a.uuid, a],
      [b.uuid, b],
    ]);
    const c: VmInfo = { ...a, uuid: VMS.shutoff.uuid, name: "c" };
    const d = diffInventory(before, [{ ...a, state: "STOPPED", libvirtState: "shutoff" }, c]);
    expect(d.vms.map((v) => v.name)).toEqual(["a", "c"]);
    expect(d.removed).toEqual([b.uuid]);
  });
});

describe("commands", () => {
  it("vm.state answers the mapped state of each domain, vm_not_found for an unknown UUID", async () => {
    const { runner, rec } = setup();
    for (const [libvirtState, vm] of Object.entries(VMS)) {
      const c = cmd("vm.state", target(vm));
      await runner.handle(c);
      expect(resultOf(rec.of(c.id))).toMatchObject({ libvirtState });
    }
    const missing = cmd("vm.state", target({ uuid: "99999999-0000-4000-8000-000000000000", name: "ghost" }));
    await runner.handle(missing);
    expect(errorOf(rec.of(missing.id))?.code).toBe("vm_not_found");
  });

  it("state in one call and state with name agree with the domain's full description; an unknown UUID is vm_not_found on each", async () => {
    const { libvirt } = setup();
    for (const vm of Object.values(VMS)) {
      const full = await libvirt.domain(vm.uuid);
      expect(await libvirt.state(vm.uuid)).toEqual({ state: full.state, libvirtState: full.libvirtState });
      expect(await libvirt.stateAndName(vm.uuid)).toEqual({
        state: full.state,
        libvirtState: full.libvirtState,
        name: vm.name,
      });
      expect(await libvirt.nameOf(vm.uuid)).toBe(vm.name);
    }
    const ghost = "99999999-0000-4000-8000-000000000000";
    const asks: ((uuid: string) => Promise<unknown>)[] = [
      (u) => libvirt.state(u),
      (u) => libvirt.stateAndName(u),
      (u) => libvirt.nameOf(u),
      (u) => libvirt.domain(u),
    ];
    for (const ask of asks) await expect(ask(ghost)).rejects.toMatchObject({ code: "vm_not_found" });
    await expect(libvirt.state("not-a-uuid")).rejects.toMatchObject({ code: "vm_not_found" });
  });

  it("vm.state with excerptLines also sends the log's last lines (newest 4 KiB at most); null when the VM has no log", async () => {
    const { runner, rec, logDir } = setup();
    const text = Array.from({ length: 100 }, (_, i) => `2026-11-26 line ${i}`).join("\n") + "\n";
    writeFileSync(join(logDir, `${VMS.running.name}.log`), text);
    const c = cmd("vm.state", { ...target(VMS.running), excerptLines: 20 });
    await runner.handle(c);
    expect(resultOf(rec.of(c.id))).toEqual({
      state: "RUNNING",
      libvirtState: "running",
      logExcerpt: Array.from({ length: 20 }, (_, i) => `2026-11-26 line ${80 + i}`).join("\n"),
    });
    // Long lines: the newest whole lines within 4 KiB.
    const wide = Array.from({ length: 30 }, (_, i) => `${i} ${"x".repeat(500)}`).join("\n") + "\n";
    writeFileSync(join(logDir, `${VMS.running.name}.log`), wide);
    const w = cmd("vm.state", { ...target(VMS.running), excerptLines: 20 });
    await runner.handle(w);
    const excerpt = resultOf(rec.of(w.id))!.logExcerpt as string;
    expect(Buffer.byteLength(excerpt)).toBeLessThanOrEqual(4096);
    expect(excerpt).toMatch(/^\d+ x/);
    expect(wide.trimEnd().endsWith(excerpt)).toBe(true);
    // No log: the state still answers.
    const none = cmd("vm.state", { ...target(VMS.paused), excerptLines: 20 });
    await runner.handle(none);
    expect(resultOf(rec.of(none.id))).toEqual({ state: "PAUSED", libvirtState: "paused", logExcerpt: null });
    // Without excerptLines, no excerpt field at all.
    const plain = cmd("vm.state", target(VMS.running));
    await runner.handle(plain);
    expect(resultOf(rec.of(plain.id))).toEqual({ state: "RUNNING", libvirtState: "running" });
  });

  it("vm.state's excerpt is the log of the domain libvirt names, whatever name the control plane sent", async () => {
    const { runner, rec, logDir } = setup();
    writeFileSync(join(logDir, `${VMS.running.name}.log`), "the real domain's line\n");
    writeFileSync(join(logDir, "stale-name.log"), "another file's line\n");
    // A name the control plane holds that is not (or no longer) libvirt's: that file is not the answer.
    const stale = cmd("vm.state", { ...target({ uuid: VMS.running.uuid, name: "stale-name" }), excerptLines: 20 });
    await runner.handle(stale);
    expect(resultOf(rec.of(stale.id))).toEqual({
      state: "RUNNING",
      libvirtState: "running",
      logExcerpt: "the real domain's line",
    });
    // A name outside the log directory is never read either.
    const outside = cmd("vm.state", {
      ...target({ uuid: VMS.running.uuid, name: "../../../etc/passwd" }),
      excerptLines: 20,
    });
    await runner.handle(outside);
    expect(resultOf(rec.of(outside.id))).toEqual({
      state: "RUNNING",
      libvirtState: "running",
      logExcerpt: "the real domain's line",
    });
  });

  it("vm.start: ack at once, then RUNNING; a running domain is not_allowed; a paused one is resumed", async () => {
    const { runner, rec } = setup();
    const start = cmd("vm.start", target(VMS.shutoff));
    await runner.handle(start);
    expect(rec.of(start.id).map((m) => m.type)).toEqual(["ack", "result"]);
    expect(resultOf(rec.of(start.id))).toMatchObject({ state: "RUNNING", libvirtState: "running", timedOut: false });

    const again = cmd("vm.start", target(VMS.running));
    await runner.handle(again);
    expect(rec.of(again.id).map((m) => m.type)).toEqual(["ack", "error"]);
    expect(errorOf(rec.of(again.id))?.code).toBe("not_allowed");

    const resume = cmd("vm.start", target(VMS.paused));
    await runner.handle(resume);
    expect(resultOf(rec.of(resume.id))).toMatchObject({ state: "RUNNING" });
  });

  it("vm.stop: graceful shutdown reported with the real state once off", async () => {
    const { runner, rec } = setup();
    const stop = cmd("vm.stop", { ...target(VMS.running), graceMs: 2_000 });
    await runner.handle(stop);
    expect(rec.of(stop.id).map((m) => m.type)).toEqual(["ack", "result"]);
    expect(resultOf(rec.of(stop.id))).toMatchObject({ state: "STOPPED", libvirtState: "shutoff", timedOut: false });
  });

  it("vm.forceStop shuts a domain off; forcing a shut-off one is not_allowed", async () => {
    const { runner, rec } = setup();
    const force = cmd("vm.forceStop", target(VMS.blocked));
    await runner.handle(force);
    expect(resultOf(rec.of(force.id))).toMatchObject({ state: "STOPPED", libvirtState: "shutoff" });
    const again = cmd("vm.forceStop", target(VMS.shutoff));
    await runner.handle(again);
    expect(errorOf(rec.of(again.id))?.code).toBe("not_allowed");
    const ghost = cmd("vm.forceStop", target({ uuid: "99999999-0000-4000-8000-000000000000", name: "ghost" }));
    await runner.handle(ghost);
    expect(errorOf(rec.of(ghost.id))?.code).toBe("vm_not_found");
  });

  it("a command whose deadline passed (in the control plane's clock) is answered expired and NOT carried out", async () => {
    // Local clock says there is time left, but the control plane is 5 s ahead: the deadline is gone.
    const { runner, rec, libvirt } = setup({ skewMs: 5_000 });
    const stop = cmd("vm.forceStop", target(VMS.running, 3_000));
    await runner.handle(stop);
    expect(rec.of(stop.id).map((m) => m.type)).toEqual(["error"]);
    expect(errorOf(rec.of(stop.id))?.code).toBe("expired");
    expect((await libvirt.state(VMS.running.uuid)).state).toBe("RUNNING");

    const start = cmd("vm.start", { ...target(VMS.shutoff), deadline: Date.now() - 1 });
    await runner.handle(start);
    expect(errorOf(rec.of(start.id))?.code).toBe("expired");
    expect((await libvirt.state(VMS.shutoff.uuid)).state).toBe("STOPPED");
  });

  it("an error on a power action carries the state libvirt shows after it; none when the domain is gone", async () => {
    const { runner, rec } = setup();
    const start = cmd("vm.start", target(VMS.running));
    await runner.handle(start);
    expect(errorOf(rec.of(start.id))).toMatchObject({ code: "not_allowed", state: "RUNNING", libvirtState: "running" });
    const force = cmd("vm.forceStop", target(VMS.shutoff));
    await runner.handle(force);
    expect(errorOf(rec.of(force.id))).toMatchObject({ code: "not_allowed", state: "STOPPED", libvirtState: "shutoff" });
    const late = cmd("vm.stop", { ...target(VMS.paused), deadline: Date.now() - 1, graceMs: 1_000 });
    await runner.handle(late);
    expect(errorOf(rec.of(late.id))).toMatchObject({ code: "expired", state: "PAUSED", libvirtState: "paused" });
    const ghost = cmd("vm.start", target({ uuid: "99999999-0000-4000-8000-000000000000", name: "ghost" }));
    await runner.handle(ghost);
    expect(errorOf(rec.of(ghost.id))).toEqual({ code: "vm_not_found", message: expect.any(String) });
  });

  it("actions on one VM run one after another, in arrival order", async () => {
    const { runner, rec } = setup();
    const stop = cmd("vm.stop", { ...target(VMS.running), graceMs: STOP_GRACE_MS });
    const start = cmd("vm.start", target(VMS.running));
    await Promise.all([runner.handle(stop), runner.handle(start)]);
    const order = rec.sent.filter((m) => m.type === "result").map((m) => m.id);
    expect(order).toEqual([stop.id, start.id]);
    expect(resultOf(rec.of(stop.id))).toMatchObject({ state: "STOPPED" });
    expect(resultOf(rec.of(start.id))).toMatchObject({ state: "RUNNING" }); // started after the stop finished
  });

  it("vm.logs reads the log of the domain libvirt names, whatever name the control plane sent", async () => {
    const { runner, rec, logDir } = setup();
    writeFileSync(join(logDir, `${VMS.running.name}.log`), "the real domain's line\n");
    writeFileSync(join(logDir, "stale-name.log"), "another file's line\n");
    const text = (frames: AgentMessage[]) =>
      frames
        .filter((m) => m.type === "log.chunk")
        .map((m) => (m.payload as { text: string }).text)
        .join("");
    for (const sent of ["stale-name", "../../../etc/passwd", VMS.running.name]) {
      const logs = cmd("vm.logs", {
        ...target({ uuid: VMS.running.uuid, name: sent }),
        lines: 5,
        maxBytes: MAX_LOG_BYTES,
      });
      await runner.handle(logs);
      expect(text(rec.of(logs.id))).toBe("the real domain's line\n");
      expect(resultOf(rec.of(logs.id))).toMatchObject({ logPath: join(logDir, `${VMS.running.name}.log`) });
    }
    // A sent name whose file exists while libvirt's has none: log_not_found, not the other file.
    const onlyStale = cmd("vm.logs", {
      ...target({ uuid: VMS.paused.uuid, name: "stale-name" }),
      lines: 5,
      maxBytes: MAX_LOG_BYTES,
    });
    await runner.handle(onlyStale);
    expect(errorOf(rec.of(onlyStale.id))?.code).toBe("log_not_found");
  });

  it("vm.logs sends the tail as log.chunk frames then a result; missing log → log_not_found", async () => {
    const { runner, rec, logDir } = setup();
    mkdirSync(logDir, { recursive: true });
    const line =
      "2026-01-01T00:00:00.000000Z qemu-system-x86_64: terminating on signal 15 from pid 1 (/usr/sbin/libvirtd) ✓\n";
    const text = line.repeat(Math.ceil((LOG_CHUNK_BYTES * 2.5) / line.length));
    writeFileSync(join(logDir, `${VMS.running.name}.log`), "old line\n" + text);
    const lines = text.split("\n").length - 1;
    const logs = cmd("vm.logs", { ...target(VMS.running), lines, maxBytes: MAX_LOG_BYTES });
    await runner.handle(logs);
    const frames = rec.of(logs.id);
    const chunks = frames.filter((m) => m.type === "log.chunk").map((m) => m.payload);
    expect(chunks.length).toBe(3);
    expect(chunks.map((c) => c.seq)).toEqual([0, 1, 2]);
    for (const c of chunks) expect(Buffer.byteLength(c.text)).toBeLessThanOrEqual(LOG_CHUNK_BYTES);
    expect(chunks.map((c) => c.text).join("")).toBe(text);
    expect(frames.at(-1)!.type).toBe("result");
    expect(resultOf(frames)).toMatchObject({
      linesReturned: lines,
      truncated: true,
      chunks: 3,
      logPath: join(logDir, `${VMS.running.name}.log`),
    });

    const none = cmd("vm.logs", { ...target(VMS.paused), lines: 10, maxBytes: MAX_LOG_BYTES });
    await runner.handle(none);
    expect(errorOf(rec.of(none.id))?.code).toBe("log_not_found");
  });

  it("vm.logs to a control plane that takes the text in the result: one frame when it fits, chunks when not", async () => {
    const { runner, rec, logDir } = setup({ peerFeatures: ["logText"] });
    mkdirSync(logDir, { recursive: true });
    const line = '2026-01-01T00:00:00.000000Z qemu-system-x86_64: \u001b[0m "quoted" ✓\n';
    const file = join(logDir, `${VMS.running.name}.log`);
    writeFileSync(file, line.repeat(1000));
    const small = cmd("vm.logs", { ...target(VMS.running), lines: 1000, maxBytes: MAX_LOG_BYTES });
    await runner.handle(small);
    const frames = rec.of(small.id);
    expect(frames.map((m) => m.type)).toEqual(["result"]);
    expect(resultOf(frames)).toMatchObject({ chunks: 0, linesReturned: 1000, text: line.repeat(1000), logPath: file });

    // Text whose frame would pass MAX_FRAME_BYTES (control characters escape six-fold) goes as chunks.
    const escaped = "\u0001".repeat(199) + "\n";
    writeFileSync(file, escaped.repeat(1000));
    const large = cmd("vm.logs", { ...target(VMS.running), lines: 1000, maxBytes: MAX_LOG_BYTES });
    await runner.handle(large);
    const parts = rec.of(large.id);
    for (const m of parts) expect(Buffer.byteLength(JSON.stringify(m))).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    expect(parts.filter((m) => m.type === "log.chunk").length).toBeGreaterThan(1);
    expect(resultOf(parts)).not.toHaveProperty("text");
    const chunkText = parts
      .filter((m) => m.type === "log.chunk")
      .map((m) => (m.payload as { text: string }).text)
      .join("");
    expect(chunkText).toBe(escaped.repeat(1000));
  });
});
