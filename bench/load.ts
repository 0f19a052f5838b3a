// Load generators for the benches, bounded in count and time, loopback only: autocannon for many
// connections (throughput, non-2xx), and a sequential keep-alive loop timed with performance.now()
// for one connection (autocannon's latency histogram has whole-millisecond resolution, too coarse
// for "health's p50 + 2 ms").
import autocannon from "autocannon";

export type LoadResult = { requests: number; rps: number; p50: number; p99: number; non2xx: number; errors: number; statuses: Record<string, number> };

export type Target = { url: string; method?: "GET" | "POST"; headers?: Record<string, string> };

export const percentile = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

/** One connection, one request at a time: at most `count` requests or `maxMs`, whichever first. */
export async function sequential(t: Target, count: number, maxMs = 20_000, warmup = 20): Promise<LoadResult> {
  const statuses: Record<string, number> = {};
  const times: number[] = [];
  let non2xx = 0;
  let errors = 0;
  const once = async () => {
    const t0 = performance.now();
    try {
      const res = await fetch(t.url, { method: t.method ?? "GET", headers: t.headers });
      await res.arrayBuffer();
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status < 200 || res.status > 299) non2xx++;
    } catch {
      errors++;
    }
    return performance.now() - t0;
  };
  for (let i = 0; i < warmup; i++) await once();
  for (const k of Object.keys(statuses)) delete statuses[k];
  non2xx = errors = 0;
  const started = performance.now();
  while (times.length < count && performance.now() - started < maxMs) times.push(await once());
  const elapsed = (performance.now() - started) / 1000;
  return { requests: times.length, rps: times.length / elapsed, p50: percentile(times, 50), p99: percentile(times, 99), non2xx, errors, statuses };
}

/** `connections` concurrent keep-alive connections for `seconds` (autocannon's programmatic API). */
export async function concurrent(t: Target, connections: number, seconds: number): Promise<LoadResult> {
  const r = await autocannon({ url: t.url, method: t.method ?? "GET", headers: t.headers, connections, duration: seconds, timeout: 30 });
  const total = r["1xx"] + r["2xx"] + r["3xx"] + r["4xx"] + r["5xx"];
  const statuses: Record<string, number> = {};
  for (const [code, s] of Object.entries(r.statusCodeStats as Record<string, { count: number }>)) statuses[code] = s.count;
  return { requests: total, rps: total / r.duration, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors + r.timeouts, statuses };
}
