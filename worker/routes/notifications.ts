// /api/notifications: webhook targets (admin only) and their deliveries with every attempt. A
// target's secret is taken once and never shown again.
import { Hono } from "hono";
import { and, desc, eq, inArray, isNull } from "drizzle-orm";
import { z } from "zod";
import type { AppEnv } from "../app-env.ts";
import { newId, requireRole } from "../auth.ts";
import { database, type Database } from "../db/client.ts";
import { notificationAttempts, notificationDeliveries, notificationTargets } from "../db/schema.ts";
import { ApiError, validate } from "../errors.ts";
import { IdParam } from "../params.ts";
import { cancelPending } from "../notifications/notify.ts";
import { sealSecret, secretKeys, SecretUnreadable, type SealedSecret } from "../notifications/secret-box.ts";
import {
  NotificationEvent,
  NotificationFormat,
  TEST_EVENT,
  renderBody,
  targetUrlProblem,
} from "../notifications/payload.ts";

export const CreateTarget = z.object({
  name: z.string().trim().min(1, "must not be empty").max(100, "at most 100 characters"),
  url: z
    .string()
    .trim()
    .max(2000, "at most 2000 characters")
    .superRefine((url, ctx) => {
      const problem = targetUrlProblem(url);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    }),
  secret: z.string().min(1, "must not be empty").max(512, "at most 512 characters"),
  events: z.array(NotificationEvent).min(1, "name at least one event").max(NotificationEvent.options.length),
  format: NotificationFormat.default("json"),
});

export const DeliveriesQuery = z.object({
  target_id: z.string().min(1).max(128).optional(),
  limit: z.coerce.number().int("must be a whole number").min(1, "at least 1").max(200, "at most 200").default(50),
});

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

type TargetRow = typeof notificationTargets.$inferSelect;
const targetView = (t: TargetRow) => ({
  id: t.id,
  name: t.name,
  url: t.url,
  events: JSON.parse(t.events) as string[],
  format: t.format,
  createdBy: t.createdBy,
  createdAt: iso(t.createdAt),
});

/** Deliveries, newest first, each with its attempts (oldest first). */
async function deliveryViews(db: Database, rows: (typeof notificationDeliveries.$inferSelect)[]) {
  const ids = rows.map((r) => r.id);
  const attempts = ids.length
    ? await db
        .select()
        .from(notificationAttempts)
        .where(inArray(notificationAttempts.deliveryId, ids))
        .orderBy(notificationAttempts.at, notificationAttempts.id)
    : [];
  return rows.map((d) => ({
    id: d.id,
    targetId: d.targetId,
    event: d.event,
    status: d.status,
    payload: JSON.parse(d.body) as unknown,
    createdAt: iso(d.createdAt),
    deliveredAt: iso(d.deliveredAt),
    nextAttemptAt: iso(d.nextAttemptAt),
    lastStatus: d.lastStatus,
    lastError: d.lastError,
    attempts: attempts
      .filter((a) => a.deliveryId === d.id)
      .map((a) => ({ at: iso(a.at), httpStatus: a.httpStatus, error: a.error, durationMs: a.durationMs })),
  }));
}

async function liveTarget(db: Database, id: string): Promise<TargetRow> {
  const t = await db
    .select()
    .from(notificationTargets)
    .where(and(eq(notificationTargets.id, id), isNull(notificationTargets.deletedAt)))
    .get();
  if (!t) throw new ApiError(404, "not_found", `no notification target ${id}`);
  return t;
}

/** The secret sealed for storage; 503 saying why when the Worker has no usable key. */
async function sealed(env: Env, targetId: string, secret: string): Promise<SealedSecret> {
  try {
    return await sealSecret(await secretKeys(env), targetId, secret);
  } catch (err) {
    if (err instanceof SecretUnreadable) throw new ApiError(503, "secrets_key_unavailable", err.message);
    throw err;
  }
}

export const notificationRoutes = new Hono<AppEnv>()
  .use(requireRole("admin"))
  .post("/targets", validate("json", CreateTarget), async (c) => {
    const body = c.req.valid("json");
    const id = newId();
    const row: TargetRow = {
      id,
      name: body.name,
      url: body.url,
      ...(await sealed(c.env, id, body.secret)),
      events: JSON.stringify([...new Set(body.events)]),
      format: body.format,
      createdBy: c.get("principal").actor,
      createdAt: Date.now(),
      deletedAt: null,
    };
    await database(c.env.DB).insert(notificationTargets).values(row);
    return c.json({ target: targetView(row) }, 201);
  })
  .get("/targets", async (c) => {
    const rows = await database(c.env.DB)
      .select()
      .from(notificationTargets)
      .where(isNull(notificationTargets.deletedAt))
      .orderBy(desc(notificationTargets.createdAt))
      .limit(500);
    return c.json({ targets: rows.map(targetView) });
  })
  .delete("/targets/:id", validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const { id } = c.req.valid("param");
    await liveTarget(db, id);
    // The row stays for its deliveries' history, without the secret; nothing more is sent to it.
    await db.batch([
      db
        .update(notificationTargets)
        .set({ deletedAt: Date.now(), secret: "", secretKeyId: null })
        .where(eq(notificationTargets.id, id)),
      cancelPending(c.env, id),
    ]);
    return c.json({ success: true, id, deleted: true });
  })
  .post("/targets/:id/test", validate("param", IdParam), async (c) => {
    const db = database(c.env.DB);
    const target = await liveTarget(db, c.req.valid("param").id);
    const id = crypto.randomUUID();
    const now = Date.now();
    const message = `test notification from Quantix Edge, sent by ${c.get("principal").name}`;
    const body = renderBody(target.format as NotificationFormat, {
      id,
      event: TEST_EVENT,
      at: new Date(now).toISOString(),
      node: null,
      vm: null,
      message,
    });
    await db.insert(notificationDeliveries).values({
      id,
      targetId: target.id,
      event: TEST_EVENT,
      body,
      status: "pending",
      nextAttemptAt: now,
      createdAt: now,
    });
    // Posted once, right now, so the answer can say how the receiver took it.
    await c.env.NOTIFICATION_OUTBOX.get(c.env.NOTIFICATION_OUTBOX.idFromName(target.id)).deliverNow(target.id, id);
    const row = await db.select().from(notificationDeliveries).where(eq(notificationDeliveries.id, id)).get();
    const [delivery] = await deliveryViews(db, row ? [row] : []);
    return c.json({ delivery });
  })
  .get("/deliveries", validate("query", DeliveriesQuery), async (c) => {
    const { target_id, limit } = c.req.valid("query");
    const db = database(c.env.DB);
    const rows = await db
      .select()
      .from(notificationDeliveries)
      .where(target_id ? eq(notificationDeliveries.targetId, target_id) : undefined)
      .orderBy(desc(notificationDeliveries.createdAt))
      .limit(limit);
    return c.json({ deliveries: await deliveryViews(db, rows) });
  });
