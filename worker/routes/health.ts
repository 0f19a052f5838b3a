// GET /api/health: liveness for load balancers, benchmarks and the CLI; needs no token.
import { Hono } from "hono";
import type { AppEnv } from "../app-env.ts";
import { VERSION } from "../config.ts";

export const healthRoutes = new Hono<AppEnv>().get("/", (c) => c.json({ ok: true, version: VERSION }));
