// The JSON error envelope `{success:false,error:{code,message}}` and the one validation hook every route uses.
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { zValidator } from "@hono/zod-validator";
import type { ZodType } from "zod";

/** A failure the API answers on purpose: `{success:false, error:{code, message}}` with `status`. */
export class ApiError extends Error {
  readonly status: ContentfulStatusCode;
  readonly code: string;
  readonly headers: Record<string, string>;
  constructor(status: ContentfulStatusCode, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

export const errorBody = (code: string, message: string) => ({ success: false as const, error: { code, message } });

export function errorResponse(
  c: Context,
  status: ContentfulStatusCode,
  code: string,
  message: string,
  headers?: Record<string, string>,
) {
  return c.json(errorBody(code, message), status, headers);
}

type Target = "json" | "query" | "param";

/** `zValidator` whose failures answer 400 `invalid_request` naming the field and the rule
 *  (never zod's raw issue dump). A body that is not JSON is refused the same way. */
export function validate<T extends ZodType, K extends Target>(target: K, schema: T) {
  return zValidator(target, schema, (result, c) => {
    if (!result.success) {
      const issue = result.error.issues[0];
      const field = issue?.path.length ? issue.path.join(".") : target === "json" ? "body" : target;
      return errorResponse(c, 400, "invalid_request", `${field}: ${issue?.message ?? "invalid"}`);
    }
  });
}
