// Quantix Edge control plane Worker: builds the Hono app and re-exports the Durable Object classes.
import { Hono } from "hono";
import { DurableObject } from "cloudflare:workers";

const app = new Hono<{ Bindings: Env }>();
app.get("/api/health", (c) => c.json({ ok: true, version: "0.1.0" }));

export class NodeSession extends DurableObject<Env> {}
export default app;
