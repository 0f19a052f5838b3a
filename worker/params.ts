// zod schemas for the params and queries the routes share (ids, flags), so each rule is written once.
import { z } from "zod";

/** Any id in a path: VM UUIDs, node / request / token ids. An unknown one is a 404, an absurd one a 400. */
export const IdParam = z.object({ id: z.string().min(1).max(128) });

/** `?force=` / `?wait=`: true/false/1/0; a bare `?force` means true, absent means false. */
export const flag = z
  .enum(["true", "false", "1", "0", ""], { message: "must be true or false" })
  .optional()
  .transform((v) => v === "true" || v === "1" || v === "");
