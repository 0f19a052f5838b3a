// The Hono environment of every route: bindings plus who is calling.
import type { Role } from "../protocol/api.ts";

/** The caller behind a valid API token (or ADMIN_TOKEN). `actor` is what events record. */
export type Principal = { id: string; name: string; role: Role; actor: string };

export type AppEnv = { Bindings: Env; Variables: { principal: Principal } };
