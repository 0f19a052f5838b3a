// The Hono environment of every route: bindings plus who is calling.
import type { Role } from "../protocol/api.ts";

/** The caller behind a valid API token (or ADMIN_TOKEN), or a person signed in through Cloudflare
 *  Access (`via: "access"`). `actor` is what events and request rows record. */
export type Principal = {
  id: string;
  name: string;
  role: Role;
  actor: string;
  via: "token" | "access";
  email?: string | null;
  /** Access sign-in: the names its role is looked up by (the email or service name, and its
   *  groups), so that a console's resume can ask again under the settings of that moment */
  roleNames?: string[];
};

export type AppEnv = { Bindings: Env; Variables: { principal: Principal } };
