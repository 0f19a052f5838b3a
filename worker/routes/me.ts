// GET /api/me: who the token is (the dashboard signs in with it), and the stuck threshold it marks VMs by.
import { Hono } from "hono";
import type { MeResponse } from "../../protocol/rest.ts";
import type { AppEnv } from "../app-env.ts";
import { sessionSettings } from "../config.ts";

export const meRoutes = new Hono<AppEnv>().get("/", (c) => {
  const { role, name } = c.get("principal");
  const me: MeResponse = { role, name, stuckAfterMs: sessionSettings(c.env).stuckAfterMs };
  return c.json(me);
});
