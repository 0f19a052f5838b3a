// The slots of the packed metrics history: every series (each VM, and the node's totals) keeps one
// slot in every row, so a range query cuts that series' slice out of each row. A VM first seen
// mid-history reads only its own samples (older rows have no slice of it); a slot passes to a new VM
// only once nothing of its old VM is held any more; slices read back in time order whatever order
// the rows come in.
import { describe, expect, it } from "vitest";
import { ROLLUP_STEP_MS } from "../../protocol/metrics.ts";
import {
  Block,
  DATA_COLUMNS,
  eachSliceSample,
  encodeBlock,
  figuresArray,
  type Samples,
} from "../../worker/session/metric-blocks.ts";
import { MetricsHistory } from "../../worker/session/metrics.ts";
import { bucketAgo, cpuOf, DAY, figures, inFreshObject, tickOf as ticksOf } from "./metrics-history.ts";
import { uuid } from "./support.ts";

const MINUTE = 60_000;
/** Figures whose network rate follows the CPU value, so slices are told apart field by field. */
const slotFigures = (cpuPct: number) => figures(cpuPct, cpuPct / 2);
const tickOf = (t: number, vms: Record<string, number>, node?: number) => ticksOf(t, vms, node, slotFigures);
const inFresh = (fn: Parameters<typeof inFreshObject>[1]) => inFreshObject("slots", fn);
const held = (points: { cpuPct: number | null }[]) => cpuOf(points).filter((v) => v !== null);
const seriesTable = (storage: DurableObjectStorage) =>
  Object.fromEntries(
    storage.sql
      .exec<{ id: number; series: string }>("SELECT id, series FROM metric_series")
      .toArray()
      .map((r) => [r.series, r.id]),
  );

