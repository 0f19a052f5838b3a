// Bench: the cost of anti-entropy for one node of 50 VMs. The digest frame's size (what the agent
// sends every digest interval), and the D1 statements the control plane spends on it, counted by
// running the Worker's own comparison (worker/session/anti-entropy.ts) against a counting D1 binding
// backed by SQLite with the real migrations: one read of the node's rows when nothing differs, and
// what a difference in one bucket adds (its scoped inventory's upsert and missing-marking). Per hour
// at the default interval (60 s). Also the time one comparison takes at 50 and 5,000 VMs.
import { inventoryDigest } from "../protocol/digest.ts";
import { mapLibvirtState, type VmInfo } from "../protocol/wire.ts";
import { database } from "../worker/db/client.ts";
import { markUnreportedMissingInScope, upsertReportedVms } from "../worker/inventory.ts";
import { compareDigest } from "../worker/session/anti-entropy.ts";
import { CountingD1 } from "./inventory.ts";
import type { BenchRow } from "./table.ts";
import { goal } from "./targets.ts";

const VMS = 50;
const DIGEST_INTERVAL_MS = 60_000;
const PER_HOUR = 3_600_000 / DIGEST_INTERVAL_MS;

/** CountingD1 with the read paths drizzle's selects use (`all`, `raw`), each counted as a statement. */
class ReadCountingD1 extends CountingD1 {
  override prepare(sql: string) {
    const base = super.prepare(sql);
    const d1 = this;
    const make = (params: unknown[]) => {
      const bound = base.bind(...params);
      return {
        ...bound,
        bind: (...p: unknown[]) => make(p),
        async all() {
          return bound.run();
        },
        async raw() {
          const { results } = bound.run() as { results: Record<string, unknown>[] };
          return results.map((row) => Object.values(row));
        },
        get statements() {
          return d1.statements;
        },
      };
    };
    return make([]);
  }
}

function hostVms(n: number, prefix: string): VmInfo[] {
  return Array.from({ length: n }, (_, i) => {
    const libvirtState = i % 3 ? "running" : "shutoff";
    const uuid = `${((i * 2654435761) >>> 0).toString(16).padStart(8, "0")}-${prefix}-4000-8000-${String(i).padStart(12, "0")}`;
    return {
      uuid,
      name: `vm ${prefix} ${i}`,
      state: mapLibvirtState(libvirtState),
      libvirtState,
      vcpus: 2,
      memoryMiB: 2048,
    };
  });
}

async function nodeOf(n: number) {
  const d1 = new ReadCountingD1();
  const nodeId = "bench-digest";
  d1.sqlite.prepare("INSERT INTO nodes (id, name, created_at, updated_at) VALUES (?, ?, 0, 0)").run(nodeId, nodeId);
  const db = database(d1 as unknown as Parameters<typeof database>[0]);
  const vms = hostVms(n, "d1g3");
  await upsertReportedVms(db, nodeId, vms, "sync-1", "bench", 10_000);
  return { d1, db, nodeId, vms };
}

export async function benchDigest(): Promise<BenchRow[]> {
  const { d1, db, nodeId, vms } = await nodeOf(VMS);
  const frame = (v: VmInfo[]) =>
    JSON.stringify({ type: "inventory.digest", id: "digest-0123456789ab", payload: inventoryDigest(v) });
  const bytes = new TextEncoder().encode(frame(vms)).length;

  // Nothing differs: one read.
  let before = d1.statements;
  const same = await compareDigest(db, nodeId, inventoryDigest(vms), new Set());
  const equalStatements = d1.statements - before;
  if (same.resync.length) throw new Error("an equal digest asked for a resync");

  // One VM changed on the host behind the reports: the comparison names its bucket, and the scoped
  // answer is applied (upsert of the bucket's VMs, missing-marking within it).
  const changed = vms.map((v, i) =>
    i === 0 ? { ...v, state: "RUNNING" as const, libvirtState: "running" as const } : v,
  );
  before = d1.statements;
  const verdict = await compareDigest(db, nodeId, inventoryDigest(changed), new Set());
  const bucket = verdict.resync;
  if (bucket.length !== 1) throw new Error(`expected one differing bucket, got ${bucket.join(",")}`);
  const inScope = changed.filter((v) => bucket.includes(v.uuid[0]));
  await upsertReportedVms(db, nodeId, inScope, "scoped-1", "bench", 10_000);
  await markUnreportedMissingInScope(db, nodeId, "scoped-1", { buckets: bucket }, "bench");
  const differenceStatements = d1.statements - before;

  // CPU time of one comparison (D1 read on local SQLite included), at 50 and 5,000 VMs.
  const timeOne = async (n: number) => {
    const node = await nodeOf(n);
    const digest = inventoryDigest(node.vms);
    const runs = n > 1000 ? 5 : 50;
    const t0 = performance.now();
    for (let i = 0; i < runs; i++) await compareDigest(node.db, node.nodeId, digest, new Set());
    return (performance.now() - t0) / runs;
  };
  const ms50 = await timeOne(VMS);
  const ms5000 = await timeOne(5_000);

  return [
    {
      name: `digest: frame size at ${VMS} VMs`,
      value: bytes,
      unit: "bytes",
      ...goal("digestBytes", { value: bytes }),
      note: "16 buckets of 16 hex digits and a count, whatever the host's size",
    },
    { name: `digest: bytes per node per hour at ${VMS} VMs (every 60 s)`, value: bytes * PER_HOUR, unit: "bytes" },
    {
      name: "digest: D1 statements per digest, nothing differs",
      value: equalStatements,
      unit: "stmts",
      ...goal("digestStatements", { value: equalStatements }),
    },
    {
      name: `digest: D1 statements per node per hour at ${VMS} VMs, nothing differs`,
      value: equalStatements * PER_HOUR,
      unit: "stmts",
      ...goal("digestStatementsPerHour", { value: equalStatements * PER_HOUR }),
    },
    {
      name: "digest: D1 statements when one VM differs (compare + scoped resync applied)",
      value: differenceStatements,
      unit: "stmts",
      note: "the resync frame and its scoped inventory cost no D1 reads beyond these",
    },
    {
      name: `digest: one comparison at ${VMS} VMs (SQLite read + hash)`,
      value: Math.round(ms50 * 100) / 100,
      unit: "ms",
    },
    {
      name: "digest: one comparison at 5,000 VMs (SQLite read + hash)",
      value: Math.round(ms5000 * 10) / 10,
      unit: "ms",
    },
  ];
}
