// End to end on the real control plane (wrangler dev: workerd with local D1): while the retention
// cron deletes a hundred thousand old host events, a viewer's list of VMs is answered in between
// its deletes, not after the run. Local D1 runs inside workerd, which takes no new request off its
// sockets while back-to-back D1 answers keep it busy; the run must leave it a turn.
import { DatabaseSync } from "node:sqlite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { d1File } from "../../bench/d1-writes.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { eventually, json, startControlPlane } from "./journey.ts";

/** One cron run's worth at the shipped settings (200 statements of 500 rows). */
const OLD_ROWS = 100_000;

let cp: ControlPlane;
let viewer: string;
let db: DatabaseSync;

beforeAll(async () => {
  cp = await startControlPlane();
  viewer = (
    await json<{ token: string }>(
      await cp.api("/api/tokens", { method: "POST", json: { name: "viewer", role: "viewer" } }),
    )
  ).token;
  // Written straight into the database file while wrangler is stopped: 40 days old, past the 30 days
  // host events are kept.
  await cp.stop();
  const seed = new DatabaseSync(d1File(cp.persistDir));
  seed.exec(
    `INSERT INTO vm_events (vm_id, at, actor, action, from_state, to_state, source, message)
     WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${OLD_ROWS - 1})
     SELECT 'gone-' || (i % 100), ${Date.now() - 40 * 86_400_000} + i, 'agent:retention', 'state_changed',
            'running', 'shutoff', 'agent', 'the guest stopped' FROM n`,
  );
  seed.close();
  await cp.boot();
  db = new DatabaseSync(d1File(cp.persistDir), { readOnly: true });
  db.exec("PRAGMA busy_timeout = 10000");
}, 180_000);

afterAll(async () => {
  db?.close();
  await cp?.dispose();
});

const oldRows = () =>
  (db.prepare("SELECT count(*) AS n FROM vm_events WHERE source = 'agent'").get() as { n: number }).n;

describe("retention beside the API", () => {
  it("a list of VMs made during a retention run is answered while the run is still deleting", async () => {
    expect(oldRows()).toBe(OLD_ROWS);
    const run = fetch(`${cp.url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*`).then((r) => r.text());
    try {
      await eventually("the run's first deletes", async () => oldRows() < OLD_ROWS, 60_000, 20);
      const res = await cp.api("/api/vms?limit=50", { token: viewer });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      // Held until the run ended, the list would find its rows all gone.
      const leftWhenAnswered = oldRows();
      expect(leftWhenAnswered).toBeGreaterThan(0);
    } finally {
      expect((await run).trim()).toBe("ok");
    }
    // And the run went on to delete every one of them.
    await eventually("the run's last deletes", async () => oldRows() === 0, 60_000);
  }, 180_000);
});
