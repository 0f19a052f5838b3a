// Load generators for the benches, bounded in count and time, loopback only: autocannon for many
// connections (throughput, non-2xx), and a sequential keep-alive loop timed with performance.now()
// for one connection (autocannon's latency histogram has whole-millisecond resolution, too coarse
// for "the floor's p50 + 1 ms"). Figures that are compared with each other are measured interleaved
// (request by request, or in alternating rounds), so a burst of load from elsewhere hits all of them.
import autocannon from "autocannon";

export type LoadResult = {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  statuses: Record<string, number>;
};

export type Target = { url: string; method?: "GET" | "POST"; headers?: Record<string, string> };

export const percentile = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

/** One target's timed requests, one at a time on a keep-alive connection. */
class Timed {
  readonly statuses: Record<string, number> = {};
  readonly times: number[] = [];
  non2xx = 0;
  errors = 0;
  busyMs = 0;
  private readonly t: Target;

  constructor(t: Target) {
    this.t = t;
  }

  async once(record = true): Promise<void> {
    const t0 = performance.now();
    let status = 0;
    try {
      const res = await fetch(this.t.url, { method: this.t.method ?? "GET", headers: this.t.headers });
      await res.arrayBuffer();
      status = res.status;
    } catch {
      status = -1;
    }
    const ms = performance.now() - t0;
    if (!record) return;
    if (status === -1) this.errors++;
    else {
      this.statuses[status] = (this.statuses[status] ?? 0) + 1;
      if (status < 200 || status > 299) this.non2xx++;
    }
    this.times.push(ms);
    this.busyMs += ms;
  }

  result(elapsedMs = this.busyMs): LoadResult {
    const { times, non2xx, errors, statuses } = this;
    return {
      requests: times.length,
      rps: times.length / (elapsedMs / 1000),
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      non2xx,
      errors,
      statuses,
    };
  }
}

/** One connection, one request at a time: at most `count` requests or `maxMs`, whichever first. */
export async function sequential(t: Target, count: number, maxMs = 20_000, warmup = 20): Promise<LoadResult> {
  const timed = new Timed(t);
  for (let i = 0; i < warmup; i++) await timed.once(false);
  const started = performance.now();
  while (timed.times.length < count && performance.now() - started < maxMs) await timed.once();
  return timed.result(performance.now() - started);
}

/** Like `sequential` for several targets at once, taking turns request by request (a, b, a, b…), so
 *  that each sees the same machine; at most `count` requests each or `maxMs` in all. */
export async function interleaved(ts: Target[], count: number, maxMs = 40_000, warmup = 20): Promise<LoadResult[]> {
  const all = ts.map((t) => new Timed(t));
  for (let i = 0; i < warmup; i++) for (const timed of all) await timed.once(false);
  const started = performance.now();
  for (let i = 0; i < count && performance.now() - started < maxMs; i++) for (const timed of all) await timed.once();
  return all.map((timed) => timed.result());
}

/** `concurrent` for several targets in alternating rounds (a, b, a, b…, `rounds` of `seconds` each),
 *  summed per target: a burst of load from elsewhere falls on all of them alike. */
export async function alternating(
  ts: Target[],
  connections: number,
  seconds: number,
  rounds: number,
): Promise<LoadResult[]> {
  const sums = ts.map((): LoadResult & { seconds: number } => ({
    requests: 0,
    rps: 0,
    p50: NaN,
    p99: NaN,
    non2xx: 0,
    errors: 0,
    statuses: {},
    seconds: 0,
  }));
  for (let round = 0; round < rounds; round++) {
    for (const [i, t] of ts.entries()) {
      const r = await concurrent(t, connections, seconds);
      const sum = sums[i];
      sum.requests += r.requests;
      sum.seconds += r.requests > 0 && r.rps > 0 ? r.requests / r.rps : seconds;
      sum.non2xx += r.non2xx;
      sum.errors += r.errors;
      for (const [code, n] of Object.entries(r.statuses)) sum.statuses[code] = (sum.statuses[code] ?? 0) + n;
      // p50 / p99 of the last round only: throughput is what these runs are for
      sum.p50 = r.p50;
      sum.p99 = r.p99;
    }
  }
  return sums.map(({ seconds: s, ...sum }) => ({ ...sum, rps: sum.requests / s }));
}

/** `connections` concurrent keep-alive connections for `seconds` (autocannon's programmatic API). */
export async function concurrent(t: Target, connections: number, seconds: number): Promise<LoadResult> {
  const r = await autocannon({
    url: t.url,
    method: t.method ?? "GET",
    headers: t.headers,
    connections,
    duration: seconds,
    timeout: 30,
  });
  const total = r["1xx"] + r["2xx"] + r["3xx"] + r["4xx"] + r["5xx"];
  const statuses: Record<string, number> = {};
  for (const [code, s] of Object.entries(r.statusCodeStats as Record<string, { count: number }>))
    statuses[code] = s.count;
  return {
    requests: total,
    rps: total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors + r.timeouts,
    statuses,
  };
}
