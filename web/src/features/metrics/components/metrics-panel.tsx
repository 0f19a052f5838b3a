// The Monitoring tab: a VM's (or a node's totals') CPU, memory, disk and network over a chosen range,
// one chart each; stretches without samples show as gaps.
import { useMemo, useState } from "react";
import type { MetricRange } from "../../../../../protocol/metrics.ts";
import type { MetricsResponse } from "../../../../../protocol/rest.ts";
import { Notice, Spinner } from "../../../components/ui/panel.tsx";
import { cn } from "../../../components/ui/cn.ts";
import { RANGES, useMetrics, type MetricsTarget } from "../api/metrics.ts";
import { MetricChart, type ChartSeries } from "./metric-chart.tsx";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
export function formatBytes(v: number): string {
  let i = 0;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || Number.isInteger(v) ? Math.round(v) : v.toFixed(1)} ${UNITS[i]}`;
}
const pct = (v: number) => `${v >= 10 ? Math.round(v) : v.toFixed(1)} %`;
const mib = (v: number) => formatBytes(v * 1024 * 1024);
const perSecond = (v: number) => `${formatBytes(v)}/s`;
const ops = (v: number) => `${v >= 10 ? Math.round(v) : v.toFixed(1)}/s`;

type Field = keyof Omit<MetricsResponse["points"][number], "t">;
const CHARTS: {
  id: string;
  title: (node: boolean) => string;
  format: (v: number) => string;
  series: { field: Field; label: string; color: string }[];
}[] = [
  {
    id: "cpu",
    title: (node) => (node ? "CPU (% of the host's CPUs)" : "CPU (% of its vCPUs)"),
    format: pct,
    series: [{ field: "cpuPct", label: "CPU", color: "#0891b2" }],
  },
  {
    id: "memory",
    title: () => "Memory",
    format: mib,
    series: [
      { field: "memUsedMiB", label: "in use", color: "#0891b2" },
      { field: "memAssignedMiB", label: "assigned", color: "#a1a1aa" },
    ],
  },
  {
    id: "disk",
    title: () => "Disk throughput",
    format: perSecond,
    series: [
      { field: "diskReadBps", label: "read", color: "#0891b2" },
      { field: "diskWriteBps", label: "write", color: "#d97706" },
    ],
  },
  {
    id: "disk-ops",
    title: () => "Disk operations",
    format: ops,
    series: [
      { field: "diskReadOps", label: "reads", color: "#0891b2" },
      { field: "diskWriteOps", label: "writes", color: "#d97706" },
    ],
  },
  {
    id: "network",
    title: () => "Network",
    format: perSecond,
    series: [
      { field: "netRxBps", label: "received", color: "#0891b2" },
      { field: "netTxBps", label: "sent", color: "#d97706" },
    ],
  },
];

export function MetricsPanel({ target, offline }: { target: MetricsTarget; offline?: boolean }) {
  const [range, setRange] = useState<MetricRange>("1h");
  const metrics = useMetrics(target, range);
  const points = metrics.data?.points;
  const charts = useMemo(() => {
    const list = points ?? [];
    const times = list.map((p) => p.t / 1000);
    const span: [number, number] = metrics.data ? [metrics.data.from / 1000, metrics.data.to / 1000] : [0, 1];
    return CHARTS.map((c) => ({
      ...c,
      times,
      span,
      series: c.series.map(
        (s): ChartSeries => ({ label: s.label, color: s.color, values: list.map((p) => p[s.field]) }),
      ),
    }));
  }, [points, metrics.data]);
  const hasSamples = points?.some((p) => p.cpuPct !== null || p.memUsedMiB !== null) ?? false;

  return (
    <div data-testid="metrics-panel" data-range={metrics.data?.range ?? ""}>
      <div className="mb-2 flex flex-wrap items-center gap-2">
        <div
          className="inline-flex rounded border border-zinc-300 dark:border-zinc-700"
          role="group"
          aria-label="Range"
        >
          {RANGES.map((r) => (
            <button
              key={r}
              type="button"
              aria-pressed={r === range}
              data-testid={`metrics-range-${r}`}
              onClick={() => setRange(r)}
              className={cn(
                "h-7 px-2.5 text-[13px] font-medium",
                r === range
                  ? "bg-cyan-700 text-white"
                  : "text-zinc-700 hover:bg-zinc-100 dark:text-zinc-300 dark:hover:bg-zinc-800",
              )}
            >
              {r}
            </button>
          ))}
        </div>
        {metrics.isFetching && <span className="text-[12px] text-zinc-500 dark:text-zinc-400">updating…</span>}
        {offline && (
          <span className="text-[12px] text-amber-700 dark:text-amber-400">
            node offline: no samples until it is back (shown as gaps)
          </span>
        )}
      </div>
      {metrics.error ? (
        <Notice tone="error">Could not load the metrics: {metrics.error.message}</Notice>
      ) : metrics.isPending ? (
        <Spinner />
      ) : (
        <>
          {!hasSamples && (
            <Notice tone="info" testId="metrics-empty">
              No samples in this range yet: the agent samples running VMs every 10 s.
            </Notice>
          )}
          <div className="mt-2 grid gap-2 lg:grid-cols-2">
            {charts.map((c) => (
              <MetricChart
                key={c.id}
                testId={`metric-chart-${c.id}`}
                title={c.title(target.kind === "nodes")}
                times={c.times}
                span={c.span}
                series={c.series}
                format={c.format}
              />
            ))}
          </div>
        </>
      )}
    </div>
  );
}
