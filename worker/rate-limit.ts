// 429s for the expensive or abusable routes (logs, reset_state, power actions, enrollment, agent
// connects and polls) through the Workers Rate Limiting binding, which miniflare enforces locally as
// well (wrangler dev and the vitest pool).
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "./app-env.ts";
import { ApiError } from "./errors.ts";

type LimiterName =
  | "LOGS_LIMITER"
  | "RESET_LIMITER"
  | "POWER_LIMITER"
  | "ENROLL_LIMITER"
  | "CONNECT_LIMITER"
  | "POLL_LIMITER"
  | "SEND_LIMITER";

/** The caller's IP as Cloudflare reports it; a local run without the header shares one bucket. */
export const clientIp = (req: Request) => req.headers.get("cf-connecting-ip") ?? "local";

export async function enforceLimit(env: Env, limiter: LimiterName, key: string): Promise<void> {
  const binding = env[limiter];
  if (!binding) return; // not configured (e.g. a stripped-down config): no limit rather than a 500
  const { success } = await binding.limit({ key });
  // The binding's windows are 60 s; a client waiting that long is sure to get a fresh budget.
  if (!success)
    throw new ApiError(429, "rate_limited", "too many requests; try again in a minute", { "Retry-After": "60" });
}

/** Per API token (the principal set by `authenticate`). */
export const limitPerToken = (limiter: LimiterName) =>
  createMiddleware<AppEnv>(async (c, next) => {
    await enforceLimit(c.env, limiter, `${c.get("principal").id}`);
    await next();
  });
