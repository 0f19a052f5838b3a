// One time-series chart drawn by uPlot: a line per series, values under the cursor in the legend,
// and a break in the line wherever a point is null (no sample: node offline, VM not running).
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export type ChartSeries = { label: string; color: string; values: (number | null)[] };

/** Points where uPlot draws them (samples far enough apart to tell one from another), and also when
 *  all the samples shown lie closer together than that: a few minutes of samples on a day's axis are
 *  otherwise a line too short to see, and the chart looks empty. */
function showPoints(u: uPlot, seriesIdx: number): boolean {
  const [first, last] = u.series[0].idxs ?? [0, 0];
  const xs = u.data[0];
  const span = Math.abs(u.valToPos(xs[last], "x", true) - u.valToPos(xs[first], "x", true));
  const space = (u.series[seriesIdx].points?.space ?? 0) * devicePixelRatio;
  return span < space || last - first <= span / space;
}

/** `span`: the range shown, in seconds, whatever the points cover (a lone sample is not a year). */
export function MetricChart({
  title,
  times,
  span,
  series,
  format,
  testId,
}: {
  title: string;
  times: number[];
  span: [number, number];
  series: ChartSeries[];
  format: (v: number) => string;
  testId: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shown = useRef(span);
  shown.current = span;
  const labels = series.map((s) => s.label).join("|");

  useEffect(() => {
    const el = box.current!;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: 160,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: () => shown.current },
        y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { stroke: "#71717a", grid: { stroke: "#71717a22" } },
        { stroke: "#71717a", grid: { stroke: "#71717a22" }, size: 80, values: (_u, ticks) => ticks.map(format) },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          spanGaps: false,
          points: { show: showPoints },
          value: (_u: uPlot, v: number | null) => (v === null ? "—" : format(v)),
        })),
      ],
    };
    const u = new uPlot(opts, [[], ...series.map(() => [])], el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height: 160 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Rebuilt only when the series themselves change; data changes go through setData below.
  }, [labels]);

  useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [times, series]);

  return (
    <div
      className="min-w-0 rounded-md border border-zinc-200 bg-white p-2 dark:border-zinc-800 dark:bg-zinc-900"
      data-testid={testId}
    >
      <div className="mb-1 text-[12px] font-semibold text-zinc-600 dark:text-zinc-300">{title}</div>
      <div ref={box} className="text-[11px]" />
    </div>
  );
}