describe("metrics history slots", () => {
  it("answers a VM first seen mid-history, past the first column of slots, from its own samples only; the node's totals are a slot too", async () => {
    await inFresh((history, storage) => {
      const start = bucketAgo(1);
      // More VMs than columns, so slots share columns.
      const early = Array.from({ length: DATA_COLUMNS + 6 }, () => uuid());
      const late = uuid();
      const at = (m: number, k: number) => start + m * MINUTE + k * 10_000;
      for (let m = 0; m < 6; m++) {
        const ticks = Array.from({ length: 6 }, (_, k) =>
          tickOf(
            at(m, k),
            {
              ...Object.fromEntries(early.map((v, i) => [v, i])),
              // first seen in minute 3, tick 2
              ...(m > 3 || (m === 3 && k >= 2) ? { [late]: 1000 + m * 10 + k } : {}),
            },
            500 + m,
          ),
        );
        history.ingest({ intervalMs: 10_000, ticks }, at(m, 5));
      }
      const slots = seriesTable(storage);
      expect(slots[late] - 1).toBeGreaterThan(DATA_COLUMNS); // a second slice in its column
      expect(slots.node).toBeDefined();
      const now = at(6, 0);
      expect(history.series(late, "1h", now).points[0].t).toBe(at(3, 2));
      expect(held(history.series(late, "1h", now).points)).toEqual([
        1032, 1033, 1034, 1035, 1040, 1041, 1042, 1043, 1044, 1045, 1050, 1051, 1052, 1053, 1054, 1055,
      ]);
      expect(history.series(late, "1h", now).points[0]).toMatchObject({ netRxBps: 516, netTxBps: null });
      // 24 h: the mean of its samples in each minute.
      expect(held(history.series(late, "24h", now).points)).toEqual([1033.5, 1042.5, 1052.5]);
      // Every early VM still reads its own figures from the rows the late one widened.
      for (const i of [0, DATA_COLUMNS - 1, DATA_COLUMNS, DATA_COLUMNS + 5])
        expect(new Set(held(history.series(early[i], "1h", now).points))).toEqual(new Set([i]));
      expect(held(history.series(early[7], "1h", now).points)).toHaveLength(36);
      // The node's totals: their own slot, per tick and then as the bucket's mean.
      expect(held(history.series(null, "24h", now).points)).toEqual([500, 501, 502, 503, 504, 505]);
      expect(held(history.series(null, "7d", now).points)).toEqual([502]);
      expect(held(history.series(late, "7d", now).points)).toEqual([(1032 + 1033 + 1034 + 1035 + 1040 * 6 + 15) / 10]);
    });
  });

  it("gives a new VM the slot of one whose samples have all expired, never one still held", async () => {
    await inFresh((history, storage) => {
      const start = bucketAgo(40);
      const [gone, keptMeanwhile, stays, newcomer] = [uuid(), uuid(), uuid(), uuid()];
      const put = (t: number, vms: Record<string, number>) =>
        history.ingest({ intervalMs: 10_000, ticks: [tickOf(t, vms)] }, t);
      put(start, { [gone]: 7 });
      put(start + ROLLUP_STEP_MS, { [gone]: 7 });
      expect(held(history.series(gone, "30d", start + ROLLUP_STEP_MS).points)).toEqual([7]);
      // A day on, the gone VM's means are still held: a VM seen now takes a new slot.
      put(start + DAY, { [keptMeanwhile]: 8 });
      expect(seriesTable(storage)).toEqual({ [gone]: 1, [keptMeanwhile]: 2 });

      // 35 days on, all of the gone VM's samples are past their retention.
      const later = start + 35 * DAY;
      put(later, { [stays]: 20 });
      put(later + ROLLUP_STEP_MS, { [stays]: 21 });
      const cost = put(later + 2 * ROLLUP_STEP_MS, { [stays]: 22, [newcomer]: 30 });
      const slots = seriesTable(storage);
      expect(slots[newcomer]).toBe(1); // the gone VM's slot, renamed in place
      expect(slots[stays]).toBe(3);
      expect(slots[gone]).toBeUndefined();
      expect(Object.keys(slots)).toHaveLength(3);
      expect(cost.rowsWritten).toBeGreaterThan(0);
      const now = later + 2 * ROLLUP_STEP_MS + 10_000;
      // The newcomer reads only its own samples, over every range; the gone VM has none.
      for (const range of ["1h", "24h", "7d", "30d"] as const)
        expect(held(history.series(newcomer, range, now).points)).toEqual(
          range === "1h" || range === "24h" ? [30] : [],
        );
      expect(held(history.series(stays, "24h", now).points)).toEqual([20, 21, 22]);
      expect(history.series(gone, "30d", now).points).toEqual([]);
      // Its first bucket closes: its mean lands in its slot.
      put(later + 3 * ROLLUP_STEP_MS, { [newcomer]: 31 });
      expect(held(history.series(newcomer, "7d", later + 3 * ROLLUP_STEP_MS).points)).toEqual([30]);
      // Woken again (nothing cached), the same slots answer.
      const reopened = new MetricsHistory(storage);
      expect(held(reopened.series(stays, "7d", later + 3 * ROLLUP_STEP_MS).points)).toEqual([20, 21, 22]);
    });
  });

  it("answers the week and month views from each bucket's means, a half-hour that misses its last bucket included", async () => {
    await inFresh((history) => {
      const halfHour = 6 * ROLLUP_STEP_MS;
      const start = Math.floor(bucketAgo(3) / halfHour) * halfHour;
      const vmId = uuid();
      const put = (t: number, cpu: number) =>
        history.ingest({ intervalMs: 10_000, ticks: [tickOf(t, { [vmId]: cpu }, cpu + 100)] }, t);
      // First half-hour: every bucket sampled. Second: the node was offline for its last bucket.
      // Third: its first bucket only, closed by the next sample.
      for (let b = 0; b < 6; b++) put(start + b * ROLLUP_STEP_MS, b);
      for (let b = 6; b < 11; b++) put(start + b * ROLLUP_STEP_MS, b);
      put(start + 12 * ROLLUP_STEP_MS, 12);
      const now = start + 13 * ROLLUP_STEP_MS;
      put(now, 13);
      // One mean per series and bucket, in a row per hour (the 13 buckets span two).
      expect(history.counts()).toMatchObject({ bucketRows: 2, rollup: 24 });
      expect(held(history.series(vmId, "7d", now + 1).points)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]);
      expect(held(history.series(vmId, "30d", now + 1).points)).toEqual([2.5, 8, 12]);
      expect(held(history.series(null, "30d", now + 1).points)).toEqual([102.5, 108, 112]);
      // A week view starting mid-half-hour takes only the buckets from its start.
      const week = start + 4 * ROLLUP_STEP_MS + 7 * DAY;
      expect(held(history.series(vmId, "7d", week).points)).toEqual([4, 5, 6, 7, 8, 9, 10, 12]);
    });
  });

  it("appends ticks to a row by copying its slices: the bytes of the row written whole, from float32 or float64 rows", () => {
    // Slots past a column's first (more than DATA_COLUMNS), a slot first seen in the appended ticks,
    // samples missing here and there, nulls, and figures float32 cannot hold exactly.
    const sample = (s: number, k: number) =>
      figuresArray({ ...figures(s + k / 100, k % 4 === 0 ? null : 1e9 + s / 3), diskReadBps: 123_456_789.123 * k });
    const ticksOf = (from: number, to: number, slots: number): Samples =>
      new Map(
        Array.from({ length: to - from }, (_, j) => {
          const k = from + j;
          const at = new Map<number, Float64Array>();
          for (let s = 0; s < slots; s++) if ((s + k) % 5 !== 0) at.set(s, sample(s, k));
          return [1_000 * k, at];
        }),
      );
    const held = ticksOf(0, 7, DATA_COLUMNS + 3);
    const later = ticksOf(7, 10, DATA_COLUMNS + 9);
    const whole = encodeBlock(new Map([...held, ...later]));
    for (const width of [4, 8] as const) {
      const stored = encodeBlock(held, undefined, width);
      const block = new Block(stored.head, stored.data, width).appended(later, [...later.keys()]);
      expect({ n: block.n, slots: block.slots, w: block.w }).toEqual({ n: 10, slots: DATA_COLUMNS + 9, w: 4 });
      expect(new Uint8Array(block.head)).toEqual(new Uint8Array(whole.head));
      block.data.forEach((d, c) => expect(new Uint8Array(d), `column ${c}`).toEqual(new Uint8Array(whole.data[c])));
    }
  });

  it("reads a series' slices in time order whatever order the rows come in, float32 rows beside float64 ones", () => {
    // A row's piece of the range query's stream: its figure width (a byte), its head, the slot's slice.
    const row = (t: number, cpu: number, width: 4 | 8) => {
      const block = encodeBlock(new Map([[t, new Map([[2, figuresArray(figures(cpu))]])]]), [t], width);
      const slice = new Uint8Array(block.data[2]);
      const out = new Uint8Array(1 + block.head.byteLength + slice.length);
      out[0] = block.w;
      out.set(new Uint8Array(block.head), 1);
      out.set(slice, 1 + block.head.byteLength);
      return out;
    };
    // (a figure float32 cannot hold exactly: each row reads back as the figure it was written from)
    const rows = [row(3_000, 3.01, 4), row(1_000, 1.01, 8), row(2_000, 2.01, 4), row(500, 0.1, 8)];
    const stream = new Uint8Array(rows.reduce((n, r) => n + r.length, 0));
    rows.reduce((at, r) => (stream.set(r, at), at + r.length), 0);
    const seen: [number, number, number, number][] = [];
    eachSliceSample(stream, 2, (t, figures) => seen.push([t, figures[0], figures[7], figures[8]]));
    expect(seen).toEqual([
      [500, 0.1, 10, NaN],
      [1_000, 1.01, 10, NaN],
      [2_000, 2.01, 10, NaN],
      [3_000, 3.01, 10, NaN],
    ]);
  });
});
