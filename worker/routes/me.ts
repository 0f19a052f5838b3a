// GET /api/me: who is calling: the token's name, or the person signed in through Cloudflare Access
// (the dashboard asks it first, and shows the token screen only when nobody is signed in).
import { Hono } from "hono";
import type { AppEnv } from "../app-env.ts";

export const meRoutes = new Hono<AppEnv>().get("/", (c) => {
  const { role, name, via, email } = c.get("principal");
  // A token's answer stays `{role, name}`; Access sign-in adds how and as whom.
  return c.json(via === "access" ? { role, name, via, email: email ?? null } : { role, name });
});
