// "Last N lines" continues into virtlogd's rotated files (`<name>.log.1`, `.2`, … newest first)
// when the current file holds fewer: checked against GNU `tail -n` over the files joined oldest
// first (property-based), and every rotated file is confined to the log dir like the current one.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_LOG_BYTES, type LogsResult } from "../../protocol/wire.ts";
import { CommandRunner } from "../../agent/host/commands.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { startLocalApi, type LocalApi } from "../../agent/local/local-api.ts";
import { HostTokenCheck, ensureHostToken } from "../../agent/local/host-token.ts";
import { MAX_ROTATED_FILES, readVmLog } from "../../agent/logs/vm-log.ts";
import { TEST_URI, VMS, recorder, silentLog, tempDir } from "./helpers.ts";
import { makeLog } from "./generated-log.ts";
import { mkfifoSync } from "./fifo.ts";

const base = tempDir("qx-rotated-");
const SECRET = "ROTATED-SECRET-never-served";
writeFileSync(join(base, "secret.txt"), `${SECRET}\n`.repeat(3));
afterAll(() => rmSync(base, { recursive: true, force: true }));
const decode = (b: Buffer) => new TextDecoder("utf-8", { ignoreBOM: true }).decode(b);
/** The oracle: GNU tail over the files joined oldest first, as `cat f.log.2 f.log.1 f.log | tail -n N`. */
const tailOfJoined = (files: Buffer[], n: number) =>
  execFileSync("tail", ["-n", String(n)], { input: Buffer.concat([...files].reverse()), maxBuffer: 1 << 30 });
const countLines = (b: Buffer) => {
  if (!b.length) return 0;
  let c = 0;
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) c++;
  return b[b.length - 1] === 10 ? c : c + 1;
};
const nameOf = (k: number) => (k === 0 ? "vm.log" : `vm.log.${k}`);

/** A fresh log dir holding `contents` as vm.log, vm.log.1, … (newest first). */
function logDirWith(contents: (Buffer | string)[]): string {
  const dir = tempDir("qx-rotated-dir-");
  contents.forEach((c, k) => writeFileSync(join(dir, nameOf(k)), c));
  return dir;
}

