// GET /api/me: who is calling (the token's name, or the person signed in through Cloudflare Access;
// the dashboard asks it first and shows the token screen only when nobody is signed in), and the
// stuck threshold it marks VMs by.
import { Hono } from "hono";
import type { MeResponse } from "../../protocol/rest.ts";
import type { AppEnv } from "../app-env.ts";
import { sessionSettings } from "../config.ts";

export const meRoutes = new Hono<AppEnv>().get("/", (c) => {
  const { role, name, via, email } = c.get("principal");
  const stuckAfterMs = sessionSettings(c.env).stuckAfterMs;
  // Access sign-in adds how and as whom.
  const me: MeResponse =
    via === "access" ? { role, name, stuckAfterMs, via, email: email ?? null } : { role, name, stuckAfterMs };
  return c.json(me);
});
