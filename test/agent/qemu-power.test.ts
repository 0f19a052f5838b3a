// Power actions against a real libvirtd + QEMU guest that ignores ACPI (diskless, no OS), the case
// where they matter: a start queued behind a graceful stop that is still waiting for the guest is
// dropped as `expired` at its deadline and never carried out; a force stop sent into that wait ends
// it and powers the guest off (the graceful request answered "overridden by force stop" with the
// state after it, then the force stop's result); progress frames while a stop waits; a hard cap that
// ends the wait with the real state. No assumption about how fast the guest starts: waits are
// measured from what happened.
import { rmSync } from "node:fs";
import { LibvirtClient } from "../../agent/libvirt/index.ts";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { CommandRunner } from "../../agent/host/commands.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { OVERRIDDEN_MESSAGE } from "../../agent/host/power.ts";
import type { AgentMessage, WireFeature } from "../../protocol/wire.ts";
import { disklessQemuDomain } from "../support/qemu-domain.ts";
import { recorder, silentLog, until } from "./helpers.ts";

const URI = "qemu:///system";
const LOG_DIR = "/var/log/libvirt/qemu";
const { name, uuid, xml } = disklessQemuDomain("qx-power-test");
const ALL: ReadonlySet<string> = new Set<WireFeature>(["progress", "override", "digest", "scopedResync"]);

let admin: LibvirtClient; // sets up, checks and tears down the domain, outside the code under test
const libvirt = new Libvirt(URI, silentLog);

/** A runner whose every frame is kept with the time it was sent. */
function runnerWith(
  opts: { progressMs?: number; operationCapMs?: number; peerFeatures?: () => ReadonlySet<string> } = {},
) {
  const rec = recorder();
  const at = new Map<AgentMessage, number>();
  const send = (m: AgentMessage) => {
    const ok = rec.send(m);
    at.set(rec.sent.at(-1)!, Date.now());
    return ok;
  };
  const runner = new CommandRunner({
    libvirt,
    logDir: LOG_DIR,
    send,
    log: silentLog,
    serverNow: Date.now,
    stopPollMs: 100,
    peerFeatures: () => ALL,
    ...opts,
  });
  return {
    rec,
    runner,
    timeOf: (id: string, type: AgentMessage["type"]) => at.get(rec.of(id).find((m) => m.type === type)!)!,
    timesOf: (id: string) => rec.of(id).map((m) => at.get(m)!),
  };
}
const target = (deadlineInMs = 10_000) => ({ vmId: uuid, name, deadline: Date.now() + deadlineInMs });
const libvirtState = async () => (await admin.domainInfo(await admin.lookupByUuid(uuid))).state; // 1 running, 5 shutoff

async function startGuest() {
  const { rec, runner } = runnerWith();
  await runner.handle({ type: "vm.start", id: `start-${Date.now()}`, payload: target() });
  expect(rec.sent.find((m) => m.type === "result")?.payload).toMatchObject({ state: "RUNNING" });
}

beforeAll(async () => {
  admin = await LibvirtClient.connect(URI); // fails loudly when libvirtd is not running (.ci/run starts it)
  await admin.defineXml(xml);
});

beforeEach(async () => {
  // Each test starts from a shut-off guest, whatever the one before left.
  await admin.destroy(await admin.lookupByUuid(uuid)).catch(() => {});
});

afterAll(async () => {
  try {
    const dom = await admin.lookupByUuid(uuid);
    await admin.destroy(dom).catch(() => {});
    await admin.undefine(dom);
  } finally {
    await admin.close();
    await libvirt.close();
    rmSync(`${LOG_DIR}/${name}.log`, { force: true });
  }
});

