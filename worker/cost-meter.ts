// Cost counts of a local bench run (only when QX_DEBUG_COUNTS is "1"): what one node's Durable Object
// would be billed for, counted where it happens. Its wakes by kind, the time it could not hibernate (a
// handler or its waitUntil work in flight), the rows it read and wrote in D1 (the D1 answers' own
// meta) and in its own SQLite (SQL cursors, KV calls, alarms), and, on the Worker's side, the RPC
// calls made to it. The product never builds one: every hook is `meter?.…`.
import type { CostCounts } from "./cost-counts.ts";

type D1Meta = { rows_read?: number; rows_written?: number };
type Cursor = { rowsRead: number; rowsWritten: number };

/** One meter per object id for the isolate's life: the object itself is evicted when it hibernates
 *  (and built again on its next wake), its counts must not go with it. */
const meters = new Map<string, CostMeter>();

export class CostMeter {
  /** The meter of the object `id`, kept across the object's evictions. */
  static of(id: string): CostMeter {
    let meter = meters.get(id);
    if (!meter) meters.set(id, (meter = new CostMeter()));
    meter.wake("constructed");
    return meter;
  }

  private readonly counts: CostCounts = {
    wakes: {},
    activeMs: 0,
    timedRuns: 0,
    d1: { statements: 0, rowsRead: 0, rowsWritten: 0, withoutMeta: 0 },
    sqlite: { rowsRead: 0, rowsWritten: 0, kvReads: 0, kvWrites: 0, alarmWrites: 0 },
  };
  private inFlight = 0;
  private busySince = 0;
  /** SQL cursors handed out since the last snapshot (a cursor's counts are final once it is read
   *  through; the oldest are folded in early to keep this bounded) */
  private cursors: Cursor[] = [];

  wake(kind: string): void {
    this.counts.wakes[kind] = (this.counts.wakes[kind] ?? 0) + 1;
  }

  /** Counts `work` as time the object cannot hibernate (overlapping work counts once). */
  async during<T>(work: () => Promise<T> | T): Promise<T> {
    this.enter();
    try {
      return await work();
    } finally {
      this.leave();
    }
  }

  /** The same for work handed to waitUntil. */
  track(work: Promise<unknown>): Promise<unknown> {
    return this.during(() => work);
  }

  private enter(): void {
    this.counts.timedRuns++;
    if (this.inFlight++ === 0) this.busySince = Date.now();
  }

  private leave(): void {
    if (--this.inFlight === 0) this.counts.activeMs += Date.now() - this.busySince;
  }

  snapshot(): CostCounts {
    this.foldCursors();
    const open = this.inFlight > 0 ? Date.now() - this.busySince : 0;
    return structuredClone({ ...this.counts, activeMs: this.counts.activeMs + open });
  }

  private foldCursors(keep = 0): void {
    for (const cursor of this.cursors.splice(0, Math.max(0, this.cursors.length - keep))) {
      this.counts.sqlite.rowsRead += cursor.rowsRead;
      this.counts.sqlite.rowsWritten += cursor.rowsWritten;
    }
  }

  private countD1(results: unknown): void {
    for (const r of Array.isArray(results) ? results : [results]) {
      this.counts.d1.statements++;
      const meta = (r as { meta?: D1Meta } | null)?.meta;
      if (typeof meta?.rows_read !== "number") {
        this.counts.d1.withoutMeta++;
        continue;
      }
      this.counts.d1.rowsRead += meta.rows_read;
      this.counts.d1.rowsWritten += meta.rows_written ?? 0;
    }
  }

