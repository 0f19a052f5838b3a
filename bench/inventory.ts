// Bench: one node with 5,000 domains. (1) Time for a full sync over the real control plane
// (wrangler dev, local D1), from the link opening until all 5,000 VMs are listed, with a simulated
// agent's inventory (bench/fleet-agent.ts). (2) The D1 statements that sync costs, counted honestly
// by running the Worker's own inventory code (worker/inventory.ts, the same calls NodeSession makes
// per chunk) against a counting D1 binding backed by SQLite with the real migrations.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { INVENTORY_CHUNK } from "../protocol/wire.ts";
import type { ControlPlane } from "../test/support/control-plane.ts";
import { createNode, eventually, getNode } from "../test/e2e/journey.ts";
import { markUnreportedMissing, upsertReportedVms } from "../worker/inventory.ts";
import type { Database } from "../worker/db/client.ts";
import { enroll, SimAgent, simVms } from "./fleet-agent.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

const DOMAINS = 5_000;
const ROOT = resolve(import.meta.dirname, "..");

/** The D1 binding's surface that worker/db/batch.ts uses, over node:sqlite, counting statements. */
export class CountingD1 {
  readonly sqlite = new DatabaseSync(":memory:");
  statements = 0;
  maxParams = 0;

  constructor() {
    const dir = join(ROOT, "migrations");
    for (const f of readdirSync(dir)
      .filter((f) => f.endsWith(".sql"))
      .sort()) {
      for (const stmt of readFileSync(join(dir, f), "utf8").split("--> statement-breakpoint"))
        if (stmt.trim()) this.sqlite.exec(stmt);
    }
  }

  prepare(sql: string) {
    const d1 = this;
    const make = (params: unknown[]) => ({
      bind: (...p: unknown[]) => make(p),
      run() {
        d1.statements++;
        d1.maxParams = Math.max(d1.maxParams, params.length);
        const values = params.map((v) => (typeof v === "boolean" ? Number(v) : v)) as SQLInputValue[];
        const results = d1.sqlite.prepare(sql).all(...values);
        const { c } = d1.sqlite.prepare("SELECT changes() AS c").get() as { c: number };
        return { results, success: true, meta: { changes: c } };
      },
    });
    return make([]);
  }

  async batch(stmts: { run(): unknown }[]) {
    return stmts.map((s) => s.run());
  }
}

/** Statements and the widest bind for one 5,000-domain sync, as NodeSession issues them. */
async function countSyncStatements(): Promise<{ statements: number; maxParams: number; vms: number }> {
  const d1 = new CountingD1();
  const nodeId = "bench-node";
  d1.sqlite.prepare("INSERT INTO nodes (id, name, created_at, updated_at) VALUES (?, ?, 0, 0)").run(nodeId, nodeId);
  const db = { $client: d1 } as unknown as Database;
  const agent = new SimAgent("http://127.0.0.1:1", "unused", simVms(DOMAINS));
  const all = [...agent.vms.values()].map((v) => agent.info(v));
  const before = d1.statements;
  for (let i = 0; i < all.length; i += INVENTORY_CHUNK)
    await upsertReportedVms(db, nodeId, all.slice(i, i + INVENTORY_CHUNK), "sync-1", "bench", DOMAINS);
  await markUnreportedMissing(db, nodeId, "sync-1", "bench");
  const { n } = d1.sqlite.prepare("SELECT count(*) AS n FROM vms WHERE node_id = ?").get(nodeId) as { n: number };
  return { statements: d1.statements - before, maxParams: d1.maxParams, vms: n };
}

export async function benchInventory(cp: ControlPlane): Promise<BenchRow[]> {
  const { node, joinToken } = await createNode(cp, `bench-inventory-${Date.now()}`);
  const { credential } = await enroll(cp.url, joinToken, "bench-inventory");
  const agent = new SimAgent(cp.url, credential, simVms(DOMAINS, "inv"));
  const t0 = performance.now();
  await agent.start();
  await eventually("5,000 VMs synced", async () => (await getNode(cp, node.id)).vmCount === DOMAINS, 120_000, 50);
  const syncMs = performance.now() - t0;
  await agent.stop();

  const counted = await countSyncStatements();
  if (counted.vms !== DOMAINS) throw new Error(`counting run stored ${counted.vms} VMs, not ${DOMAINS}`);
  const chunks = Math.ceil(DOMAINS / INVENTORY_CHUNK);
  return [
    {
      name: "inventory: 5,000-domain full sync, link open → all listed",
      value: Math.round(syncMs),
      unit: "ms",
      note: `${chunks} inventory frames of ≤ ${INVENTORY_CHUNK} VMs`,
    },
    {
      name: "inventory: D1 statements for that sync",
      value: counted.statements,
      unit: "stmts",
      ...goal("inventoryStatements", { value: counted.statements }),
      note: "worker/inventory.ts run on SQLite through a counting D1 binding (connect + hello add 2 more)",
    },
    {
      name: "inventory: most bound parameters in one statement",
      value: counted.maxParams,
      unit: "params",
      ...goal("inventoryParams", { value: counted.maxParams }),
    },
  ];
}
