// The metrics history's tiers and writes: an hour's batch in many frames writes each hour's row of
// 5-minute means once (at its last frame), not once per frame; raw hours a few hours old are
// rewritten once as 1-minute means and a week-old day of 5-minute means as one row of 30-minute means
// (its other hours then written over by new hours, not deleted), and every range
// answers exactly as before (offline gaps, VMs appearing and vanishing mid-span included); a late
// tick for an hour already reduced is dropped; an object written with a row per 5-minute bucket of
// float64 figures (the layout before) keeps answering and merges into hour rows of float32 ones.
import { describe, expect, it } from "vitest";
import {
  METRIC_RANGES,
  ROLLUP_STEP_MS,
  seriesAnswer,
  type MetricPoint,
  type MetricRange,
  type MetricsTick,
} from "../../protocol/metrics.ts";
import { DATA_COLUMN_NAMES, encodeBlock, figuresArray } from "../../worker/session/metric-blocks.ts";
import { MetricsHistory } from "../../worker/session/metrics.ts";
import { cpuOf, DAY, figures, hourOf, inFreshObject, tickOf } from "./metrics-history.ts";
import { uuid } from "./support.ts";

const HOUR = 3_600_000;
const inFresh = (fn: Parameters<typeof inFreshObject>[1]) => inFreshObject("tiers", fn);
/** Rows of a table by their step (0: samples or 5-minute means as taken; else the span of a tick). */
const steps = (storage: DurableObjectStorage, table: string) =>
  Object.fromEntries(
    storage.sql
      .exec<{ step: number; n: number }>(`SELECT step, count(*) AS n FROM ${table} GROUP BY step`)
      .toArray()
      .map((r) => [r.step, r.n]),
  );
const ranges = Object.keys(METRIC_RANGES) as MetricRange[];
/** VMs that run throughout with steady figures: a node of a score of VMs or more has its hours
 *  rewritten coarser (a node of a few keeps them as they are: the rewrite would cost more than the
 *  bytes). */
const CROWD = 24;
const crowdOf = (count: number) => {
  const ids = Array.from({ length: count }, () => uuid());
  return (cpu: number) => Object.fromEntries(ids.map((id) => [id, cpu]));
};
const answers = (history: MetricsHistory, series: (string | null)[], now: number) =>
  series.map((s) => ranges.map((r) => history.series(s, r, now)));

