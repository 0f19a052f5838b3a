// One route as the OpenAPI document describes it: written beside the routes it documents, gathered
// by worker/openapi.ts.
import type { z } from "zod";
import type { Role } from "../protocol/api.ts";

export type Access = "none" | Role | "node";
export type Answer = { description: string; schema?: z.ZodType };
export type RouteDoc = {
  method: "get" | "post" | "delete";
  /** Hono's form, as mounted: `/api/vms/:id` */
  path: string;
  summary: string;
  access: Access;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  bodyRequired?: boolean;
  answers: Record<number, Answer>;
  /** notes per query parameter the schema can't say (e.g. a range checked in a transform) */
  notes?: Record<string, string>;
};
