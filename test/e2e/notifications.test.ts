// Notifications end to end: the real control plane (wrangler dev) posting to receivers on
// loopback (scripts/webhook-receiver.ts, which checks every signature), a real agent on libvirt's
// test driver. Node offline/online, a flag, a stuck VM and its repair each arrive once; a receiver
// answering 500 gets the same delivery id again; one that is down gets everything once it is back;
// a deleted target gets nothing more.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane, freePort } from "../support/control-plane.ts";
import type { AgentProcess } from "../support/agent.ts";
import { WebhookReceiver, type Delivery } from "../../scripts/webhook-receiver.ts";
import {
  DEMO,
  enrollAgent,
  eventually,
  json,
  SHORT_DEADLINES,
  waitConnected,
  waitRequestSettled,
  waitVmState,
} from "./journey.ts";

const ALL = ["vm.stuck", "vm.repaired", "vm.flagged", "node.offline", "node.online"];
/** Retry timing shortened for the test: 300 ms, 600 ms, 1.2 s, then every 2 s. */
const BACKOFF = { NOTIFY_BACKOFF_BASE_MS: "300", NOTIFY_BACKOFF_CAP_MS: "2000" };

let cp: ControlPlane;
let agent: AgentProcess;
let nodeId: string;
const receivers = {
  main: new WebhookReceiver("main-secret ✓ with Unicode"),
  flaky: new WebhookReceiver("flaky-secret"), // answers 500 twice to every delivery
  down: new WebhookReceiver("down-secret"), // not listening until the end
  deleted: new WebhookReceiver("deleted-secret"), // its target deleted after the first delivery
  slack: new WebhookReceiver("slack-secret"),
};
const targetIds: Record<keyof typeof receivers, string> = { main: "", flaky: "", down: "", deleted: "", slack: "" };

async function addTarget(name: string, r: WebhookReceiver, events = ALL, format?: "slack") {
  const res = await cp.api("/api/notifications/targets", {
    method: "POST",
    json: { name, url: r.url, secret: r.secret, events, ...(format ? { format } : {}) },
  });
  const text = await res.text();
  expect(res.status, text).toBe(201);
  expect(text).not.toContain(r.secret);
  return (JSON.parse(text) as { target: { id: string } }).target.id;
}

/** Deliveries of `event` (first arrival of each delivery id) at `r`. */
const distinct = (r: WebhookReceiver, event?: string) => {
  const seen = new Map<string, Delivery>();
  for (const d of r.received) if ((!event || d.event === event) && !seen.has(d.id)) seen.set(d.id, d);
  return [...seen.values()];
};

const waitFor = (what: string, r: WebhookReceiver, event: string, count: number, timeoutMs = 30_000) =>
  eventually(
    `${count} ${event} at ${what}`,
    async () => (distinct(r, event).length >= count ? distinct(r, event) : undefined),
    timeoutMs,
    50,
  );

beforeAll(async () => {
  // Ports below the kernel's ephemeral range: the down and deleted receivers come back on theirs
  // later, and meanwhile no socket opened by chance (wrangler and workerd open many) can be given them.
  for (const [name, r] of Object.entries(receivers)) if (name !== "down") await r.up(await freePort());
  // The down receiver's port is taken and released, so nothing answers there yet.
  await receivers.down.up(await freePort());
  await receivers.down.down();
  const failures = new Map<string, number>();
  receivers.flaky.answer = (d) => {
    const n = (failures.get(d.id) ?? 0) + 1;
    failures.set(d.id, n);
    return n <= 2 ? 500 : 200;
  };
  cp = await ControlPlane.start({
    vars: { ...SHORT_DEADLINES, ...BACKOFF, STUCK_AFTER_MS: "2000", RECONCILE_INTERVAL_MS: "1000" },
  });
  for (const name of Object.keys(receivers) as (keyof typeof receivers)[]) {
    targetIds[name] = await addTarget(
      `${name} receiver`,
      receivers[name],
      name === "slack" ? ["node.offline"] : ALL,
      name === "slack" ? "slack" : undefined,
    );
  }
  ({ nodeId, agent } = await enrollAgent(cp, "notify-node"));
}, 120_000);

