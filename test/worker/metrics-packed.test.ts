// The packed metrics history in the node's Durable Object SQLite: one row per hour for every
// series' raw samples (an hour of 100 VMs in one row of float32 figures; in parts when an hour is too
// big for a row) and one per hour for their 5-minute means, whatever the VM count; an hour sent in
// many frames or a tick at a time merges into its rows, a batch rewriting only the last part;
// retention drops whole rows; a VM that appears or vanishes mid-minute, an offline stretch and a VM
// re-homed to another node answer as the row-per-sample store did; figures at the frame's bounds and
// nulls keep; rows of float64 figures an object wrote before answer beside float32 ones; an object
// still holding row-per-sample tables answers from them until they expire, then drops them.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  FIELD_MAX,
  METRIC_FIELDS,
  METRICS_FRAME_SAMPLES,
  ROLLUP_STEP_MS,
  type MetricFigures,
} from "../../protocol/metrics.ts";
import { blockBytes, DATA_COLUMN_NAMES, encodeBlock, figuresArray } from "../../worker/session/metric-blocks.ts";
import { MetricsHistory } from "../../worker/session/metrics.ts";
import type { NodeSession } from "../../worker/session/node-session.ts";
import { bucketAgo, cpuOf, DAY, figures, hourOf, inFreshObject, tickOf } from "./metrics-history.ts";
import { agentsClosedAfterEach, api, eventually, json, TestAgent, uuid, vmInfo } from "./support.ts";

const agents = agentsClosedAfterEach();
const inFresh = (fn: Parameters<typeof inFreshObject>[1]) => inFreshObject("packed", fn);
/** The raw rows held, oldest first: each one's figure width and bytes (every BLOB column). */
const rawRows = (storage: DurableObjectStorage) =>
  storage.sql
    .exec<{ w: number; bytes: number }>(
      `SELECT w, ${["head", ...DATA_COLUMN_NAMES].map((c) => `length(${c})`).join(" + ")} AS bytes FROM metric_minute ORDER BY t`,
    )
    .toArray();

