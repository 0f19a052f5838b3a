// tailLines against GNU `tail -n` (property-based, fast-check): random line lengths, CRLF,
// multi-byte characters landing on block boundaries, invalid bytes, no final newline, 0 to 20,000
// lines; then the edges: caps, huge lines, files that shrink or are replaced mid-read.
import { execFileSync } from "node:child_process";
import { mkfifoSync } from "./fifo.ts";
import { renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { TAIL_BLOCK_BYTES, tailLines } from "../../agent/logs/log-tail.ts";
import { AgentFailure } from "../../agent/host/libvirt.ts";
import { tempDir } from "./helpers.ts";
import { makeLog } from "./generated-log.ts";

const dir = tempDir("qx-tail-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const decode = (b: Buffer) => new TextDecoder("utf-8", { ignoreBOM: true }).decode(b);
const gnuTail = (path: string, n: number) => execFileSync("tail", ["-n", String(n), path], { maxBuffer: 1 << 30 });
const countLines = (b: Buffer) => {
  if (!b.length) return 0;
  let c = 0;
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) c++;
  return b[b.length - 1] === 10 ? c : c + 1;
};

describe("tailLines matches GNU tail -n", () => {
  it("on generated files (property-based)", () => {
    let run = 0;
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
          lines: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 20_000 })),
          maxLineLen: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 20, max: 400 })),
          crlf: fc.integer({ min: 0, max: 100 }),
          finalNewline: fc.boolean(),
          n: fc.oneof(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 10_000 })),
          // Small blocks put multi-byte characters and CRLFs on block boundaries all the time.
          blockBytes: fc.constantFrom(1, 2, 3, 5, 7, 64, 1000, 4096, TAIL_BLOCK_BYTES),
        }),
        ({ seed, lines, maxLineLen, crlf, finalNewline, n, blockBytes }) => {
          const path = join(dir, `gen-${run++}.log`);
          const content = makeLog(seed, lines, maxLineLen, crlf, finalNewline);
          writeFileSync(path, content);
          const expected = gnuTail(path, n);
          const got = tailLines(path, n, 64 * 1024 * 1024, { blockBytes });
          rmSync(path);
          expect(got.text).toBe(decode(expected));
          expect(got.linesReturned).toBe(countLines(expected));
          expect(got.truncated).toBe(expected.length < content.length);
          expect(got.logSizeBytes).toBe(content.length);
          expect(got.bytesRead).toBeLessThanOrEqual(expected.length + blockBytes);
        },
      ),
      { numRuns: 150, seed: 20_240_601 },
    );
  });

  it("on hand-picked shapes", () => {
    const shapes = [
      "",
      "\n",
      "\n\n\n",
      "a",
      "a\n",
      "a\nb",
      "a\r\nb\r\n",
      "\r\n",
      "x\r",
      "é\n€\n😀",
      "\ufeffbom first\n",
    ];
    for (const s of shapes) {
      const path = join(dir, "shape.log");
      writeFileSync(path, s);
      for (const n of [1, 2, 3, 10]) {
        for (const blockBytes of [1, 2, TAIL_BLOCK_BYTES]) {
          expect(tailLines(path, n, 1 << 20, { blockBytes }).text, `${JSON.stringify(s)} n=${n}`).toBe(
            decode(gnuTail(path, n)),
          );
        }
      }
    }
  });
});

