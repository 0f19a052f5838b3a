// The shape of a node object's cost counts (cost-meter.ts), apart from the meter so the bench can
// read it without the Workers runtime's types.

/** What a node's object was billed for since it started (cumulative; the bench takes differences). */
export type CostCounts = {
  /** runtime events that woke the object: alarm, webSocketMessage, webSocketClose, webSocketError,
   *  fetch; and `constructed`, the object built again after it was evicted (hibernation) */
  wakes: Record<string, number>;
  /** wall time with any handler or its waitUntil work in flight (Date.now() advances on I/O only) */
  activeMs: number;
  /** handler runs timed (each wake and each waitUntil job) */
  timedRuns: number;
  d1: { statements: number; rowsRead: number; rowsWritten: number; withoutMeta: number };
  /** the object's own SQLite: SQL statements' cursors, KV API calls (a row each), alarms set/deleted */
  sqlite: { rowsRead: number; rowsWritten: number; kvReads: number; kvWrites: number; alarmWrites: number };
};