describe("metrics history tiers", () => {
  it("writes an hour's batch in frames with one row of means per hour it covers, at its last frame, and answers as a node sending each tick", async () => {
    // A batch of an hour that starts mid-hour (agents batch from when they started), 40 VMs.
    const start = hourOf(Date.now() - 3 * HOUR) + 20 * 60_000;
    const vms = Array.from({ length: 40 }, () => uuid());
    const tick = (k: number): MetricsTick =>
      tickOf(start + k * 10_000, Object.fromEntries(vms.map((v, i) => [v, (i * 3 + k) % 97])), k % 13);
    const ticks = Array.from({ length: 360 }, (_, k) => tick(k));
    const sentAt = start + 359 * 10_000 + 1_500;
    const series = [null, vms[0], vms[39]];
    let fromBatch: unknown;
    await inFresh((batched) => {
      // As the agent sends it: frames of at most 3,000 VM samples (75 ticks of 40 VMs), all at once.
      const written: number[] = [];
      for (let k = 0; k < 360; k += 75)
        written.push(batched.ingest({ intervalMs: 10_000, ticks: ticks.slice(k, k + 75) }, sentAt).rowsWritten);
      // Every frame but the last appends to the raw rows only (one part, or two where a frame crosses
      // the hour); the last one closes the buckets: one row of means for each of the two hours.
      for (const w of written.slice(1, -1)) expect(w).toBeLessThanOrEqual(2);
      expect(written.at(-1)).toBe(1 + 2);
      // Twelve buckets closed, eight in the first hour, four in the next: the last tick's too, as the
      // next tick, an interval later, falls in the next bucket.
      expect(batched.counts()).toMatchObject({ bucketRows: 2, rollup: 12 * 41 });
      expect(cpuOf(batched.series(vms[39], "1h", sentAt).points).slice(-3)).toEqual([
        (39 * 3 + 357) % 97,
        (39 * 3 + 358) % 97,
        (39 * 3 + 359) % 97,
      ]);
      fromBatch = answers(batched, series, sentAt);
    });
    await inFresh((live) => {
      // The same ticks one per frame, each as it is taken (a watched node): a bucket's means at each
      // 5-minute boundary, rewriting its hour's row.
      for (const t of ticks) live.ingest({ intervalMs: 10_000, ticks: [t] }, t.t + 500);
      expect(live.counts()).toMatchObject({ bucketRows: 2, rollup: 12 * 41 });
      expect(answers(live, series, sentAt)).toEqual(fromBatch);
    });
  });

  it("keeps raw hours as sampled for an hour past their end, then as 1-minute means: the day view answers the same, the hour view still has every sample, a batch come late merges as minute means", async () => {
    await inFresh((history, storage) => {
      const start = hourOf(Date.now() - 12 * HOUR);
      const [stays, appears, vanishes] = [uuid(), uuid(), uuid()];
      const crowd = crowdOf(CROWD);
      const t = (k: number) => start + k * 10_000;
      // Two hours, with an offline stretch of 20 minutes in the second, a VM that appears at 1h25m
      // and one that vanishes at 0h42m; figures with fractions, so means are not round.
      const offline = (k: number) => k >= 400 && k < 520;
      const tick = (k: number) =>
        tickOf(
          t(k),
          {
            ...crowd(k % 3),
            [stays]: ((k * 7) % 101) / 3,
            ...(k >= 510 ? { [appears]: 40 + (k % 9) / 7 } : {}),
            ...(k < 252 ? { [vanishes]: 5 + (k % 4) / 3 } : {}),
          },
          (k % 50) / 6,
        );
      const batch = (from: number, to: number) => {
        const ticks = [];
        for (let k = from; k < to; k++) if (!offline(k)) ticks.push(tick(k));
        history.ingest({ intervalMs: 10_000, ticks }, t(to - 1) + 1_000);
      };
      for (let k = 0; k < 2 * 360; k += 60) batch(k, k + 60);
      const asked = t(2 * 360 - 1) + 1_000;
      const series = [null, stays, appears, vanishes];
      // The day view of that time (its hour view is not asked for two hours on: it reads the hour then
      // just gone; the week's gains the buckets closed since).
      const longer = () => series.map((s) => history.series(s, "24h", asked));
      const before = longer();
      const rawBefore = history.counts().raw;
      expect(steps(storage, "metric_minute")).toEqual({ 0: 2 });
      // An hour and ten minutes pass: the first two hours ended an hour ago.
      for (let k = 2 * 360; k < 3 * 360 + 60; k += 60) batch(k, k + 60);
      expect(steps(storage, "metric_minute")).toEqual({ 0: 2, 60_000: 2 });
      // They hold a tick per minute a series had a sample in: the crowd, the node and `stays` 101
      // minutes (19 offline), `appears` 34, `vanishes` 42; the next hour and ten minutes every sample
      // of the crowd, the node, `stays` and `appears`.
      expect(rawBefore).toBe((CROWD + 2) * 600 + 200 + 252);
      expect(history.counts().raw).toBe((CROWD + 2) * 101 + 34 + 42 + (CROWD + 3) * 420);
      expect(longer()).toEqual(before);
      const day = history.series(stays, "24h", asked).points;
      expect(day.filter((p) => p.cpuPct === null)).toHaveLength(1); // the offline stretch
      const vanished = history.series(vanishes, "24h", asked).points;
      expect(vanished.filter((p) => p.cpuPct !== null)).toHaveLength(42); // 0h00 to 0h41
      expect(vanished.at(-1)?.cpuPct).toBeNull();
      // The hour view of now still reads every sample.
      const now = t(3 * 360 + 59) + 1_000;
      expect(history.series(stays, "1h", now).points.filter((p) => p.cpuPct !== null)).toHaveLength(360);
      // A tick re-sent for an hour already reduced is dropped (its minute is held, as a mean).
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(t(30), { [stays]: 999 })] }, now);
      expect(longer()).toEqual(before);
      // A batch that comes late for it (a series it holds nothing of then) merges as the minute means
      // it makes: the day view has them as if the batch had come in time; the rest is as it was.
      const late = uuid();
      const lateTicks = Array.from({ length: 60 }, (_, k) => tickOf(t(k), { [late]: (k % 6) * 1.5 }));
      history.ingest({ intervalMs: 10_000, ticks: lateTicks }, now);
      expect(longer()).toEqual(before);
      const lateDay = history.series(late, "24h", asked).points.filter((p) => p.cpuPct !== null);
      expect(lateDay.map((p) => [p.t, p.cpuPct])).toEqual(
        Array.from({ length: 10 }, (_, m) => [start + m * 60_000, 3.75]),
      );
      // Woken again (nothing cached), the same answers.
      const reopened = new MetricsHistory(storage);
      expect(series.map((s) => reopened.series(s, "24h", asked))).toEqual(before);
    });
  });

  it("keeps 5-minute means for a week, then as 30-minute means: the month view answers the same, rows leave whole after 30 days", async () => {
    await inFresh((history, storage) => {
      const halfHour = METRIC_RANGES["30d"].stepMs;
      const start = Math.floor((Date.now() - 12 * DAY) / DAY) * DAY;
      const [vm, leaves] = [uuid(), uuid()];
      const crowd = crowdOf(CROWD);
      // A tick every 5 minutes for ten days (each bucket's mean is its one sample), the node offline
      // for two hours on day 3, and a VM present only in the first half of each half hour's buckets.
      const points = new Map<string | null, MetricPoint[]>([
        [null, []],
        [vm, []],
        [leaves, []],
      ]);
      const last = 10 * 288;
      for (let b = 0; b < last; b++) {
        const at = start + b * ROLLUP_STEP_MS;
        if (at >= start + 3 * DAY && at < start + 3 * DAY + 2 * HOUR) continue;
        const inHalf = b % 6;
        const vms: Record<string, number> = { ...crowd(b % 5), [vm]: (b % 11) * 1.5 + inHalf / 4 };
        if (inHalf < 3) vms[leaves] = 60 + inHalf;
        const tick = tickOf(at, vms, b % 17);
        for (const v of tick.vms) points.get(v.vmId)?.push({ t: at, ...figures(v.cpuPct!) });
        points.get(null)!.push({ t: at, ...tick.node! });
        history.ingest({ intervalMs: 10_000, ticks: [tick] }, at + 1_000);
      }
      const now = start + last * ROLLUP_STEP_MS;
      // Means older than a week are 30-minute means, a row a day; the last week's are 5-minute means.
      const byStep = steps(storage, "metric_bucket");
      expect(Object.keys(byStep).sort()).toEqual(["0", String(halfHour)]);
      expect(byStep[0]).toBeGreaterThanOrEqual(7 * 24 - 2); // (two hours offline among them)
      expect(byStep[0] + byStep[halfHour]).toBeLessThanOrEqual(10 * 24);
      // The answers: the mean over each step of the bucket means, as a row per bucket gave them.
      for (const [series, held] of points)
        for (const range of ["7d", "30d"] as const) {
          const { spanMs } = METRIC_RANGES[range];
          const closed = held.filter((p) => p.t < now - ROLLUP_STEP_MS && p.t >= now - spanMs);
          expect(history.series(series, range, now)).toEqual(seriesAnswer(range, now, closed, ROLLUP_STEP_MS));
        }
      // 30 days on, every row of it has gone, whole.
      const monthOn = now + 30 * DAY;
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(monthOn, { [vm]: 1 })] }, monthOn);
      history.ingest(
        { intervalMs: 10_000, ticks: [tickOf(monthOn + ROLLUP_STEP_MS, { [vm]: 1 })] },
        monthOn + ROLLUP_STEP_MS,
      );
      expect(history.counts()).toMatchObject({ bucketRows: 1, rollup: 1 });
      expect(history.series(leaves, "30d", monthOn).points).toEqual([]);
    });
  });

  it("writes a week-old day of 5-minute means as one row of 30-minute means, and new hours over the day's other rows: one write a day, none deleted", async () => {
    await inFresh((history, storage) => {
      const halfHour = METRIC_RANGES["30d"].stepMs;
      const start = Math.floor((Date.now() - 10 * DAY) / DAY) * DAY;
      const vm = uuid();
      const crowd = crowdOf(CROWD);
      const points: MetricPoint[] = [];
      const writtenOn = new Map<number, number>(); // by day
      const tickAt = (b: number) => {
        const at = start + b * ROLLUP_STEP_MS;
        const tick = tickOf(at, { ...crowd(b % 5), [vm]: (b % 13) * 2.5 }, b % 7);
        points.push({ t: at, ...figures((b % 13) * 2.5) });
        const day = Math.floor(b / 288);
        const w = history.ingest({ intervalMs: 10_000, ticks: [tick] }, at + 1_000).rowsWritten;
        writtenOn.set(day, (writtenOn.get(day) ?? 0) + w);
      };
      // Nine days of a tick every 5 minutes: day 0 leaves the week as day 8 begins.
      for (let b = 0; b < 9 * 288; b++) tickAt(b);
      // Day 8 wrote what day 7 did, plus day 0's row of means and where the days so written end: not
      // a rewrite per hour, no deletion.
      expect(writtenOn.get(8)! - writtenOn.get(7)!).toBe(2);
      // Day 0 is one row; day 8's hours took the place of its 23 others (one more hour, one more row).
      expect(steps(storage, "metric_bucket")).toEqual({ 0: 8 * 24, [halfHour]: 1 });
      const answersAt = (now: number) => {
        for (const range of ["7d", "30d"] as const) {
          const closed = points.filter((p) => p.t < now - ROLLUP_STEP_MS && p.t >= now - METRIC_RANGES[range].spanMs);
          expect(history.series(vm, range, now)).toEqual(seriesAnswer(range, now, closed, ROLLUP_STEP_MS));
        }
      };
      answersAt(start + 9 * DAY);
      // Day 1 leaves the week: its hours shadowed by its row, not read twice.
      tickAt(9 * 288);
      tickAt(9 * 288 + 1);
      expect(steps(storage, "metric_bucket")[halfHour]).toBe(2);
      answersAt(start + 9 * DAY + 2 * ROLLUP_STEP_MS);
    });
  });

  it("at steady state writes each new hour over one past retention: no deletes, as many rows held, the day view intact", async () => {
    await inFresh((history, storage) => {
      const crowd = crowdOf(CROWD);
      // Hourly batches, each sent on the hour it ends (as the agent sends them), for 27 hours.
      const first = hourOf(Date.now()) - 27 * HOUR;
      const hourBatch = (h: number) => {
        const from = first + h * HOUR;
        const ticks = Array.from({ length: 360 }, (_, k) => tickOf(from + k * 10_000, crowd((h + k) % 5), h));
        return history.ingest({ intervalMs: 10_000, ticks }, from + HOUR + 1_000, true).rowsWritten;
      };
      const written: number[] = [];
      const held: number[] = [];
      for (let h = 0; h < 27; h++) {
        written.push(hourBatch(h));
        held.push(history.counts().minuteRows);
      }
      // Past the first day: the hour's raw row written over the expired one, its row of means, and the
      // hour that ended two hours ago rewritten as minute means. Nothing deleted, nothing grows.
      expect(written.slice(-2)).toEqual([3, 3]);
      expect(held.at(-1)).toBe(held.at(-2));
      expect(storage.sql.exec("SELECT min(t) AS t FROM metric_minute").one().t).toBeGreaterThanOrEqual(
        hourOf(first + 27 * HOUR - 25 * HOUR),
      );
      // The day view reads every minute of the last 24 hours, the node's figure the hour's number.
      const now = first + 27 * HOUR;
      const day = history.series(null, "24h", now).points.filter((p) => p.cpuPct !== null);
      expect(day).toHaveLength(24 * 60);
      expect(day[0].cpuPct).toBe(3);
      expect(day.at(-1)?.cpuPct).toBe(26);
    });
  });

  it("keeps a small node's hours as they are: rewriting them would cost more than holding them", async () => {
    await inFresh((history, storage) => {
      const start = hourOf(Date.now() - 12 * HOUR);
      const vm = uuid();
      // The node's totals and one VM, for four hours and ten minutes.
      for (let k = 0; k < 4 * 360 + 60; k += 60) {
        const ticks = Array.from({ length: 60 }, (_, j) => tickOf(start + (k + j) * 10_000, { [vm]: (k + j) % 7 }, 1));
        history.ingest({ intervalMs: 10_000, ticks }, ticks.at(-1)!.t + 1_000);
      }
      expect(steps(storage, "metric_minute")).toEqual({ 0: 5 });
      expect(history.counts().raw).toBe(2 * (4 * 360 + 60));
      expect(history.series(vm, "24h", start + 4 * HOUR).points.filter((p) => p.cpuPct !== null)).toHaveLength(
        4 * 60 + 1,
      );
    });
  });

  it("reads an object written with a row per 5-minute bucket, and merges its hour into one row at the next roll-up", async () => {
    await inFresh((_, storage) => {
      const hour = hourOf(Date.now() - 2 * DAY);
      const vm = uuid();
      // The tables as the layout before had them: no step column, a row per bucket of means, its
      // figures float64.
      const data = DATA_COLUMN_NAMES.map((c) => `${c} BLOB NOT NULL`).join(", ");
      storage.sql.exec("CREATE TABLE metric_series (id INTEGER PRIMARY KEY, series TEXT NOT NULL UNIQUE)");
      storage.sql.exec(
        `CREATE TABLE metric_minute (t INTEGER PRIMARY KEY, n INTEGER NOT NULL, slots INTEGER NOT NULL, head BLOB NOT NULL, ${data})`,
      );
      storage.sql.exec(
        `CREATE TABLE metric_bucket (t INTEGER PRIMARY KEY, n INTEGER NOT NULL, slots INTEGER NOT NULL, head BLOB NOT NULL, ${data}, seen BLOB NOT NULL)`,
      );
      storage.sql.exec("INSERT INTO metric_series (id, series) VALUES (1, ?)", vm);
      for (let b = 0; b < 4; b++) {
        const at = hour + b * ROLLUP_STEP_MS;
        const block = encodeBlock(new Map([[at, new Map([[0, figuresArray(figures(10.01 + b))]])]]), [at], 8);
        storage.sql.exec(
          `INSERT INTO metric_bucket (t, n, slots, head, ${DATA_COLUMN_NAMES.join(", ")}, seen) VALUES (?, ?, ?, ?${", ?".repeat(DATA_COLUMN_NAMES.length)}, ?)`,
          at,
          block.n,
          block.slots,
          block.head,
          ...block.data,
          new Uint32Array([at / ROLLUP_STEP_MS]).buffer,
        );
      }
      const history = new MetricsHistory(storage);
      const asked = hour + 30 * 60_000;
      const week = () => cpuOf(history.series(vm, "7d", asked).points);
      expect(week()).toEqual([10.01, 11.01, 12.01, 13.01, null]);
      // Samples of the hour's fifth bucket, closed by a later tick: the hour becomes one row, of
      // float32 figures.
      const at = hour + 4 * ROLLUP_STEP_MS;
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(at, { [vm]: 14.01 })] }, at);
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(at + ROLLUP_STEP_MS, { [vm]: 15 })] }, at + ROLLUP_STEP_MS);
      expect(history.counts()).toMatchObject({ bucketRows: 1, rollup: 5 });
      expect(steps(storage, "metric_bucket")).toEqual({ 0: 1 });
      expect(storage.sql.exec("SELECT w FROM metric_bucket").toArray()).toEqual([{ w: 4 }]);
      expect(cpuOf(history.series(vm, "7d", asked).points)).toEqual([10.01, 11.01, 12.01, 13.01, 14.01]);
    });
  });
});
