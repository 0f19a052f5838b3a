// The drizzle client over the D1 binding, one per binding per isolate: building it reads the whole
// schema's relational config, CPU that a cheap read (`GET /api/vms/:id`) would otherwise pay per call.
import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema.ts";

const build = (d1: D1Database) => drizzle(d1, { schema });
export type Database = ReturnType<typeof build>;

// Bound: one client per D1 binding object, held only while the binding is (a WeakMap).
const clients = new WeakMap<D1Database, Database>();

export function database(d1: D1Database): Database {
  let db = clients.get(d1);
  if (!db) clients.set(d1, (db = build(d1)));
  return db;
}
