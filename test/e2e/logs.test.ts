// End to end: QEMU logs read by the real agent from the shipped demo logs, through the real Worker,
// and every error the logs route can answer (400 range, 404 log_not_found, 503 offline, 409 no node).
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LogsResponse } from "../../protocol/rest.ts";
import type { ControlPlane } from "../support/control-plane.ts";
import { DEMO_LOG_DIR, type AgentProcess } from "../support/agent.ts";
import { DEMO, enrollAgent, getVm, json, startControlPlane, waitConnected } from "./journey.ts";

let cp: ControlPlane;
let agent: AgentProcess;
let nodeId: string;

beforeAll(async () => {
  cp = await startControlPlane();
  ({ agent, nodeId } = await enrollAgent(cp, "logs"));
});

afterAll(async () => {
  await agent?.dispose();
  await cp?.dispose();
});

const logs = (vmId: string, query = "") => cp.api(`/api/vms/${vmId}/logs${query}`);
const fileLines = (name: string) =>
  readFileSync(join(DEMO_LOG_DIR, `${name}.log`), "utf8")
    .replace(/\n$/, "")
    .split("\n");

describe("reading a VM's QEMU log", () => {
  it("answers the last N lines with the file's facts", async () => {
    const res = await logs(DEMO.db01, "?lines=50");
    expect(res.status).toBe(200);
    const body = await json<LogsResponse>(res);
    const expected = fileLines("db-01").slice(-50);
    expect(body.linesReturned).toBe(50);
    expect(body.truncated).toBe(true);
    expect(body.qemuLog.replace(/\n$/, "").split("\n")).toEqual(expected);
    expect(body.qemuLog).toContain("No space left on device");
    expect(body.logPath.endsWith("/db-01.log")).toBe(true);
    expect(body.logSizeBytes).toBe(statSync(join(DEMO_LOG_DIR, "db-01.log")).size);
    expect(Date.parse(body.lastModified!)).toBeGreaterThan(0);
  });

  it("defaults to 100 lines, and returns the whole file (not truncated) when asked for more than it has", async () => {
    const byDefault = await json<LogsResponse>(await logs(DEMO.web01));
    expect(byDefault.linesReturned).toBe(100);
    expect(byDefault.truncated).toBe(true);

    const all = fileLines("web-01");
    const everything = await json<LogsResponse>(await logs(DEMO.web01, "?lines=10000"));
    expect(all.length).toBeGreaterThan(3000);
    expect(everything.linesReturned).toBe(all.length);
    expect(everything.truncated).toBe(false);
    expect(everything.qemuLog.replace(/\n$/, "").split("\n")).toEqual(all);
  });

  it("answers 400 saying the range for a line count that is not an integer from 1 to 10000", async () => {
    for (const lines of ["0", "10001", "-5", "abc", "1.5", "1e3"]) {
      const res = await logs(DEMO.db01, `?lines=${lines}`);
      expect(res.status, lines).toBe(400);
      const body = await json(res);
      expect(body.success).toBe(false);
      expect(body.error.message).toMatch(/1.*10000/);
    }
  });

  it("answers 404 log_not_found for a VM that never wrote a log, 404 for an unknown VM", async () => {
    const missing = await logs(DEMO.scratch);
    expect(missing.status).toBe(404);
    expect((await json(missing)).error.code).toBe("log_not_found");
    const unknown = await logs("00000000-0000-4000-8000-000000000000");
    expect(unknown.status).toBe(404);
    expect((await json(unknown)).success).toBe(false);
  });

  it("answers 503 node_offline once the node's agent is gone", async () => {
    await agent.stop();
    await waitConnected(cp, nodeId, false);
    const res = await logs(DEMO.db01, "?lines=10");
    expect(res.status).toBe(503);
    expect((await json(res)).error.code).toBe("node_offline");
  });

  it("answers 409 for a VM on no node (its node was deleted)", async () => {
    const del = await cp.api(`/api/nodes/${nodeId}`, { method: "DELETE" });
    expect(del.status).toBeLessThan(300);
    expect((await getVm(cp, DEMO.db01)).node_id).toBeNull();
    const res = await logs(DEMO.db01, "?lines=10");
    expect(res.status).toBe(409);
    expect((await json(res)).success).toBe(false);
  });
});
