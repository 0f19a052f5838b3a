// The D1 shapes named by the Worker modules that the bench runs under Node (against a counting
// SQLite, bench/inventory.ts). For the Node type check only: the Worker program checks the same
// modules against workerd's own types (worker-configuration.d.ts).
declare global {
  interface D1Result<T = unknown> {
    results: T[];
    success: boolean;
    meta: { changes: number; [key: string]: unknown };
  }
  interface D1PreparedStatement {
    bind(...values: unknown[]): D1PreparedStatement;
  }
  interface D1Database {
    prepare(query: string): D1PreparedStatement;
    batch(statements: D1PreparedStatement[]): Promise<D1Result[]>;
    exec(query: string): Promise<unknown>;
  }
}
export {};
