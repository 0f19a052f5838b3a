// GET /api/requests/:id: where a queued command stands.
import { Hono } from "hono";
import { eq } from "drizzle-orm";
import type { AppEnv } from "../app-env.ts";
import { database } from "../db/client.ts";
import { requests } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { IdParam } from "../params.ts";
import { requestView } from "../views.ts";

export const requestRoutes = new Hono<AppEnv>().get("/:id", validate("param", IdParam), async (c) => {
  const { id } = c.req.valid("param");
  const row = await database(c.env.DB).select().from(requests).where(eq(requests.id, id)).get();
  if (!row) throw new ApiError(404, "not_found", `no request ${id}`);
  return c.json({ request: requestView(row) });
});
