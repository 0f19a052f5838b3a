// One logs answer carries at most MAX_LOG_BYTES (8 MiB) of log text counted in UTF-8 bytes, not in
// UTF-16 units: with 3-byte characters a UTF-16 count would let three times as much through. Checked
// where the answer is built (readVmLog), as the local API serves it and as the vm.logs command sends it.
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_LOG_BYTES, type LogsResult } from "../../protocol/wire.ts";
import { CommandRunner } from "../../agent/host/commands.ts";
import { HostTokenCheck, ensureHostToken } from "../../agent/local/host-token.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { startLocalApi, type LocalApi } from "../../agent/local/local-api.ts";
import { readVmLog } from "../../agent/logs/vm-log.ts";
import { TEST_URI, VMS, recorder, silentLog, tempDir } from "./helpers.ts";

const base = tempDir("qx-log-cap-");
afterAll(() => rmSync(base, { recursive: true, force: true }));
const utf8 = (s: string) => Buffer.byteLength(s, "utf8");

/** A file of `bytes` bytes made of `unit` repeated, as one line (no newline) after a short first line. */
function hugeLine(name: string, unit: string, bytes: number) {
  const text = "first line\n" + unit.repeat(Math.ceil(bytes / utf8(unit))) + "end";
  writeFileSync(join(base, `${name}.log`), text);
  return text;
}

describe("the cap counts UTF-8 bytes where the answer is built", () => {
  it("one huge line of 3-byte characters: at most 8 MiB of UTF-8, cut on a character boundary, truncated", () => {
    hugeLine("euro", "€", 12 * 1024 * 1024);
    const got = readVmLog(base, "euro", 100, MAX_LOG_BYTES);
    expect(got.truncated).toBe(true);
    expect(got.linesReturned).toBe(1);
    expect(utf8(got.text)).toBeLessThanOrEqual(MAX_LOG_BYTES);
    expect(utf8(got.text)).toBeGreaterThan(MAX_LOG_BYTES - 4); // filled to the cap, not far below it
    expect(got.text.length).toBeLessThan(MAX_LOG_BYTES / 2); // UTF-16 units: a third of the bytes
    expect(got.text.endsWith("€€€end")).toBe(true);
    expect(got.text).not.toContain("\ufffd");
    expect(got.text).not.toContain("first line");
  });

  it("one huge line of 4-byte characters (astral, two UTF-16 units each)", () => {
    hugeLine("emoji", "😀", 10 * 1024 * 1024);
    const got = readVmLog(base, "emoji", 5, MAX_LOG_BYTES);
    expect(got.truncated).toBe(true);
    expect(utf8(got.text)).toBeLessThanOrEqual(MAX_LOG_BYTES);
    expect(utf8(got.text)).toBeGreaterThan(MAX_LOG_BYTES - 5);
    expect(got.text).not.toContain("\ufffd");
    expect(got.text.endsWith("😀end")).toBe(true);
  });

  it("many lines of 3-byte characters: the newest whole lines within 8 MiB of UTF-8", () => {
    const line = "ж".repeat(999) + "\n"; // 1,999 bytes, 1,000 UTF-16 units
    writeFileSync(join(base, "cyrillic.log"), line.repeat(6_000)); // ~11.4 MiB
    const got = readVmLog(base, "cyrillic", 10_000, MAX_LOG_BYTES);
    expect(got.truncated).toBe(true);
    expect(utf8(got.text)).toBeLessThanOrEqual(MAX_LOG_BYTES);
    expect(got.linesReturned).toBe(Math.floor(MAX_LOG_BYTES / utf8(line)));
    expect(got.text).toBe(line.repeat(got.linesReturned));
  });

  it("invalid bytes grow threefold when decoded (U+FFFD): the decoded answer still stays within 8 MiB", () => {
    const row = Buffer.concat([Buffer.alloc(999, 0xff), Buffer.from("\n")]);
    writeFileSync(join(base, "binary.log"), Buffer.concat(Array.from({ length: 6_000 }, () => row))); // ~5.7 MiB raw, ~17 MiB decoded
    const got = readVmLog(base, "binary", 10_000, MAX_LOG_BYTES);
    expect(got.truncated).toBe(true);
    expect(utf8(got.text)).toBeLessThanOrEqual(MAX_LOG_BYTES);
    expect(utf8(got.text)).toBeGreaterThan(MAX_LOG_BYTES - 3 * 1_000);
    expect(got.linesReturned).toBe(got.text.split("\n").length - 1 + (got.text.endsWith("\n") ? 0 : 1));
  });
});

describe("the answers sent", () => {
  let libvirt: Libvirt;
  let api: LocalApi;
  let hostToken: string;
  beforeAll(async () => {
    hugeLine(VMS.running.name, "€", 12 * 1024 * 1024);
    const tokenFile = ensureHostToken(join(base, "state")).path;
    hostToken = readFileSync(tokenFile, "utf8").trim();
    const check = new HostTokenCheck(tokenFile, () => {});
    libvirt = new Libvirt(TEST_URI, silentLog);
    api = await startLocalApi({
      host: "127.0.0.1",
      port: 0,
      acceptsToken: (t) => check.accepts(t),
      libvirt,
      logDir: base,
      webDir: join(base, "no-web"),
      log: silentLog,
    });
  });
  afterAll(async () => {
    await api?.close();
    await libvirt?.close();
  });

  it("the local API's qemuLog is at most 8 MiB of UTF-8, truncated", async () => {
    const res = await fetch(`${api.url}/api/v1/vms/${VMS.running.uuid}/logs?lines=100`, {
      headers: { authorization: `Bearer ${hostToken}` },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { qemuLog: string; truncated: boolean; linesReturned: number };
    expect(body.truncated).toBe(true);
    expect(body.linesReturned).toBe(1);
    expect(utf8(body.qemuLog)).toBeLessThanOrEqual(MAX_LOG_BYTES);
    expect(utf8(body.qemuLog)).toBeGreaterThan(MAX_LOG_BYTES - 4);
  });

  it("the vm.logs command's chunks add up to at most 8 MiB of UTF-8, and the result says truncated", async () => {
    const rec = recorder();
    const runner = new CommandRunner({
      libvirt,
      logDir: base,
      send: rec.send,
      log: silentLog,
      serverNow: Date.now,
      stopPollMs: 20,
    });
    await runner.handle({
      type: "vm.logs",
      id: "cap",
      payload: {
        vmId: VMS.running.uuid,
        name: VMS.running.name,
        deadline: Date.now() + 30_000,
        lines: 100,
        maxBytes: MAX_LOG_BYTES,
      },
    });
    const frames = rec.of("cap");
    const text = frames.flatMap((m) => (m.type === "log.chunk" ? [m.payload.text] : [])).join("");
    expect(utf8(text)).toBeLessThanOrEqual(MAX_LOG_BYTES);
    expect(utf8(text)).toBeGreaterThan(MAX_LOG_BYTES - 4);
    expect(frames.at(-1)!.payload as LogsResult).toMatchObject({ truncated: true, linesReturned: 1 });
  });
});