describe("the tail across rotated files matches GNU tail over the joined files", () => {
  it("on generated files: 0-4 rotated, empty ones, no final newline, characters split by rotation (property-based)", () => {
    const file = fc.record({
      seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
      lines: fc.oneof(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 3_000 })),
      maxLineLen: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 10 }), fc.integer({ min: 20, max: 200 })),
      crlf: fc.integer({ min: 0, max: 100 }),
      finalNewline: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.array(file, { minLength: 1, maxLength: 5 }),
        fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 10_000 })),
        fc.constantFrom(1, 3, 7, 64, 4096, 65_536),
        (specs, n, blockBytes) => {
          const contents = specs.map((s) => makeLog(s.seed, s.lines, s.maxLineLen, s.crlf, s.finalNewline));
          const dir = logDirWith(contents);
          try {
            const expected = tailOfJoined(contents, n);
            const got = readVmLog(dir, "vm", n, MAX_LOG_BYTES, { blockBytes });
            const total = contents.reduce((s, c) => s + c.length, 0);
            expect(got.text).toBe(decode(expected));
            expect(got.linesReturned).toBe(countLines(expected));
            expect(got.truncated).toBe(expected.length < total);
            expect(got.logSizeBytes).toBe(contents[0].length);
            expect(got.logPath).toBe(join(dir, "vm.log"));
            expect(got.skipped).toEqual([]);
            // files: newest first, a prefix of the series, and every file the answer's bytes came from
            expect(got.files).toEqual(contents.slice(0, got.files.length).map((_, k) => nameOf(k)));
            let newer = 0;
            contents.forEach((c, k) => {
              if (expected.length > newer && c.length > 0)
                expect(got.files, `file ${k} holds part of the answer`).toContain(nameOf(k));
              newer += c.length;
            });
            expect(got.bytesRead).toBeLessThanOrEqual(expected.length + blockBytes * got.files.length);
          } finally {
            rmSync(dir, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: 120, seed: 20_260_107 },
    );
  });

  it("a line and a character split by rotation come out whole, counted once", () => {
    const dir = logDirWith(["é ends here\n", "start of a line that rotation cut ", "zero\none\ntwo half-"]);
    // vm.log.2 = "zero\none\ntwo half-", vm.log.1 = "start … cut ", vm.log = "é ends here\n"
    const got = readVmLog(dir, "vm", 2, MAX_LOG_BYTES);
    expect(got.text).toBe("one\ntwo half-start of a line that rotation cut é ends here\n");
    expect(got.linesReturned).toBe(2);
    expect(got.files).toEqual(["vm.log", "vm.log.1", "vm.log.2"]);
    expect(got.truncated).toBe(true);

    // a UTF-8 character whose bytes rotation split between two files
    const euro = Buffer.from("€");
    const split = logDirWith([
      Buffer.concat([euro.subarray(1), Buffer.from(" after\n")]),
      Buffer.concat([Buffer.from("before "), euro.subarray(0, 1)]),
    ]);
    expect(readVmLog(split, "vm", 5, MAX_LOG_BYTES)).toMatchObject({
      text: "before € after\n",
      linesReturned: 1,
      truncated: false,
    });
    rmSync(dir, { recursive: true, force: true });
    rmSync(split, { recursive: true, force: true });
  });

  it("N lines reached exactly at a file's start: that file alone, truncated because older lines exist", () => {
    const dir = logDirWith(["c\nd\n", "a\nb\n"]);
    expect(readVmLog(dir, "vm", 2, MAX_LOG_BYTES)).toMatchObject({
      text: "c\nd\n",
      linesReturned: 2,
      truncated: true,
      files: ["vm.log"],
    });
    expect(readVmLog(dir, "vm", 3, MAX_LOG_BYTES)).toMatchObject({
      text: "b\nc\nd\n",
      linesReturned: 3,
      truncated: true,
      files: ["vm.log", "vm.log.1"],
    });
    expect(readVmLog(dir, "vm", 9, MAX_LOG_BYTES)).toMatchObject({
      text: "a\nb\nc\nd\n",
      linesReturned: 4,
      truncated: false,
      files: ["vm.log", "vm.log.1"],
    });
    rmSync(dir, { recursive: true, force: true });
  });

  it("the byte cap holds across files: the newest whole lines that fit, truncated", () => {
    const dir = logDirWith(["new 1\nnew 2\n", "old 1\nold 2\nold 3\n"]);
    // 12 bytes from vm.log, 6 left: one whole line of vm.log.1 ("old 3\n")
    expect(readVmLog(dir, "vm", 10, 18)).toMatchObject({
      text: "old 3\nnew 1\nnew 2\n",
      linesReturned: 3,
      truncated: true,
      files: ["vm.log", "vm.log.1"],
    });
    // 5 bytes left: no whole older line fits, none is cut in
    expect(readVmLog(dir, "vm", 10, 17)).toMatchObject({
      text: "new 1\nnew 2\n",
      linesReturned: 2,
      truncated: true,
      files: ["vm.log"],
    });
    rmSync(dir, { recursive: true, force: true });
  });

  it(`stops after ${MAX_ROTATED_FILES} rotated files`, () => {
    const dir = logDirWith(Array.from({ length: MAX_ROTATED_FILES + 3 }, (_, k) => `line of file ${k}\n`));
    const got = readVmLog(dir, "vm", 10_000, MAX_LOG_BYTES);
    expect(got.files).toHaveLength(MAX_ROTATED_FILES + 1);
    expect(got.linesReturned).toBe(MAX_ROTATED_FILES + 1);
    expect(got.truncated).toBe(true);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe("rotated files are confined and skipped with a reason", () => {
  const dir = join(base, "confined");
  beforeAll(() => mkdirSync(dir));

  it("a rotated file symlinked out of the log dir is refused: never read, named as skipped, truncated", () => {
    writeFileSync(join(dir, "out.log"), "current line\n");
    symlinkSync(join(base, "secret.txt"), join(dir, "out.log.1"));
    writeFileSync(join(dir, "out.log.2"), "older, behind the refused file\n");
    const got = readVmLog(dir, "out", 100, MAX_LOG_BYTES);
    expect(got.text).toBe("current line\n");
    expect(got.text).not.toContain(SECRET);
    expect(got.files).toEqual(["out.log"]);
    expect(got.skipped).toEqual([{ file: "out.log.1", reason: "outside_log_dir" }]);
    expect(got.truncated).toBe(true);
  });

  it("a symlink that stays inside the dir is followed and named by its real name", () => {
    writeFileSync(join(dir, "in.log"), "current\n");
    writeFileSync(join(dir, "archive-in.txt"), "archived\n");
    symlinkSync(join(dir, "archive-in.txt"), join(dir, "in.log.1"));
    expect(readVmLog(dir, "in", 100, MAX_LOG_BYTES)).toMatchObject({
      text: "archived\ncurrent\n",
      files: ["in.log", "archive-in.txt"],
      truncated: false,
    });
  });

  it("compressed rotations are not read and the answer says so", () => {
    writeFileSync(join(dir, "gz.log"), "current\n");
    writeFileSync(join(dir, "gz.log.1"), "plain older\n");
    writeFileSync(join(dir, "gz.log.2.gz"), Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0]));
    expect(readVmLog(dir, "gz", 100, MAX_LOG_BYTES)).toMatchObject({
      text: "plain older\ncurrent\n",
      files: ["gz.log", "gz.log.1"],
      skipped: [{ file: "gz.log.2.gz", reason: "compressed" }],
      truncated: true,
    });
  });

  it("a FIFO or a dangling symlink as a rotated file is skipped as unreadable, and never hangs", () => {
    writeFileSync(join(dir, "pipe.log"), "current\n");
    mkfifoSync(join(dir, "pipe.log.1"));
    expect(readVmLog(dir, "pipe", 100, MAX_LOG_BYTES)).toMatchObject({
      text: "current\n",
      skipped: [{ file: "pipe.log.1", reason: "unreadable" }],
      truncated: true,
    });
    writeFileSync(join(dir, "dangling.log"), "current\n");
    symlinkSync(join(dir, "gone"), join(dir, "dangling.log.1"));
    expect(readVmLog(dir, "dangling", 100, MAX_LOG_BYTES)).toMatchObject({
      skipped: [{ file: "dangling.log.1", reason: "unreadable" }],
    });
  });

  it("a rotation while the files are read: read again, no text twice", () => {
    const rot = join(base, "rotating");
    mkdirSync(rot);
    writeFileSync(join(rot, "vm.log"), "B1\nB2\n");
    writeFileSync(join(rot, "vm.log.1"), "A1\nA2\n");
    let calls = 0;
    const got = readVmLog(rot, "vm", 100, MAX_LOG_BYTES, {
      afterBlockRead: () => {
        if (++calls !== 2) return; // while vm.log.1 is read: virtlogd rotates everything by one
        renameSync(join(rot, "vm.log.1"), join(rot, "vm.log.2"));
        renameSync(join(rot, "vm.log"), join(rot, "vm.log.1"));
        writeFileSync(join(rot, "vm.log"), "C1\n");
      },
    });
    expect(got.text).toBe("A1\nA2\nB1\nB2\nC1\n");
    expect(got.files).toEqual(["vm.log", "vm.log.1", "vm.log.2"]);
    expect(calls).toBeGreaterThan(3); // it did read again
  });
});

