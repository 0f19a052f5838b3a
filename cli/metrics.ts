// `qx vms metrics <vm-id> --range 1h|24h|7d|30d` and `qx nodes metrics <node-id>`: a compact table
// of the series (at most MAX_ROWS rows, each the mean of its stretch; "offline" where no sample came).
import { MetricRange, meanPoint, type MetricPoint } from "../protocol/metrics.ts";
import type { MetricsResponse } from "../protocol/rest.ts";

export const METRICS_USAGE = `  vms metrics <vm-id> [--range 1h|24h|7d|30d]   CPU, memory, disk and network over the range (default 1h)
  nodes metrics <node-id> [--range …]    the node's totals`;

export const MAX_ROWS = 24;

type Call = <T>(method: string, path: string, body?: unknown) => Promise<T>;

const UNITS = ["B", "K", "M", "G", "T"];
function bytes(v: number | null, suffix = ""): string {
  if (v === null) return "-";
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 || v >= 100 ? Math.round(v) : v.toFixed(1)}${UNITS[i]}${suffix}`;
}
const num = (v: number | null, digits = 1) => (v === null ? "-" : v.toFixed(digits));
const time = (t: number, range: MetricRange) => {
  const iso = new Date(t).toISOString();
  return range === "1h" || range === "24h" ? iso.slice(11, 16) : `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
};

/** Folds the points into at most MAX_ROWS rows; a row whose points are all gaps stays a gap. */
export function compactRows(points: MetricPoint[]): MetricPoint[] {
  if (points.length <= MAX_ROWS) return points;
  const per = Math.ceil(points.length / MAX_ROWS);
  const rows: MetricPoint[] = [];
  for (let i = 0; i < points.length; i += per) {
    const part = points.slice(i, i + per);
    rows.push(meanPoint(part[0].t, part));
  }
  return rows;
}

export function metricsTable(answer: MetricsResponse, table: (rows: string[][]) => string): string {
  const header = [
    "TIME (UTC)",
    "CPU %",
    "MEM USED",
    "MEM ASSIGNED",
    "DISK R/s",
    "DISK W/s",
    "R OPS/s",
    "W OPS/s",
    "NET RX/s",
    "NET TX/s",
  ];
  const rows = compactRows(answer.points).map((p) =>
    p.cpuPct === null && p.memUsedMiB === null
      ? [time(p.t, answer.range), "offline / not running", "", "", "", "", "", "", "", ""]
      : [
          time(p.t, answer.range),
          num(p.cpuPct),
          bytes(p.memUsedMiB === null ? null : p.memUsedMiB * 1024 * 1024),
          bytes(p.memAssignedMiB === null ? null : p.memAssignedMiB * 1024 * 1024),
          bytes(p.diskReadBps),
          bytes(p.diskWriteBps),
          num(p.diskReadOps),
          num(p.diskWriteOps),
          bytes(p.netRxBps),
          bytes(p.netTxBps),
        ],
  );
  if (!rows.length) return `no samples in the last ${answer.range} (the agent samples running VMs every 10 s)`;
  return table([header, ...rows]);
}

/** Runs `vms metrics` / `nodes metrics`; throws a usage message (exit 2) for a bad range. */
export async function runMetrics(
  call: Call,
  kind: "vms" | "nodes",
  id: string,
  range: string | undefined,
  print: (data: unknown, human: () => string) => void,
  table: (rows: string[][]) => string,
  usageError: (message: string) => Error,
): Promise<void> {
  const parsed = MetricRange.safeParse(range ?? "1h");
  if (!parsed.success) throw usageError(`--range must be one of ${MetricRange.options.join(", ")}`);
  const answer = await call<MetricsResponse>(
    "GET",
    `/api/${kind}/${encodeURIComponent(id)}/metrics?range=${parsed.data}`,
  );
  print(answer, () => metricsTable(answer, table));
}
