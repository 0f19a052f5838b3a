// NotificationOutbox: one Durable Object per webhook target. Its alarm posts the target's due
// deliveries (rows in D1), records every attempt, and schedules the retries with backoff, so
// delivery goes on through restarts, evictions and a receiver that is down for hours.
import { DurableObject } from "cloudflare:workers";
import { and, asc, eq, lte, min, sql } from "drizzle-orm";
import { database, type Database } from "../db/client.ts";
import { notificationAttempts, notificationDeliveries, notificationTargets } from "../db/schema.ts";
import { HEADER, TEST_EVENT, signature } from "./payload.ts";
import { openSecret, secretKeys, SecretUnreadable } from "./secret-box.ts";
import { deliverySettings, retryDelayMs, type DeliverySettings } from "./settings.ts";

/** Deliveries posted per alarm (one after the other, oldest first); the rest on the next alarm. */
const BATCH = 25;
/** What is kept of a receiver's failure answer, for the attempts list. */
const ERROR_CHARS = 300;

type Delivery = typeof notificationDeliveries.$inferSelect;
type Target = typeof notificationTargets.$inferSelect;

export class NotificationOutbox extends DurableObject<Env> {
  private readonly db: Database;
  private readonly settings: DeliverySettings;
  /** deliveries being posted right now (an alarm and a test button may overlap); each leaves when its post ends */
  private readonly posting = new Set<string>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.db = database(env.DB);
    this.settings = deliverySettings(env);
  }

  /** New deliveries are due: post them now (on the alarm, so this call returns at once). */
  async wake(targetId: string): Promise<void> {
    this.ctx.storage.kv.put("targetId", targetId);
    await this.ctx.storage.setAlarm(Date.now());
  }

  /** Posts one delivery right away (the test button) and returns how it went. */
  async deliverNow(targetId: string, deliveryId: string): Promise<void> {
    this.ctx.storage.kv.put("targetId", targetId);
    const target = await this.target(targetId);
    const row = await this.db
      .select()
      .from(notificationDeliveries)
      .where(eq(notificationDeliveries.id, deliveryId))
      .get();
    if (target && row?.status === "pending") await this.post(target, row);
    await this.armNext(targetId);
  }

  async alarm(): Promise<void> {
    const targetId = this.ctx.storage.kv.get<string>("targetId");
    if (!targetId) return;
    try {
      const target = await this.target(targetId);
      if (!target) return; // deleted: its pending rows were cancelled with it
      const due = await this.db
        .select()
        .from(notificationDeliveries)
        .where(
          and(
            eq(notificationDeliveries.targetId, targetId),
            eq(notificationDeliveries.status, "pending"),
            lte(notificationDeliveries.nextAttemptAt, Date.now()),
          ),
        )
        .orderBy(asc(notificationDeliveries.nextAttemptAt), asc(notificationDeliveries.createdAt))
        .limit(BATCH);
      for (const row of due) {
        // The target may be deleted while this batch is posted: stop at once.
        if (!(await this.target(targetId))) return;
        await this.post(target, row);
      }
    } finally {
      await this.armNext(targetId);
    }
  }

  private async target(id: string): Promise<Target | null> {
    const t = await this.db.select().from(notificationTargets).where(eq(notificationTargets.id, id)).get();
    return t && t.deletedAt === null ? t : null;
  }

  /** The alarm for the earliest pending delivery, or none. */
  private async armNext(targetId: string): Promise<void> {
    const next = await this.db
      .select({ at: min(notificationDeliveries.nextAttemptAt) })
      .from(notificationDeliveries)
      .where(and(eq(notificationDeliveries.targetId, targetId), eq(notificationDeliveries.status, "pending")))
      .get();
    if (next?.at == null) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(Math.max(next.at, Date.now() + 1));
  }

  /** One attempt: POST the kept body, signed; then delivered, retried later, or given up. */
  private async post(target: Target, row: Delivery): Promise<void> {
    if (this.posting.has(row.id)) return;
    this.posting.add(row.id);
    try {
      const started = Date.now();
      let httpStatus: number | null = null;
      let error: string | null = null;
      try {
        const secret = await openSecret(await secretKeys(this.env), target.id, target);
        const res = await fetch(target.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "user-agent": "quantix-edge-notifications",
            [HEADER.event]: row.event,
            [HEADER.delivery]: row.id,
            [HEADER.signature]: await signature(secret, row.body),
          },
          body: row.body,
          redirect: "manual",
          signal: AbortSignal.timeout(this.settings.timeoutMs),
        });
        httpStatus = res.status;
        if (res.status < 200 || res.status > 299)
          error = `HTTP ${res.status}: ${(await res.text().catch(() => "")).slice(0, ERROR_CHARS)}`;
        else await res.body?.cancel();
      } catch (err) {
        const e = err as Error;
        // A secret that does not open is not sent unsigned: the attempt fails and is retried (the key may come back).
        error =
          e instanceof SecretUnreadable
            ? `not sent: ${e.message}`
            : e.name === "TimeoutError"
              ? `no answer within ${this.settings.timeoutMs} ms`
              : `no answer: ${e.message}`.slice(0, ERROR_CHARS);
      }
      const now = Date.now();
      const attempts = row.attempts + 1;
      const retryAt = now + retryDelayMs(this.settings, attempts);
      const giveUp = row.event === TEST_EVENT || retryAt > row.createdAt + this.settings.retryForMs;
      const outcome =
        error === null
          ? { status: "delivered", deliveredAt: now, nextAttemptAt: null }
          : giveUp
            ? { status: "failed", nextAttemptAt: null }
            : { status: "pending", nextAttemptAt: retryAt };
      await this.db.batch([
        this.db
          .insert(notificationAttempts)
          .values({ deliveryId: row.id, at: started, httpStatus, error, durationMs: now - started }),
        this.db
          .update(notificationDeliveries)
          .set({ ...outcome, attempts, lastStatus: httpStatus, lastError: error })
          // a delivery cancelled meanwhile (its target deleted) stays cancelled
          .where(sql`${notificationDeliveries.id} = ${row.id} AND ${notificationDeliveries.status} = 'pending'`),
      ]);
    } finally {
      this.posting.delete(row.id);
    }
  }
}
