// Delivery timing from wrangler vars: the retry backoff and how long a delivery is tried at all.
export type DeliverySettings = { backoffBaseMs: number; backoffCapMs: number; retryForMs: number; timeoutMs: number };

const positive = (v: string | undefined, fallback: number) => {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : fallback;
};

export function deliverySettings(
  env: Partial<
    Pick<Env, "NOTIFY_BACKOFF_BASE_MS" | "NOTIFY_BACKOFF_CAP_MS" | "NOTIFY_RETRY_FOR_MS" | "NOTIFY_TIMEOUT_MS">
  >,
): DeliverySettings {
  return {
    backoffBaseMs: positive(env.NOTIFY_BACKOFF_BASE_MS, 30_000),
    backoffCapMs: positive(env.NOTIFY_BACKOFF_CAP_MS, 3_600_000),
    retryForMs: positive(env.NOTIFY_RETRY_FOR_MS, 86_400_000),
    timeoutMs: positive(env.NOTIFY_TIMEOUT_MS, 10_000),
  };
}

/** The wait after the `failures`-th failed attempt: base, 2 x base, 4 x base … up to the cap. */
export function retryDelayMs(s: DeliverySettings, failures: number): number {
  return Math.min(s.backoffCapMs, s.backoffBaseMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
}
