// GET /api/me: who the token is (the dashboard signs in with it).
import { Hono } from "hono";
import type { AppEnv } from "../app-env.ts";

export const meRoutes = new Hono<AppEnv>().get("/", (c) => {
  const { role, name } = c.get("principal");
  return c.json({ role, name });
});
