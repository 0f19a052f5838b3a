// The OpenAPI entries of /api/notifications, from the same zod schemas the routes validate with.
import { z } from "zod";
import type { RouteDoc } from "../route-doc.ts";
import { IdParam } from "../params.ts";
import { CreateTarget, DeliveriesQuery } from "../routes/notifications.ts";
import { NotificationEvent, NotificationFormat } from "./payload.ts";

const iso = z.string().describe("ISO 8601 time");
const Target = z.object({
  id: z.string(),
  name: z.string(),
  url: z.string(),
  events: z.array(NotificationEvent),
  format: NotificationFormat,
  createdBy: z.string(),
  createdAt: iso,
});
const Delivery = z.object({
  id: z.string().describe("also the X-Quantix-Delivery header: the same on every retry"),
  targetId: z.string(),
  event: z.string(),
  status: z.enum(["pending", "delivered", "failed", "cancelled"]),
  payload: z.unknown().describe("the body posted: {id, event, at, node, vm, message}, or {text} for Slack"),
  createdAt: iso,
  deliveredAt: iso.nullable(),
  nextAttemptAt: iso.nullable(),
  lastStatus: z.number().int().nullable(),
  lastError: z.string().nullable(),
  attempts: z.array(
    z.object({
      at: iso,
      httpStatus: z.number().int().nullable(),
      error: z.string().nullable(),
      durationMs: z.number().int(),
    }),
  ),
});
const ok = (description: string, schema?: z.ZodType) => ({ description, schema });

export const NOTIFICATION_ROUTES: RouteDoc[] = [
  {
    method: "post",
    path: "/api/notifications/targets",
    summary: "Add a webhook target (its secret is never shown again)",
    access: "admin",
    body: CreateTarget,
    bodyRequired: true,
    answers: { 201: ok("created", z.object({ target: Target })) },
  },
  {
    method: "get",
    path: "/api/notifications/targets",
    summary: "List webhook targets",
    access: "admin",
    answers: { 200: ok("targets", z.object({ targets: z.array(Target) })) },
  },
  {
    method: "delete",
    path: "/api/notifications/targets/:id",
    summary: "Delete a webhook target: nothing more is sent to it",
    access: "admin",
    params: IdParam,
    answers: {
      200: ok("deleted", z.object({ success: z.literal(true), id: z.string(), deleted: z.literal(true) })),
      404: ok("no such target"),
    },
  },
  {
    method: "post",
    path: "/api/notifications/targets/:id/test",
    summary: "Post a test delivery now; answers how the receiver took it",
    access: "admin",
    params: IdParam,
    answers: {
      200: ok("the test delivery with its attempt", z.object({ delivery: Delivery })),
      404: ok("no such target"),
    },
  },
  {
    method: "get",
    path: "/api/notifications/deliveries",
    summary: "The last deliveries (of one target with target_id), newest first, with every attempt",
    access: "admin",
    query: DeliveriesQuery,
    answers: { 200: ok("deliveries", z.object({ deliveries: z.array(Delivery) })) },
  },
];