describe("tailLines edges", () => {
  it("an empty file: no text, no lines, nothing truncated", () => {
    const path = join(dir, "empty.log");
    writeFileSync(path, "");
    expect(tailLines(path, 100, 1 << 20)).toMatchObject({
      text: "",
      linesReturned: 0,
      truncated: false,
      logSizeBytes: 0,
    });
  });

  it("keeps the newest whole lines that fit under maxBytes", () => {
    const path = join(dir, "cap.log");
    writeFileSync(path, "one\ntwo\nthree\nfour\n");
    expect(tailLines(path, 10, 10, { blockBytes: 2 })).toMatchObject({
      text: "four\n",
      linesReturned: 1,
      truncated: true,
    });
    expect(tailLines(path, 10, 11, { blockBytes: 2 })).toMatchObject({
      text: "three\nfour\n",
      linesReturned: 2,
      truncated: true,
    });
  });

  it("one line longer than the cap is cut from its start, on a character boundary", () => {
    const path = join(dir, "huge-line.log");
    const line = "€".repeat(400_000) + "end"; // 1.2 MB, no newline at all
    writeFileSync(path, "before\n" + line);
    const got = tailLines(path, 5, 100_000);
    expect(got.truncated).toBe(true);
    expect(got.linesReturned).toBe(1);
    expect(Buffer.byteLength(got.text)).toBeLessThanOrEqual(100_000);
    expect(got.text.endsWith("€€end")).toBe(true);
    expect(got.text).not.toContain("\ufffd");
    expect(got.bytesRead).toBeLessThanOrEqual(100_000 + TAIL_BLOCK_BYTES);
  });

  it("never reads the whole of a large file", () => {
    const path = join(dir, "large.log");
    const line = "2026-01-01 qemu-system-x86_64: a plain log line of moderate length\n";
    writeFileSync(path, line.repeat(300_000)); // ~20 MB
    const got = tailLines(path, 1000, 8 << 20);
    expect(got.linesReturned).toBe(1000);
    expect(got.bytesRead).toBeLessThanOrEqual(Buffer.byteLength(got.text) + TAIL_BLOCK_BYTES);
  });

  it("a file that shrinks mid-read is read again (the answer is from the file as it now is)", () => {
    const path = join(dir, "shrink.log");
    writeFileSync(path, "old\n".repeat(10_000));
    let shrunk = false;
    const got = tailLines(path, 3, 1 << 20, {
      blockBytes: 1024,
      afterBlockRead: (i) => {
        if (i === 0 && !shrunk) {
          shrunk = true;
          truncateSync(path, 0);
          writeFileSync(path, "new 1\nnew 2\n");
        }
      },
    });
    expect(got).toMatchObject({ text: "new 1\nnew 2\n", linesReturned: 2, truncated: false, logSizeBytes: 12 });
  });

  it("a file replaced mid-read (rotation) is read again from the new file", () => {
    const path = join(dir, "rotate.log");
    writeFileSync(path, "before rotation\n".repeat(1000));
    let rotated = false;
    const got = tailLines(path, 2, 1 << 20, {
      blockBytes: 512,
      afterBlockRead: () => {
        if (rotated) return;
        rotated = true;
        writeFileSync(path + ".new", "after rotation\n");
        renameSync(path + ".new", path);
      },
    });
    expect(got.text).toBe("after rotation\n");
  });

  it("a file that keeps changing gives a clear error, not a mix of versions", () => {
    const path = join(dir, "churn.log");
    writeFileSync(path, "x\n".repeat(5000));
    let err: unknown;
    let lines = 4000;
    try {
      tailLines(path, 10, 1 << 20, {
        blockBytes: 256,
        afterBlockRead: () => writeFileSync(path, "x\n".repeat(lines--)),
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AgentFailure);
    expect((err as AgentFailure).message).toMatch(/kept changing/);
  });

  it("missing files, symlinks and FIFOs are log_not_found (and a FIFO never hangs)", () => {
    writeFileSync(join(dir, "target.log"), "secret\n");
    symlinkSync(join(dir, "target.log"), join(dir, "link.log"));
    mkfifoSync(join(dir, "pipe.log"));
    for (const name of ["absent.log", "link.log", "pipe.log"]) {
      expect(() => tailLines(join(dir, name), 1, 1 << 20), name).toThrowError(
        expect.objectContaining({ code: "log_not_found" }),
      );
    }
  });
});
