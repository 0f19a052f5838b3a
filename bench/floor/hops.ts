// Bench: what each platform hop costs on its own, from the floor probe (bench/floor/worker.ts), p50 at
// one connection, each beside the hop it adds to; all hops take turns request by request, so they
// see the same machine. Subtracting these from a product route's time says which part of it is
// ours: see the README's "Where the time goes at the edge".
import { interleaved, type Target } from "../load.ts";
import type { BenchRow } from "../table.ts";
import { FLOOR_READ_ID, type FloorProbe } from "./probe.ts";

const REQUESTS = 200;
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

type Hop = { name: string; path: string; method?: "POST"; over?: string };

export async function benchFloorHops(floor: FloorProbe, logAnswerBytes: number): Promise<BenchRow[]> {
  const n = logAnswerBytes;
  const hops: Hop[] = [
    { name: "trivial JSON route", path: "/trivial" },
    { name: "SHA-256 of the bearer token + Map lookup", path: "/auth", over: "trivial JSON route" },
    { name: "D1 point read (10,000 rows)", path: `/items/${FLOOR_READ_ID}`, over: "trivial JSON route" },
    { name: "D1 write (one INSERT)", path: "/write", method: "POST", over: "trivial JSON route" },
    {
      name: "D1 batch: INSERT…SELECT + UPDATE…RETURNING",
      path: "/write-batch",
      method: "POST",
      over: "D1 write (one INSERT)",
    },
    { name: "Durable Object RPC, no socket", path: "/rpc", method: "POST", over: "trivial JSON route" },
    {
      name: "DO + WebSocket echo, 0 bytes",
      path: "/echo?bytes=0",
      method: "POST",
      over: "Durable Object RPC, no socket",
    },
    {
      name: "DO + WebSocket echo + DO storage (in-flight entry, alarm)",
      path: "/echo/kept?bytes=0",
      method: "POST",
      over: "DO + WebSocket echo, 0 bytes",
    },
    {
      name: "DO + WebSocket echo + DO storage (in-flight entry only)",
      path: "/echo/put?bytes=0",
      method: "POST",
      over: "DO + WebSocket echo, 0 bytes",
    },
    {
      name: "DO + WebSocket echo + DO storage (alarm only)",
      path: "/echo/alarm?bytes=0",
      method: "POST",
      over: "DO + WebSocket echo, 0 bytes",
    },
    {
      name: "DO + WebSocket echo + D1 write",
      path: "/echo-write",
      method: "POST",
      over: "DO + WebSocket echo, 0 bytes",
    },
    {
      name: "DO + WebSocket echo + DO storage (in-flight entry, alarm) + D1 write",
      path: "/echo-write/kept",
      method: "POST",
      over: "DO + WebSocket echo + D1 write",
    },
    {
      name: `DO + WebSocket echo, ${n} bytes back`,
      path: `/echo?bytes=${n}`,
      method: "POST",
      over: "DO + WebSocket echo, 0 bytes",
    },
    {
      name: `DO + WebSocket echo, ${n} bytes back, kept in DO storage`,
      path: `/echo/stored?bytes=${n}`,
      method: "POST",
      over: `DO + WebSocket echo, ${n} bytes back`,
    },
    {
      name: `DO + WebSocket echo, ${n} bytes in a JSON frame, JSON answer`,
      path: `/echo-json?bytes=${n}`,
      method: "POST",
      over: `DO + WebSocket echo, ${n} bytes back`,
    },
    {
      name: `DO + WebSocket echo, ${n} bytes in two JSON frames (chunk, result), JSON answer`,
      path: `/echo-json/chunked?bytes=${n}`,
      method: "POST",
      over: `DO + WebSocket echo, ${n} bytes in a JSON frame, JSON answer`,
    },
  ];
  const targets: Target[] = hops.map((hop) => ({
    url: `${floor.url}${hop.path}`,
    method: hop.method,
    headers: { authorization: "Bearer qxa_bench-floor-token" },
  }));
  const results = await interleaved(targets, REQUESTS, 60_000);
  const p50s = new Map<string, number>();
  const rows: BenchRow[] = [];
  for (const [i, hop] of hops.entries()) {
    const r = results[i];
    if (r.non2xx + r.errors > 0) throw new Error(`floor hop ${hop.path}: ${r.non2xx} non-2xx, ${r.errors} errors`);
    p50s.set(hop.name, r.p50);
    const base = hop.over === undefined ? undefined : p50s.get(hop.over);
    rows.push({
      name: `floor: ${hop.name} p50, 1 conn`,
      value: round(r.p50),
      unit: "ms",
      ...(base === undefined
        ? {}
        : { baseline: round(base), ratio: round(r.p50 / base), note: `${round(r.p50 - base)} ms over "${hop.over}"` }),
    });
  }
  return rows;
}