afterAll(async () => {
  await agent?.stop();
  await cp?.dispose();
  for (const r of Object.values(receivers)) await r.down();
});

describe("notification targets", () => {
  it("are listed without their secret; bad URLs and unknown events are refused with 400", async () => {
    const { targets } = await json<{ targets: { id: string; url: string; events: string[] }[] }>(
      await cp.api("/api/notifications/targets"),
    );
    expect(targets.map((t) => t.id)).toEqual(expect.arrayContaining(Object.values(targetIds)));
    const listed = JSON.stringify(targets);
    for (const r of Object.values(receivers)) expect(listed).not.toContain(r.secret);
    for (const [body, field] of [
      [{ name: "x", url: "http://hooks.example.com/x", secret: "s", events: ["node.offline"] }, /url: .*https/],
      [{ name: "x", url: "ftp://127.0.0.1/x", secret: "s", events: ["node.offline"] }, /url: must be https/],
      [{ name: "x", url: "https://hooks.example.com/x", secret: "s", events: ["vm.exploded"] }, /events/],
      [{ name: "x", url: "https://hooks.example.com/x", secret: "", events: ["node.offline"] }, /secret/],
      [{ name: "x", url: "https://hooks.example.com/x", secret: "s", events: [] }, /events/],
    ] as const) {
      const res = await cp.api("/api/notifications/targets", { method: "POST", json: body });
      expect(res.status).toBe(400);
      expect((await json(res)).error.message).toMatch(field);
    }
  });

  it("the test button posts at once and answers how the receiver took it", async () => {
    const { delivery } = await json(
      await cp.api(`/api/notifications/targets/${targetIds.main}/test`, { method: "POST" }),
    );
    expect(delivery).toMatchObject({
      event: "test",
      status: "delivered",
      attempts: [{ httpStatus: 200, error: null }],
    });
    const got = distinct(receivers.main, "test");
    expect(got).toHaveLength(1);
    expect(got[0].signatureOk).toBe(true);
  });
});