  /** The D1 binding with every answer's meta counted. It hooks the binding's session (the runtime's
   *  own JS wrapper, whose sends all pass through `_send` or `_queryOrThrow`); a runtime without
   *  them gets the binding as it is, and its statements show as uncounted. */
  d1(db: D1Database): D1Database {
    type Send = (...args: unknown[]) => Promise<unknown>;
    const session = (db as unknown as { alwaysPrimarySession?: Record<string, unknown> }).alwaysPrimarySession;
    if (!session || typeof session._send !== "function") {
      this.counts.d1.withoutMeta = Number.NaN;
      return db;
    }
    const metered = Object.create(session) as Record<string, unknown>;
    for (const name of ["_send", "_queryOrThrow"]) {
      const original = session[name];
      if (typeof original !== "function") continue;
      const count = (out: unknown) => (this.countD1(out), out);
      metered[name] = function (this: unknown, ...args: unknown[]) {
        return (original as Send).apply(this, args).then(count);
      };
    }
    return Object.create(db, { alwaysPrimarySession: { value: metered } }) as D1Database;
  }

  /** The object's storage with its rows counted: SQL through each cursor's own counts, a KV call as
   *  one row (how SQLite-backed objects bill them), and each alarm set or deleted as one row written. */
  storage(storage: DurableObjectStorage): DurableObjectStorage {
    const c = this.counts.sqlite;
    const kv = storage.kv;
    const meteredKv: SyncKvStorage = {
      get: <T>(key: string) => (c.kvReads++, c.rowsRead++, kv.get<T>(key)),
      put: <T>(key: string, value: T) => (c.kvWrites++, c.rowsWritten++, kv.put(key, value)),
      delete: (key: string) => (c.kvWrites++, c.rowsWritten++, kv.delete(key)),
      list: <T>(options?: SyncKvListOptions) => {
        const rows = [...kv.list<T>(options)];
        c.kvReads++;
        c.rowsRead += Math.max(1, rows.length);
        return rows;
      },
    };
    const sql = storage.sql;
    const meteredSql = {
      exec: (query: string, ...bindings: unknown[]) => {
        if (this.cursors.length >= 256) this.foldCursors(16);
        const cursor = sql.exec(query, ...bindings);
        this.cursors.push(cursor);
        return cursor;
      },
      get databaseSize() {
        return sql.databaseSize;
      },
    } as unknown as SqlStorage;
    const alarmWrite = () => (c.alarmWrites++, c.rowsWritten++);
    return new Proxy(storage, {
      get(target, prop) {
        if (prop === "kv") return meteredKv;
        if (prop === "sql") return meteredSql;
        if (prop === "setAlarm")
          return (at: number | Date, o?: DurableObjectSetAlarmOptions) => (alarmWrite(), target.setAlarm(at, o));
        if (prop === "deleteAlarm") return (o?: DurableObjectSetAlarmOptions) => (alarmWrite(), target.deleteAlarm(o));
        if (prop === "put")
          return (key: string, value: unknown, o?: DurableObjectPutOptions) => (
            c.kvWrites++, c.rowsWritten++, target.put(key, value, o)
          );
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === "function" ? (value.bind(target) as unknown) : value;
      },
    });
  }
}

/** RPC calls the Worker made to each node's object (a request each), by method name. */
const sessionCalls = new Map<string, Record<string, number>>();
/** The bench's own reads of the counts are not the product's calls. */
const UNCOUNTED = new Set(["costCounts", "debugCounts", "then"]);

/** The stub with every method call counted against its node (one billed request each). */
export function countedCalls<S extends object>(stub: S, nodeId: string): S {
  return new Proxy(stub, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof prop !== "string" || typeof value !== "function" || UNCOUNTED.has(prop)) return value;
      return (...args: unknown[]) => {
        const calls = sessionCalls.get(nodeId) ?? {};
        calls[prop] = (calls[prop] ?? 0) + 1;
        sessionCalls.set(nodeId, calls);
        // Reflect.apply: an RPC property answers any property access, `.apply` included, as a remote name.
        return Reflect.apply(value as (...a: unknown[]) => unknown, target, args);
      };
    },
  });
}

export function callsTo(nodeId: string): Record<string, number> {
  return { ...sessionCalls.get(nodeId) };
}