describe("files in the answers", () => {
  let libvirt: Libvirt;
  let api: LocalApi;
  let logDir: string;
  let hostToken: string;
  beforeAll(async () => {
    logDir = join(base, "answers");
    mkdirSync(logDir);
    writeFileSync(join(logDir, `${VMS.running.name}.log`), "2026-01-02 qemu started again\n");
    writeFileSync(join(logDir, `${VMS.running.name}.log.1`), "2026-01-01 qemu: terminating on signal 15\n");
    symlinkSync(join(base, "secret.txt"), join(logDir, `${VMS.running.name}.log.2`));
    libvirt = new Libvirt(TEST_URI, silentLog);
    const tokenFile = ensureHostToken(join(base, "answers-state")).path;
    hostToken = readFileSync(tokenFile, "utf8").trim();
    const check = new HostTokenCheck(tokenFile, () => {});
    api = await startLocalApi({
      host: "127.0.0.1",
      port: 0,
      acceptsToken: (t) => check.accepts(t),
      libvirt,
      logDir,
      webDir: join(base, "no-web"),
      log: silentLog,
    });
  });
  afterAll(async () => {
    await api?.close();
    await libvirt?.close();
  });

  it("the vm.logs result lists the files read and the one skipped", async () => {
    const rec = recorder();
    const runner = new CommandRunner({
      libvirt,
      logDir,
      send: rec.send,
      log: silentLog,
      serverNow: Date.now,
      stopPollMs: 20,
    });
    const id = "logs-rotated";
    await runner.handle({
      type: "vm.logs",
      id,
      payload: {
        vmId: VMS.running.uuid,
        name: VMS.running.name,
        deadline: Date.now() + 10_000,
        lines: 50,
        maxBytes: MAX_LOG_BYTES,
      },
    });
    const frames = rec.of(id);
    const text = frames.flatMap((m) => (m.type === "log.chunk" ? [m.payload.text] : [])).join("");
    expect(text).toBe("2026-01-01 qemu: terminating on signal 15\n2026-01-02 qemu started again\n");
    expect(frames.at(-1)!.payload as LogsResult).toMatchObject({
      files: [`${VMS.running.name}.log`, `${VMS.running.name}.log.1`],
      skipped: [{ file: `${VMS.running.name}.log.2`, reason: "outside_log_dir" }],
      linesReturned: 2,
      truncated: true,
    });
  });

  it("the local API answer carries the same files", async () => {
    const res = await fetch(`${api.url}/api/v1/vms/${VMS.running.uuid}/logs?lines=50`, {
      headers: { authorization: `Bearer ${hostToken}` },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      linesReturned: 2,
      files: [`${VMS.running.name}.log`, `${VMS.running.name}.log.1`],
      skipped: [{ file: `${VMS.running.name}.log.2`, reason: "outside_log_dir" }],
    });
    expect(JSON.stringify(body)).not.toContain(SECRET);
  });
});
