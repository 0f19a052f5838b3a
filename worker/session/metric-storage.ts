// What the metrics history uses of its Durable Object's storage (DurableObjectStorage has it; the
// bench hands in the same over node:sqlite to count rows written).
type SqlValue = string | number | null | ArrayBuffer;
type SqlRow = Record<string, SqlValue>;
type Cursor<T> = Iterable<T> & { toArray(): T[]; one(): T; readonly rowsWritten: number };
export type MetricsStorage = {
  sql: { exec<T extends SqlRow>(query: string, ...bindings: SqlValue[]): Cursor<T> };
  transactionSync<T>(fn: () => T): T;
};