describe("power actions on a real QEMU guest that ignores ACPI", () => {
  it("a start queued behind a waiting graceful stop expires at its deadline and is never carried out; a force stop then overrides the stop", async () => {
    await startGuest();
    const { rec, runner, timeOf } = runnerWith({ progressMs: 500 });
    const stop = runner.handle({ type: "vm.stop", id: "graceful", payload: { ...target(), graceMs: 60_000 } });
    await until(
      () =>
        rec.of("graceful").some((m) => m.type === "progress" && (m.payload as { phase: string }).phase === "working"),
      20_000,
    );

    // Waits behind the graceful stop; its deadline passes there.
    const queuedAt = Date.now();
    await runner.handle({ type: "vm.start", id: "queued-start", payload: target(1_000) });
    expect(
      rec
        .of("queued-start")
        .map((m) => m.type)
        .filter((t) => t !== "progress"),
    ).toEqual(["ack", "error"]);
    for (const p of rec.of("queued-start").filter((m) => m.type === "progress"))
      expect(p.payload).toMatchObject({ phase: "queued" });
    expect(rec.of("queued-start").at(-1)!.payload).toMatchObject({
      code: "expired",
      state: "RUNNING",
      libvirtState: "running",
    });
    expect(Date.now() - queuedAt).toBeGreaterThanOrEqual(900); // answered at its deadline, not when the stop ends
    expect(rec.of("graceful").some((m) => m.type === "result" || m.type === "error")).toBe(false); // the stop still waits

    // A queued graceful stop of the same VM ends with the override too.
    const second = runner.handle({ type: "vm.stop", id: "graceful-2", payload: { ...target(), graceMs: 60_000 } });
    await until(() => rec.of("graceful-2").length > 0);

    const forceSentAt = Date.now();
    await runner.handle({ type: "vm.forceStop", id: "force", payload: target() });
    const overrideMs = timeOf("force", "result") - forceSentAt;
    await Promise.all([stop, second]);

    expect(
      rec
        .of("force")
        .map((m) => m.type)
        .filter((t) => t !== "progress"),
    ).toEqual(["ack", "result"]);
    expect(rec.of("force").at(-1)!.payload).toMatchObject({ state: "STOPPED", libvirtState: "shutoff" });
    for (const id of ["graceful", "graceful-2"]) {
      const answer = rec.of(id).filter((m) => m.type !== "progress");
      expect(
        answer.map((m) => m.type),
        id,
      ).toEqual(["ack", "error"]);
      expect(answer[1].payload, id).toEqual({
        code: "overridden",
        message: OVERRIDDEN_MESSAGE,
        state: "STOPPED",
        libvirtState: "shutoff",
      });
    }
    // Order: each overridden stop is answered before the force stop's result, after the force stop's ack.
    const order = rec.sent
      .filter((m) => m.type !== "progress" && ["graceful", "graceful-2", "force"].includes(m.id))
      .map((m) => `${m.id}:${m.type}`);
    expect(order.indexOf("force:ack")).toBeLessThan(order.indexOf("graceful:error"));
    expect(order.indexOf("graceful:error")).toBeLessThan(order.indexOf("force:result"));
    expect(order.indexOf("graceful-2:error")).toBeLessThan(order.indexOf("force:result"));
    // The queued start never ran: the guest is off, and libvirt agrees.
    expect(await libvirtState()).toBe(5);
    expect(overrideMs).toBeLessThan(5_000);
    console.log(
      `force stop overriding a waiting graceful stop: guest off and answered ${overrideMs} ms after the force stop`,
    );
    // Every progress frame of the stop came between its ack and its answer, phase working, with the state it saw.
    const stopFrames = rec.of("graceful");
    const progress = stopFrames.filter((m) => m.type === "progress");
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(stopFrames[0].type).toBe("ack");
    expect(stopFrames.at(-1)!.type).toBe("error");
    expect(progress.at(-1)!.payload).toMatchObject({ phase: "working", nextWithinMs: 500, state: "RUNNING" });
  }, 90_000);

  it("progress at least every progressMs from the ack to the result of a start, however long the start takes", async () => {
    // Short enough that even a start that is quick here (a few hundred ms) spans several intervals.
    const PROGRESS_MS = 50;
    const { rec, runner, timeOf, timesOf } = runnerWith({ progressMs: PROGRESS_MS });
    await runner.handle({ type: "vm.start", id: "start", payload: target() });
    const took = timeOf("start", "result") - timeOf("start", "ack");
    const progress = rec.of("start").filter((m) => m.type === "progress");
    // From what this start took: never more than one frame per full interval, and no silence much
    // longer than the promised `nextWithinMs` (the control plane allows twice that).
    expect(progress.length).toBeLessThanOrEqual(Math.floor(took / PROGRESS_MS));
    const times = timesOf("start");
    const longestSilence = Math.max(...times.slice(1).map((t, i) => t - times[i]));
    expect(longestSilence).toBeLessThan(2 * PROGRESS_MS + 1_000);
    for (const p of progress) expect(p.payload).toMatchObject({ phase: "working", nextWithinMs: PROGRESS_MS });
    expect(rec.of("start").at(-1)!.payload).toMatchObject({ state: "RUNNING", timedOut: false });
    console.log(`real QEMU start took ${took} ms with ${progress.length} progress frames at ${PROGRESS_MS} ms`);
  }, 120_000);

  it("the hard cap ends a graceful stop's wait with the real state", async () => {
    await startGuest();
    const { rec, runner } = runnerWith({ operationCapMs: 1_500 });
    const t0 = Date.now();
    await runner.handle({ type: "vm.stop", id: "capped", payload: { ...target(), graceMs: 60_000 } });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_400);
    expect(rec.of("capped").at(-1)!.payload).toMatchObject({
      state: "RUNNING",
      libvirtState: "running",
      timedOut: true,
    });
    await runner.handle({ type: "vm.forceStop", id: "cleanup", payload: target() });
    expect(await libvirtState()).toBe(5);
  }, 60_000);

  it("to a control plane that announced neither progress nor override: no progress frames, and the overridden stop is not_allowed with the same message", async () => {
    await startGuest();
    const { rec, runner } = runnerWith({ progressMs: 100, peerFeatures: () => new Set() });
    const stop = runner.handle({ type: "vm.stop", id: "old-graceful", payload: { ...target(), graceMs: 60_000 } });
    await until(() => rec.of("old-graceful").length > 0);
    await new Promise((r) => setTimeout(r, 500)); // five progress intervals: none may come
    await runner.handle({ type: "vm.forceStop", id: "old-force", payload: target() });
    await stop;
    expect(rec.sent.filter((m) => m.type === "progress")).toEqual([]);
    expect(rec.of("old-graceful").map((m) => m.type)).toEqual(["ack", "error"]);
    expect(rec.of("old-graceful")[1].payload).toMatchObject({
      code: "not_allowed",
      message: OVERRIDDEN_MESSAGE,
      state: "STOPPED",
    });
    expect(rec.of("old-force").at(-1)!.payload).toMatchObject({ state: "STOPPED" });
  }, 60_000);
});