describe("deliveries", () => {
  it("node.online on enrollment: signed JSON {id, event, at, node, vm, message}, the delivery id in its header", async () => {
    const [online] = await waitFor("main", receivers.main, "node.online", 1);
    expect(online.signatureOk).toBe(true);
    expect(online.body).toEqual({
      id: online.id,
      event: "node.online",
      at: expect.any(String),
      node: { id: nodeId, name: "notify-node" },
      vm: null,
      message: expect.any(String),
    });
    expect(online.headers["content-type"]).toContain("application/json");
    await waitFor("deleted", receivers.deleted, "node.online", 1);
    await receivers.deleted.down(); // what comes next waits for a retry there, until its target is deleted
  });

  it("force reset of a running VM, agent stopped (node.offline), started again (node.online, vm.flagged)", async () => {
    const forced = await cp.api(`/api/vms/${DEMO.web01}/reset_state?force=true`, { method: "POST" });
    expect(forced.status).toBe(200);
    const stoppedAt = Date.now();
    await agent.stop();
    const [offline] = await waitFor("main", receivers.main, "node.offline", 1);
    console.log(`agent stopped -> node.offline at the receiver: ${offline.receivedAt - stoppedAt} ms`);
    expect(offline.body).toMatchObject({ event: "node.offline", node: { id: nodeId, name: "notify-node" } });

    const [slack] = await waitFor("slack", receivers.slack, "node.offline", 1);
    expect(slack.signatureOk).toBe(true);
    expect(slack.body).toEqual({ text: expect.stringMatching(/^\[node\.offline\] node notify-node: /) });

    await agent.restart();
    await waitConnected(cp, nodeId);
    await waitFor("main", receivers.main, "node.online", 2);
    const [flag] = await waitFor("main", receivers.main, "vm.flagged", 1);
    expect(flag.body).toMatchObject({
      event: "vm.flagged",
      vm: { id: DEMO.web01, name: "web-01" },
      node: { id: nodeId },
      message: expect.stringMatching(/force-reset/),
    });
  });

  it("a stop the frozen agent never acknowledges leaves the VM stuck: vm.stuck, then vm.repaired once the reconciler asks the thawed agent", async () => {
    agent.freeze();
    try {
      const res = await cp.api(`/api/vms/${DEMO.db01}/stop`, { method: "POST" });
      expect(res.status).toBe(202);
      const { request } = await json(res);
      // Past ACK_TIMEOUT_MS the request has failed and the VM is left in STOPPING with nothing in flight.
      expect((await waitRequestSettled(cp, request.id)).status).toBe("failed");
      expect((await waitVmState(cp, DEMO.db01, "STOPPING")).state).toBe("STOPPING");
      // The reconciler asks the frozen agent at once and gets no answer; past STUCK_AFTER_MS it says so.
      const [stuck] = await waitFor("main", receivers.main, "vm.stuck", 1);
      expect(stuck.body).toMatchObject({
        event: "vm.stuck",
        vm: { id: DEMO.db01, name: "db-01" },
        message: expect.stringMatching(/STOPPING/),
      });
    } finally {
      agent.thaw();
    }
    const [repaired] = await waitFor("main", receivers.main, "vm.repaired", 1);
    expect(repaired.body).toMatchObject({
      event: "vm.repaired",
      vm: { id: DEMO.db01 },
      message: expect.stringMatching(/stuck in STOPPING, the hypervisor reports (RUNNING|STOPPED)/),
    });
  });

  it("deleting a target cancels what still waits for it, and nothing more is sent there", async () => {
    await eventually("a delivery of the deleted-to-be target failed once", async () => {
      const { deliveries } = await json(await cp.api(`/api/notifications/deliveries?target_id=${targetIds.deleted}`));
      return deliveries.some(
        (d: { status: string; attempts: unknown[] }) => d.status === "pending" && d.attempts.length > 0,
      );
    });
    const res = await cp.api(`/api/notifications/targets/${targetIds.deleted}`, { method: "DELETE" });
    expect(res.status).toBe(200);
    expect((await cp.api(`/api/notifications/targets/${targetIds.deleted}`, { method: "DELETE" })).status).toBe(404);
    await receivers.deleted.up();
    const { deliveries } = await json(await cp.api(`/api/notifications/deliveries?target_id=${targetIds.deleted}`));
    expect(deliveries.filter((d: { status: string }) => d.status === "pending")).toEqual([]);
    expect(deliveries.filter((d: { status: string }) => d.status === "cancelled").length).toBeGreaterThan(0);
  });

  it("each event reached each live target once; every signature checks out", async () => {
    // Room for a duplicate to show up (the reconciler keeps looking every second).
    await new Promise((r) => setTimeout(r, 3_000));
    const count = (r: WebhookReceiver) => Object.fromEntries(ALL.map((e) => [e, distinct(r, e).length]));
    expect(count(receivers.main)).toEqual({
      "node.online": 2,
      "node.offline": 1,
      "vm.flagged": 1,
      "vm.stuck": 1,
      "vm.repaired": 1,
    });
    expect(receivers.main.received.filter((d) => d.event !== "test")).toHaveLength(6); // no id twice
    for (const r of Object.values(receivers)) expect(r.received.every((d) => d.signatureOk)).toBe(true);
    // Its first delivery arrived; the rest were cancelled with it (it has been listening again since).
    expect(receivers.deleted.received.map((d) => d.event)).toEqual(["node.online"]);
  });

  it("a receiver answering 500 gets the same delivery (id and bytes) again until it answers 2xx; the attempts are listed", async () => {
    const flaky = await eventually(
      "every flaky delivery done",
      async () => {
        const ids = distinct(receivers.flaky).map((d) => d.id);
        const done =
          ids.length === 6 && ids.every((id) => receivers.flaky.received.filter((d) => d.id === id).length === 3);
        return done ? ids : undefined;
      },
      30_000,
    );
    for (const id of flaky) {
      const tries = receivers.flaky.received.filter((d) => d.id === id);
      expect(tries.map((d) => d.answered)).toEqual([500, 500, 200]);
      expect(new Set(tries.map((d) => d.raw)).size).toBe(1);
    }
    const sample = receivers.flaky.received.filter((d) => d.id === flaky[0]);
    console.log(
      `retry schedule seen (NOTIFY_BACKOFF_BASE_MS=300): gaps ${sample
        .slice(1)
        .map((d, i) => d.receivedAt - sample[i].receivedAt)
        .join(" ms, ")} ms`,
    );
    const { deliveries } = await json(await cp.api(`/api/notifications/deliveries?target_id=${targetIds.flaky}`));
    expect(deliveries).toHaveLength(6);
    for (const d of deliveries) {
      expect(d).toMatchObject({ targetId: targetIds.flaky, status: "delivered" });
      expect(d.attempts.map((a: { httpStatus: number }) => a.httpStatus)).toEqual([500, 500, 200]);
    }
  });

  it("a receiver down for a while gets everything once it is back", async () => {
    const pending = await json(await cp.api(`/api/notifications/deliveries?target_id=${targetIds.down}`));
    expect(pending.deliveries.length).toBe(6);
    for (const d of pending.deliveries) {
      expect(d.status).toBe("pending");
      expect(d.attempts.length).toBeGreaterThan(0);
      expect(d.attempts[0]).toMatchObject({ httpStatus: null, error: expect.stringMatching(/no answer/) });
    }
    await receivers.down.up();
    await eventually(
      "all six at the receiver that was down",
      async () => distinct(receivers.down).length === 6,
      30_000,
    );
    expect(
      distinct(receivers.down)
        .map((d) => d.event)
        .sort(),
    ).toEqual(
      distinct(receivers.main)
        .filter((d) => d.event !== "test")
        .map((d) => d.event)
        .sort(),
    );
  });
});