describe("packed metrics storage", () => {
  it("stores an hour of many VMs as one row, and rolls each 5-minute bucket into the hour's one row of means", async () => {
    await inFresh((history) => {
      const start = hourOf(bucketAgo(2));
      const vms = Array.from({ length: 50 }, () => uuid());
      const minute = (m: number) => ({
        intervalMs: 10_000,
        ticks: Array.from({ length: 6 }, (_, k) =>
          tickOf(start + m * 60_000 + k * 10_000, Object.fromEntries(vms.map((v, i) => [v, i + m])), 7),
        ),
      });
      const written = [0, 1, 2, 3, 4, 5].map((m) => history.ingest(minute(m), start + m * 60_000 + 50_000).rowsWritten);
      // 306 samples a minute: the first minute adds the 51 series names; then each minute rewrites the
      // hour's row, and a bucket's means row is written with its last tick (the next one, an interval
      // later, falls in the next bucket). (The Durable Object counts a keyed row as two: the row and
      // its index entry.)
      expect(written[0]).toBe(51 * 2 + 1 + 2); // names, the hour's row, intervalMs
      expect(written.slice(1, 4)).toEqual([1, 1, 1]);
      expect(written[4]).toBe(1 + 1); // the hour's row, bucket means
      expect(written[5]).toBe(1);
      expect(history.counts()).toMatchObject({ raw: 6 * 6 * 51, minuteRows: 1, rollup: 51, bucketRows: 1 });
      // The means: VM i had i + m over minutes 0-4 of the bucket, so i + 2.
      const week = history.series(vms[10], "7d", start + 400_000);
      expect(cpuOf(week.points.filter((p) => p.cpuPct !== null))).toEqual([12]);
      expect(week.points.find((p) => p.cpuPct !== null)).toMatchObject({
        memUsedMiB: 100,
        netRxBps: 10,
        netTxBps: null,
      });
      expect(cpuOf(history.series(null, "7d", start + 400_000).points.filter((p) => p.cpuPct !== null))).toEqual([7]);
    });
  });

  it("holds an hour of 100 VMs sampled every 10 s in one row of float32 figures, sent in the agent's frames", async () => {
    await inFresh((history, storage) => {
      const start = hourOf(bucketAgo(2));
      const vms = Array.from({ length: 100 }, () => uuid());
      const t = (k: number) => start + k * 10_000;
      // figures with two decimals, as the agent rounds them
      const cpu = (i: number, k: number) => ((i * 7 + k * 13) % 10_000) / 100;
      const tick = (k: number) =>
        tickOf(t(k), Object.fromEntries(vms.map((v, i) => [v, cpu(i, k)])), k % 50, (c) => figures(c, 5e4 + c));
      const perFrame = METRICS_FRAME_SAMPLES / vms.length;
      for (let first = 0; first < 360; first += perFrame)
        history.ingest(
          { intervalMs: 10_000, ticks: Array.from({ length: perFrame }, (_, j) => tick(first + j)) },
          t(359) + 1_000,
        );
      // 101 series (the VMs and the node's totals) × 360 ticks: ~1.35 MB, under a row's 2 MB.
      const rows = rawRows(storage);
      expect(rows).toEqual([{ w: 4, bytes: blockBytes(360, 101) }]);
      expect(rows[0].bytes).toBeGreaterThan(1_300_000);
      expect(history.counts()).toMatchObject({ raw: 360 * 101, minuteRows: 1 });
      const now = t(359) + 1_000;
      for (const i of [0, 63, 64, 99]) {
        const points = history.series(vms[i], "1h", now).points;
        expect(cpuOf(points)).toEqual(Array.from({ length: 360 }, (_, k) => cpu(i, k)));
        const netRx = (k: number) => Math.round((5e4 + cpu(i, k)) * 100) / 100;
        expect(points.map((p) => p.netRxBps)).toEqual(Array.from({ length: 360 }, (_, k) => netRx(k)));
      }
    });
  });

  it("takes an hour's batch of a 300-VM node in frames: each appends to the hour's last part, the hour stays whole", async () => {
    await inFresh((history, storage) => {
      const start = hourOf(bucketAgo(2));
      const vms = Array.from({ length: 300 }, () => uuid());
      const t = (k: number) => start + k * 10_000;
      const cpu = (i: number, k: number) => (i + k) % 100;
      const tick = (k: number) => tickOf(t(k), Object.fromEntries(vms.map((v, i) => [v, cpu(i, k)])), k % 50);
      const written: number[] = [];
      // An agent nobody watches sends an hour at a time, METRICS_FRAME_SAMPLES VM samples a frame.
      const perFrame = METRICS_FRAME_SAMPLES / vms.length;
      for (let first = 0; first < 360; first += perFrame) {
        const ticks = Array.from({ length: perFrame }, (_, j) => tick(first + j));
        written.push(history.ingest({ intervalMs: 10_000, ticks }, t(359) + 1_000).rowsWritten);
      }
      // An hour of 301 series is several parts (~4 MB, a row holds at most 2 MB), each filled close
      // to the limit; each later frame rewrites the last part and at most starts the next, never the
      // whole hour (nor a row a minute), and writes the means of the bucket its ticks closed.
      const { minuteRows } = history.counts();
      expect(minuteRows).toBeGreaterThan(2);
      const rows = rawRows(storage);
      expect(Math.max(...rows.map((r) => r.bytes))).toBeGreaterThan(1_700_000);
      expect(Math.max(...rows.map((r) => r.bytes))).toBeLessThan(1_900_000);
      for (const w of written.slice(2)) expect(w).toBeLessThanOrEqual(2 + 1);
      expect(history.counts()).toMatchObject({ raw: 360 * 301 });
      const now = t(359) + 1_000;
      expect(cpuOf(history.series(vms[0], "1h", now).points)).toEqual(Array.from({ length: 360 }, (_, k) => cpu(0, k)));
      expect(cpuOf(history.series(vms[299], "1h", now).points)).toEqual(
        Array.from({ length: 360 }, (_, k) => cpu(299, k)),
      );
      // A tick re-sent out of order (after a reconnect) merges into the whole hour: the parts stay as many.
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(t(100), { [vms[0]]: 77 })] }, now);
      expect(history.series(vms[0], "1h", now).points[100].cpuPct).toBe(77);
      expect(history.counts()).toMatchObject({ minuteRows, raw: 360 * 301 });
      // The next hour's first frame closes the last bucket: twelve buckets of means, each of 301
      // series, in the hour's one row of means.
      history.ingest({ intervalMs: 10_000, ticks: [tick(360)] }, t(360) + 1_000);
      expect(history.counts()).toMatchObject({ bucketRows: 1, rollup: 12 * 301 });
      const day = history.series(vms[5], "24h", t(360) + 1_000).points.filter((p) => p.cpuPct !== null);
      expect(day.length).toBe(61);
    });
  });

  it("drops whole rows: hours after a day, bucket means after 30 days", async () => {
    await inFresh((history) => {
      const start = hourOf(bucketAgo(40));
      const vmId = uuid();
      const put = (t: number, cpu: number) =>
        history.ingest({ intervalMs: 10_000, ticks: [tickOf(t, { [vmId]: cpu }, 1)] }, t);
      for (let i = 0; i <= 60; i++) put(start + i * 10_000, 10);
      expect(history.counts()).toMatchObject({ minuteRows: 1, bucketRows: 1, rollup: 4 });
      // Two days on: the old hour is gone in one statement, counted as the rows it was.
      const later = start + 2 * DAY;
      const cost = put(later, 20);
      expect(history.counts()).toMatchObject({ minuteRows: 1, bucketRows: 1, rollup: 6, raw: 2 });
      expect(cost.rowsWritten).toBe(1 + 1 + 1); // the hour, its row of means with the last bucket, the old hour deleted
      // 35 days on: the buckets of 40 days ago are gone, the one of 38 days ago too.
      put(start + 35 * DAY, 30);
      put(start + 35 * DAY + ROLLUP_STEP_MS, 30);
      expect(history.counts()).toMatchObject({ minuteRows: 1, raw: 4, bucketRows: 1, rollup: 2 });
      expect(
        cpuOf(history.series(vmId, "30d", start + 35 * DAY + ROLLUP_STEP_MS).points.filter((p) => p.cpuPct !== null)),
      ).toEqual([30]);
    });
  });

  it("answers an offline stretch as a gap, and a VM that appears or vanishes mid-minute from its own samples", async () => {
    await inFresh((history) => {
      const start = bucketAgo(1) + 120_000;
      const [stays, appears, vanishes] = [uuid(), uuid(), uuid()];
      const ticks = Array.from({ length: 6 }, (_, k) =>
        tickOf(start + k * 10_000, {
          [stays]: 50,
          ...(k >= 3 ? { [appears]: 60 + k } : {}),
          ...(k < 2 ? { [vanishes]: 5 } : {}),
        }),
      );
      history.ingest({ intervalMs: 10_000, ticks }, start + 60_000);
      // Back after 20 minutes offline.
      const back = start + 21 * 60_000;
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(back, { [stays]: 70 })] }, back);
      const now = back + 10_000;
      const hour = (vmId: string) => history.series(vmId, "1h", now).points;
      expect(cpuOf(hour(appears))).toEqual([63, 64, 65, null]);
      expect(hour(appears)[0].t).toBe(start + 30_000);
      expect(cpuOf(hour(vanishes))).toEqual([5, 5, null]);
      expect(cpuOf(hour(stays))).toEqual([50, 50, 50, 50, 50, 50, null, 70]);
      // The 24 h view: one point per minute, the mean of the samples the VM had in it.
      expect(cpuOf(history.series(appears, "24h", now).points)).toEqual([64, null]);
      expect(cpuOf(history.series(stays, "24h", now).points)).toEqual([50, null, 70]);
      expect(history.series(uuid(), "1h", now).points).toEqual([]);
    });
  });

  it("merges a minute sent in several frames, a tick at a time or re-sent, into its one row", async () => {
    await inFresh((history) => {
      const start = bucketAgo(1) + 60_000;
      const [a, b] = [uuid(), uuid()];
      const t = (k: number) => start + k * 10_000;
      history.ingest(
        { intervalMs: 10_000, ticks: [tickOf(t(0), { [a]: 1, [b]: 2 }, 9), tickOf(t(1), { [a]: 1 })] },
        t(1),
      );
      // A tick at a time, as a watched node sends them: each frame rewrites the minute's one row.
      for (const k of [2, 3]) {
        const cost = history.ingest({ intervalMs: 10_000, ticks: [tickOf(t(k), { [a]: 1 + k, [b]: 2 })] }, t(k));
        expect(cost.rowsWritten).toBe(1);
      }
      // The same tick again (a frame re-sent after a reconnect) replaces, B's sample at t(1) is added.
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(t(3), { [a]: 40 }), tickOf(t(1), { [b]: 2 })] }, t(3));
      // A future-stamped tick (a skewed clock) is dropped.
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(t(4) + 3_600_000, { [a]: 99 })] }, t(4));
      expect(history.counts()).toMatchObject({ minuteRows: 1, raw: 4 + 4 + 1 });
      const now = t(4);
      expect(cpuOf(history.series(a, "1h", now).points)).toEqual([1, 1, 3, 40]);
      expect(cpuOf(history.series(b, "1h", now).points)).toEqual([2, 2, 2, 2]);
      expect(cpuOf(history.series(null, "1h", now).points)).toEqual([9, null]); // silent since
      expect(cpuOf(history.series(a, "24h", now).points)).toEqual([11.25]);
    });
  });

  it("keeps figures at the bounds a frame may carry, and nulls, through raw rows and their means", async () => {
    await inFresh((history) => {
      const start = bucketAgo(1);
      const [top, blank] = [uuid(), uuid()];
      const nulls = Object.fromEntries(METRIC_FIELDS.map((f) => [f, null])) as MetricFigures;
      const put = (t: number) =>
        history.ingest(
          {
            intervalMs: 10_000,
            ticks: [
              {
                t,
                vms: [
                  { vmId: top, ...FIELD_MAX },
                  { vmId: blank, ...nulls },
                ],
              },
            ],
          },
          t,
        );
      put(start);
      put(start + 10_000);
      put(start + ROLLUP_STEP_MS); // closes the first bucket
      const now = start + ROLLUP_STEP_MS;
      // float32 holds them (its range is far wider), whole numbers up to 2^24 exactly, 1e15 to ~7 digits
      const held = (f: (typeof METRIC_FIELDS)[number]) => Math.fround(FIELD_MAX[f]);
      for (const range of ["1h", "7d"] as const) {
        const point = history.series(top, range, now).points[0];
        for (const f of METRIC_FIELDS) {
          expect(point[f], `${range} ${f}`).toBe(held(f));
          expect(Math.abs(point[f]! - FIELD_MAX[f])).toBeLessThanOrEqual(FIELD_MAX[f] * 2 ** -24);
        }
        expect(point.cpuPct).toBe(FIELD_MAX.cpuPct);
        expect(point.memUsedMiB).toBe(FIELD_MAX.memUsedMiB);
        // a VM sampled with no figures is a point of nulls
        expect(history.series(blank, range, now).points[0]).toEqual({ t: start, ...nulls });
      }
    });
  });

  it("reads rows of float64 figures an object wrote before beside float32 ones in one answer, and rewrites them as float32 when merging", async () => {
    await inFresh((_, storage) => {
      const hour = hourOf(bucketAgo(1));
      const vm = uuid();
      // The tables as an object wrote them before float32: no width column, float64 figures.
      const data = DATA_COLUMN_NAMES.map((c) => `${c} BLOB NOT NULL`).join(", ");
      storage.sql.exec("CREATE TABLE metric_series (id INTEGER PRIMARY KEY, series TEXT NOT NULL UNIQUE)");
      storage.sql.exec(
        `CREATE TABLE metric_minute (t INTEGER PRIMARY KEY, n INTEGER NOT NULL, slots INTEGER NOT NULL, head BLOB NOT NULL, ${data}, step INTEGER NOT NULL DEFAULT 0)`,
      );
      storage.sql.exec(
        `CREATE TABLE metric_bucket (t INTEGER PRIMARY KEY, n INTEGER NOT NULL, slots INTEGER NOT NULL, head BLOB NOT NULL, ${data}, seen BLOB NOT NULL, step INTEGER NOT NULL DEFAULT 0)`,
      );
      storage.sql.exec("INSERT INTO metric_series (id, series) VALUES (1, ?)", vm);
      // The hour's last minute, with a rate float32 cannot hold exactly.
      const big = 987_654_321.25;
      const old = (cpu: number): MetricFigures => ({ ...figures(cpu), diskReadBps: big });
      const t = (k: number) => hour + k * 10_000;
      const block = encodeBlock(
        new Map(Array.from({ length: 6 }, (_, j) => [t(354 + j), new Map([[0, figuresArray(old(10.01 + j))]])])),
        undefined,
        8,
      );
      storage.sql.exec(
        `INSERT INTO metric_minute (t, n, slots, head, ${DATA_COLUMN_NAMES.join(", ")}) VALUES (?, ?, ?, ?${", ?".repeat(DATA_COLUMN_NAMES.length)})`,
        hour,
        block.n,
        block.slots,
        block.head,
        ...block.data,
      );
      const history = new MetricsHistory(storage);
      // The next hour's first minute, as float32 rows; its last tick closes the old hour's last bucket.
      const next = (cpu: number): MetricFigures => ({ ...figures(cpu), diskReadBps: big });
      for (let k = 360; k < 366; k++)
        history.ingest({ intervalMs: 10_000, ticks: [tickOf(t(k), { [vm]: k - 340.01 }, undefined, next)] }, t(k));
      expect(rawRows(storage).map((r) => r.w)).toEqual([8, 4]);
      const now = t(365);
      const points = history.series(vm, "1h", now).points;
      expect(cpuOf(points)).toEqual([
        10.01, 11.01, 12.01, 13.01, 14.01, 15.01, 19.99, 20.99, 21.99, 22.99, 23.99, 24.99,
      ]);
      // each row read at its own width: the old one's rate exact, the new one's as float32 holds it
      expect(points.map((p) => p.diskReadBps)).toEqual([...Array(6).fill(big), ...Array(6).fill(Math.fround(big))]);
      // The old hour's last bucket, rolled up from the float64 row into a row of float32 means.
      const week = history.series(vm, "7d", now).points;
      expect(week).toHaveLength(1);
      expect(week[0]).toMatchObject({ t: hour + 55 * 60_000, cpuPct: 12.51, diskReadBps: Math.fround(big) });
      expect(storage.sql.exec("SELECT w FROM metric_bucket").toArray()).toEqual([{ w: 4 }]);
      // A late tick for the old hour merges into it: rewritten as float32, its answers the same but
      // for the rate float32 cannot hold.
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(t(353), { [vm]: 9.01 }, undefined, old)] }, now);
      expect(rawRows(storage).map((r) => r.w)).toEqual([4, 4]);
      const merged = history.series(vm, "1h", now).points;
      expect(cpuOf(merged)).toEqual([9.01, ...cpuOf(points)]);
      expect(new Set(merged.map((p) => p.diskReadBps))).toEqual(new Set([Math.fround(big)]));
    });
  });

  it("keeps a re-homed VM's history with the node that sampled it: the new node answers from when it took over", async () => {
    const [from, to] = [await TestAgent.forNewNode(), await TestAgent.forNewNode()];
    agents.push(from.agent, to.agent);
    const vm = vmInfo("re-homed metrics", "running");
    from.agent.inventory([vm]);
    await eventually(async () => expect((await json(await api(`/api/vms/${vm.uuid}`))).vm.node_id).toBe(from.nodeId));
    const now = Date.now();
    const send = (agent: TestAgent, t: number, cpu: number) =>
      agent.send({
        type: "metrics",
        id: `m-${t}`,
        payload: { intervalMs: 10_000, ticks: [tickOf(t, { [vm.uuid]: cpu })] },
      });
    send(from.agent, now - 30_000, 11);
    send(from.agent, now - 20_000, 11);
    // (a trailing gap may follow, depending on when the answer is read)
    const answer = async () =>
      cpuOf((await json(await api(`/api/vms/${vm.uuid}/metrics?range=1h`))).points).filter((v) => v !== null);
    await eventually(async () => expect(await answer()).toEqual([11, 11]));

    const moved = await json(await api(`/api/vms/${vm.uuid}/rehome`, { json: { node_id: to.nodeId } }));
    expect(moved.vm.node_id).toBe(to.nodeId);
    send(to.agent, now - 10_000, 22);
    send(to.agent, now, 22);
    await eventually(async () => expect(await answer()).toEqual([22, 22]));
    // The old node's object still holds the VM's samples from before the move.
    await runInDurableObject(env.NODE_SESSION.get(env.NODE_SESSION.idFromName(from.nodeId)), (s: NodeSession) => {
      expect(cpuOf(s.metrics.series(vm.uuid, "1h", now).points).filter((v) => v !== null)).toEqual([11, 11]);
    });
  });

  it("answers from the row-per-sample tables an object already holds, moves the samples not rolled up yet, and drops the tables once expired", async () => {
    await inFresh((history, storage) => {
      // a day ago, on a half hour (the 30 d view's step)
      const bucket = Math.floor(Date.now() / 1_800_000) * 1_800_000 - DAY;
      const [vmId, gone] = [uuid(), uuid()];
      const cols = "cpu, mem_used, mem_assigned, disk_rd, disk_wr, disk_rd_ops, disk_wr_ops, net_rx, net_tx";
      const defs = cols
        .split(", ")
        .map((c) => `${c} REAL`)
        .join(", ");
      // The tables as an object written before packing has them.
      for (const table of ["metric_raw", "metric_5m"])
        storage.sql.exec(
          `CREATE TABLE ${table} (series TEXT NOT NULL, t INTEGER NOT NULL, ${defs}, PRIMARY KEY (series, t)) WITHOUT ROWID`,
        );
      storage.sql.exec("CREATE TABLE metric_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
      storage.sql.exec("INSERT INTO metric_meta VALUES ('rolledTo', ?), ('intervalMs', 10000)", bucket);
      const row = (table: string, series: string, t: number, cpu: number) =>
        storage.sql.exec(
          `INSERT INTO ${table} (series, t, ${cols}) VALUES (?, ?, ?, 100, 512, 1, 2, 3, 4, NULL, NULL)`,
          series,
          t,
          cpu,
        );
      row("metric_5m", vmId, bucket - 1_800_000, 15);
      row("metric_5m", gone, bucket - 1_800_000, 1);
      for (let k = 0; k < 6; k++) row("metric_raw", vmId, bucket - 60_000 + k * 10_000, 10); // rolled up already
      for (let k = 0; k < 3; k++) row("metric_raw", vmId, bucket + k * 10_000, 20); // not yet

      // New samples in the same minute as the moved ones, then the bucket closes.
      const t = bucket + 30_000;
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(t, { [vmId]: 40 })] }, t);
      expect(history.counts()).toMatchObject({ raw: 6 + 4, minuteRows: 1, rollup: 2 });
      expect(cpuOf(history.series(vmId, "1h", t).points)).toEqual([10, 10, 10, 10, 10, 10, 20, 20, 20, 40]);
      expect(cpuOf(history.series(vmId, "24h", t).points)).toEqual([10, 25]);
      const close = bucket + ROLLUP_STEP_MS;
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(close, { [vmId]: 40 })] }, close);
      const week = history.series(vmId, "7d", close);
      expect(cpuOf(week.points)).toEqual([15, null, 25]);
      expect(cpuOf(history.series(gone, "30d", close).points.filter((p) => p.cpuPct !== null))).toEqual([1]);

      const tables = () =>
        storage.sql
          .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE name IN ('metric_raw', 'metric_5m')")
          .toArray()
          .map((r) => r.name)
          .sort();
      // A day on, the old raw table is dropped whole; 30 days on, the old means too.
      const dayOn = bucket + DAY + ROLLUP_STEP_MS;
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(dayOn, { [vmId]: 1 })] }, dayOn);
      expect(tables()).toEqual(["metric_5m"]);
      expect(cpuOf(history.series(vmId, "30d", dayOn).points.filter((p) => p.cpuPct !== null))).toEqual([15, 32.5]);
      const monthOn = bucket + 31 * DAY;
      history.ingest({ intervalMs: 10_000, ticks: [tickOf(monthOn, { [vmId]: 1 })] }, monthOn);
      expect(tables()).toEqual([]);
      // A history opened afresh on the same storage (the object woken again) reads the same.
      expect(new MetricsHistory(storage).series(vmId, "1h", monthOn + 10_000).points.length).toBeGreaterThan(0);
    });
  });
});
