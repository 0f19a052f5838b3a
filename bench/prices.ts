// Cloudflare's published list prices (Workers Paid plan) that the cost bench turns counts into
// dollars with, and the plan's monthly allowances. Read on PRICES_READ from the pages below; a
// price change is a change here, with the new date.

export const PRICES_READ = "2026-12-06";

export const PRICE_SOURCES = [
  "https://developers.cloudflare.com/durable-objects/platform/pricing/",
  "https://developers.cloudflare.com/d1/platform/pricing/",
  "https://developers.cloudflare.com/workers/platform/pricing/",
] as const;

/** One billed unit: its price per `per` units beyond the `included` amount each month. */
export type Price = { what: string; usd: number; per: number; included: number };

export const PRICES = {
  /** Durable Objects: HTTP requests, RPC sessions (each method call on a stub), alarm runs, and
   *  incoming WebSocket messages at 20 to 1. Outgoing messages and WebSocket protocol pings are free. */
  doRequests: { what: "DO requests", usd: 0.15, per: 1e6, included: 1e6 },
  /** Wall-clock time active or unable to hibernate, at 128 MB whatever is used; an object idle and
   *  eligible to hibernate is not billed, even before it is evicted; auto-responses add no time. */
  doDuration: { what: "DO duration (GB-s)", usd: 12.5, per: 1e6, included: 400_000 },
  doRowsRead: { what: "DO SQLite rows read", usd: 0.001, per: 1e6, included: 25e9 },
  /** KV API calls of an SQLite-backed object are rows too, and each setAlarm is one row written. */
  doRowsWritten: { what: "DO SQLite rows written", usd: 1.0, per: 1e6, included: 50e6 },
  doStorage: { what: "DO SQLite storage (GB-month)", usd: 0.2, per: 1, included: 5 },
  d1RowsRead: { what: "D1 rows read", usd: 0.001, per: 1e6, included: 25e9 },
  /** An index on a written column adds a row written. */
  d1RowsWritten: { what: "D1 rows written", usd: 1.0, per: 1e6, included: 50e6 },
  d1Storage: { what: "D1 storage (GB-month)", usd: 0.75, per: 1, included: 5 },
  workerRequests: { what: "Worker requests", usd: 0.3, per: 1e6, included: 10e6 },
  workerCpuMs: { what: "Worker CPU (ms)", usd: 0.02, per: 1e6, included: 30e6 },
} as const satisfies Record<string, Price>;

export type PriceKey = keyof typeof PRICES;

/** The Workers Paid plan's monthly minimum (it carries the allowances above). */
export const PLAN_MINIMUM_USD = 5;

/** Incoming WebSocket messages billed as one DO request. */
export const WS_MESSAGES_PER_REQUEST = 20;

/** Memory every object is billed for, in GB (128 MB). */
export const DO_MEMORY_GB = 0.128;

/** Seconds in the month the bench prices (30 days). */
export const MONTH_S = 30 * 86_400;

/** Dollars for `units` of one price: at list (nothing included) or after the month's allowance. */
export function dollars(key: PriceKey, units: number, allowance: boolean): number {
  const p: Price = PRICES[key];
  return (Math.max(0, units - (allowance ? p.included : 0)) / p.per) * p.usd;
}
