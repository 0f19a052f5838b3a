// /api/tokens: API tokens (admin only). The secret is shown once; D1 keeps its SHA-256.
import { Hono } from "hono";
import { desc, eq } from "drizzle-orm";
import { z } from "zod";
import { Role } from "../../protocol/api.ts";
import type { AppEnv } from "../app-env.ts";
import { forgetTokenHash, hashSecret, newId, newSecret, requireRole } from "../auth.ts";
import { database } from "../db/client.ts";
import { closeFollowsOfToken } from "../follow-revocation.ts";
import { apiTokens } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { IdParam } from "../params.ts";

export const CreateToken = z.object({
  name: z.string().trim().min(1, "must not be empty").max(100, "at most 100 characters"),
  role: Role,
});

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export const tokenRoutes = new Hono<AppEnv>()
  .use(requireRole("admin"))
  .post("/", validate("json", CreateToken), async (c) => {
    const { name, role } = c.req.valid("json");
    const token = newSecret("api");
    const id = newId();
    await database(c.env.DB)
      .insert(apiTokens)
      .values({
        id,
        name,
        role,
        tokenHash: await hashSecret(token),
        createdBy: c.get("principal").actor,
        createdAt: Date.now(),
      });
    return c.json({ token, id, name, role }, 201);
  })
  .get("/", async (c) => {
    const rows = await database(c.env.DB).select().from(apiTokens).orderBy(desc(apiTokens.createdAt)).limit(1000);
    return c.json({
      tokens: rows.map((t) => ({
        id: t.id,
        name: t.name,
        role: t.role,
        createdAt: iso(t.createdAt),
        revokedAt: iso(t.revokedAt),
      })),
    });
  })
  .delete("/:id", validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const { id } = c.req.valid("param");
    const row = await db.select().from(apiTokens).where(eq(apiTokens.id, id)).get();
    if (!row) throw new ApiError(404, "not_found", `no token ${id}`);
    if (row.revokedAt === null) await db.update(apiTokens).set({ revokedAt: Date.now() }).where(eq(apiTokens.id, id));
    forgetTokenHash(row.tokenHash);
    await closeFollowsOfToken(c.env, id);
    return c.json({ success: true, id, revoked: true });
  });
