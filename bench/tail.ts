// Bench: the agent's in-process tail of a 1 GiB QEMU log against GNU `tail -n` run as a process on
// the same file (warm cache), bytes read against bytes returned, and peak RSS growth for a 1 MiB
// vs a 1 GiB file. `node bench/tail.ts` prints the rows; `npm run bench` collects them.
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, statSync, writeSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { tailLines } from "../agent/logs/log-tail.ts";
import { MAX_LOG_BYTES } from "../protocol/wire.ts";
import { goal } from "./targets.ts";

export type { BenchRow } from "./table.ts";
import type { BenchRow } from "./table.ts";

const DIR = "/tmp/qx-bench";
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** A log of realistic QEMU lines (varied lengths); reused when already there at the right size. */
export function ensureLog(path: string, size: number): string {
  if (existsSync(path) && statSync(path).size === size) return path;
  mkdirSync(DIR, { recursive: true });
  const lines: string[] = [];
  const msgs = [
    "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.80000001H:ECX.svm [bit 2]",
    "char device redirected to /dev/pts/3 (label charserial0)",
    "qemu-system-x86_64: -device virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:12:34:56: info",
    "2026-01-01 00:00:00.000+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0, kernel: 6.1.0, hostname: kvm-01",
    "qemu-system-x86_64: terminating on signal 15 from pid 1234 (/usr/sbin/libvirtd)",
    "x",
  ];
  for (let i = 0, len = 0; len < 8 * MiB; i++) {
    const line = `2026-01-01T00:00:${String(i % 60).padStart(2, "0")}.${i}Z ${msgs[i % msgs.length]}${" .".repeat(i % 17)}\n`;
    lines.push(line);
    len += Buffer.byteLength(line);
  }
  const block = Buffer.from(lines.join(""));
  const fd = openSync(path, "w");
  let written = 0;
  while (written < size) written += writeSync(fd, block, 0, Math.min(block.length, size - written));
  closeSync(fd);
  return path;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

function timeInProcess(path: string, n: number, runs: number): { ms: number; bytesRead: number; returned: number } {
  let last = tailLines(path, n, MAX_LOG_BYTES); // warm-up (and page cache)
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    last = tailLines(path, n, MAX_LOG_BYTES);
    times.push(performance.now() - t0);
  }
  return { ms: median(times), bytesRead: last.bytesRead, returned: Buffer.byteLength(last.text) };
}

function timeGnuTail(path: string, n: number, runs: number): number {
  spawnSync("tail", ["-n", String(n), path], { stdio: ["ignore", "pipe", "ignore"], maxBuffer: 64 * MiB });
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = spawnSync("tail", ["-n", String(n), path], { stdio: ["ignore", "pipe", "ignore"], maxBuffer: 64 * MiB });
    times.push(performance.now() - t0);
    if (r.status !== 0) throw new Error(`tail failed: ${r.status}`);
  }
  return median(times);
}

/**
 * Peak RSS growth of one 10,000-line tail of `path`, in a fresh process whose code is already warm
 * (a first tail of a small file): the kernel's peak-RSS mark is reset (clear_refs 5) just before,
 * growth = VmHWM after − VmRSS before. Median of three processes.
 */
function peakRssGrowthMiB(path: string, warmFile: string): number {
  const tailUrl = pathToFileURL(resolve(import.meta.dirname, "../agent/logs/log-tail.ts")).href;
  const script = `
    import { tailLines } from ${JSON.stringify(tailUrl)};
    import { readFileSync, writeFileSync } from "node:fs";
    const kib = (field) => parseInt(readFileSync("/proc/self/status", "utf8").split(String.fromCharCode(10)).find((l) => l.startsWith(field + ":")).slice(field.length + 1).trim(), 10);
    tailLines(${JSON.stringify(warmFile)}, 10000, ${MAX_LOG_BYTES});
    writeFileSync("/proc/self/clear_refs", "5");
    const before = kib("VmRSS");
    const r = tailLines(${JSON.stringify(path)}, 10000, ${MAX_LOG_BYTES});
    console.log(JSON.stringify({ before, after: kib("VmHWM"), lines: r.linesReturned }));`;
  const growth: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`RSS probe failed: ${r.stderr}`);
    const { before, after } = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { before: number; after: number };
    growth.push((after - before) / 1024); // KiB
  }
  return median(growth);
}

export async function benchTail(): Promise<BenchRow[]> {
  const big = ensureLog(join(DIR, "tail-1g.log"), GiB);
  const small = ensureLog(join(DIR, "tail-1m.log"), MiB);
  const rows: BenchRow[] = [];
  let worstOverread = 0;
  for (const n of [1_000, 10_000]) {
    const ours = timeInProcess(big, n, 51);
    const gnu = timeGnuTail(big, n, 21);
    worstOverread = Math.max(worstOverread, ours.bytesRead - ours.returned);
    rows.push({
      name: `tail -n ${n.toLocaleString("en")} of 1 GiB log (agent, in-process)`,
      value: round(ours.ms, 3),
      unit: "ms",
      baseline: round(gnu, 3),
      ratio: round(ours.ms / gnu, 3),
      ...goal("tailVsGnu", { value: ours.ms, baseline: gnu }),
    });
  }
  rows.push({
    name: "tail: bytes read beyond bytes returned (worst of the above)",
    value: worstOverread,
    unit: "B",
    ...goal("tailOverread", { value: worstOverread }),
  });
  const warm = ensureLog(join(DIR, "tail-warm.log"), 64 * 1024);
  const rssSmall = peakRssGrowthMiB(small, warm);
  const rssBig = peakRssGrowthMiB(big, warm);
  rows.push({
    name: "tail: peak RSS growth, 1 MiB log",
    value: round(rssSmall, 2),
    unit: "MiB",
    ...goal("tailRss", { value: rssSmall }),
  });
  rows.push({
    name: "tail: peak RSS growth, 1 GiB log",
    value: round(rssBig, 2),
    unit: "MiB",
    baseline: round(rssSmall, 2),
    ...goal("tailRss", { value: rssBig }),
  });
  return rows;
}

const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;

if (import.meta.main) console.table(await benchTail());