describe("qx notifications", () => {
  it("adds a target, sends a test, lists deliveries and removes it", async () => {
    const { runCli } = await import("../../cli/qx.ts");
    const env = { QX_URL: cp.url, QX_API_TOKEN: cp.adminToken, QX_CONFIG: "/nonexistent/qx.json" };
    const qx = async (...args: string[]) => {
      const lines: string[] = [];
      const code = await runCli(args, env, { log: (l) => lines.push(l), err: (l) => lines.push(l) });
      return { code, out: lines.join("\n") };
    };
    const cli = new WebhookReceiver("cli-secret");
    await cli.up();
    try {
      const added = await qx(
        "notifications",
        "add",
        "from the CLI",
        cli.url,
        "--secret",
        cli.secret,
        "--events",
        "node.online,node.offline",
        "--json",
      );
      expect(added.code).toBe(0);
      const target = JSON.parse(added.out) as { id: string; events: string[] };
      expect(target.events).toEqual(["node.online", "node.offline"]);
      expect(added.out).not.toContain(cli.secret);
      expect((await qx("notifications", "list")).out).toContain("from the CLI");
      expect((await qx("notifications", "test", target.id)).out).toMatch(/delivered \(HTTP 200\)/);
      expect(cli.received.map((d) => [d.event, d.signatureOk])).toEqual([["test", true]]);
      expect((await qx("notifications", "deliveries", "--target", target.id)).out).toMatch(
        /test\s+delivered\s+1\s+HTTP 200/,
      );
      expect((await qx("notifications", "rm", target.id)).code).toBe(0);
      expect((await qx("notifications", "list")).out).not.toContain("from the CLI");
    } finally {
      await cli.down();
    }
  });
});
