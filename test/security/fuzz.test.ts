// Fuzzing every REST route's path parameters, query and body with fast-check against the real
// control plane (wrangler dev on loopback; rate limits lifted so the fuzzer reaches validation
// instead of the 429 in front of it), with a simulated agent answering for a few real VMs. Every
// answer must be JSON, never a 5xx, and every error the `{success:false, error:{code,message}}`
// envelope with no stack trace. Plus a path-traversal corpus against the logs route. (The agent's
// local API has its corpus in test/agent/traversal.test.ts.)
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../support/control-plane.ts";
import { createNode, eventually, json, listVms } from "../e2e/journey.ts";
import { enroll, SimAgent, simVms } from "../../bench/fleet-agent.ts";

let cp: ControlPlane;
let agent: SimAgent;
let vmIds: string[] = [];
let nodeId = "";
const tally = { requests: 0, fiveXx: 0, statuses: {} as Record<number, number> };

beforeAll(async () => {
  cp = await ControlPlane.start({
    rateLimits: false,
    vars: { QUERY_TIMEOUT_MS: "1500", ACK_TIMEOUT_MS: "1500", STOP_GRACE_MS: "1500" },
  });
  const { node, joinToken } = await createNode(cp, "fuzz-node");
  nodeId = node.id;
  agent = new SimAgent(cp.url, (await enroll(cp.url, joinToken)).credential, simVms(4, "fuzz"));
  await agent.start();
  await eventually("fuzz VMs", async () => (await listVms(cp, node.id)).length === 4);
  vmIds = [...agent.vms.keys()];
});
afterAll(async () => {
  await agent?.stop();
  await cp?.dispose();
  console.log(`fuzz: ${tally.requests} requests, 5xx ${tally.fiveXx}, statuses ${JSON.stringify(tally.statuses)}`);
});

type Call = {
  method: string;
  path: string;
  query?: string;
  body?: string;
  contentType?: string;
  token?: string | null;
};

/** Sends one fuzzed call and checks the answer's shape; returns the status. */
async function send(c: Call): Promise<number> {
  const headers: Record<string, string> = {};
  const token = c.token === undefined ? cp.adminToken : c.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (c.contentType) headers["content-type"] = c.contentType;
  const url = new URL(`${cp.url}${c.path}${c.query ? `?${c.query}` : ""}`);
  const res = await fetch(url, {
    method: c.method,
    headers,
    body: c.method === "GET" || c.method === "HEAD" ? undefined : c.body,
  });
  const text = await res.text();
  tally.requests++;
  tally.statuses[res.status] = (tally.statuses[res.status] ?? 0) + 1;
  if (res.status >= 500) tally.fiveXx++;
  const where = `${c.method} ${c.path}?${c.query ?? ""} body=${(c.body ?? "").slice(0, 80)} → ${res.status} ${text.slice(0, 200)}`;
  expect(res.status, where).toBeLessThan(500);
  expect(text, where).not.toMatch(/root:x:0:0/);
  // A path whose dot segments the URL parser resolved out of /api or /agent is the dashboard's
  // static side (index.html or a bare 405 from the assets server), not the API's contract.
  if (!/^\/(api|agent)(\/|$)/.test(url.pathname)) return res.status;
  expect(res.headers.get("content-type") ?? "", where).toMatch(/application\/json/);
  const body = JSON.parse(text);
  if (res.status >= 400) {
    expect(body, where).toMatchObject({
      success: false,
      error: { code: expect.any(String), message: expect.any(String) },
    });
    expect(text, where).not.toMatch(/\bat \S+\.(ts|js):\d+|Error: .*\n\s+at /);
  }
  return res.status;
}

const TRAVERSAL = [
  "../../../../etc/passwd",
  "..%2f..%2f..%2fetc%2fpasswd",
  "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
  "%252e%252e%252fetc%252fpasswd",
  "..\\..\\..\\etc\\passwd",
  "..%5c..%5cetc%5cpasswd",
  "\u2025/\u2025/etc/passwd",
  "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd",
  "web-01.log%00.txt",
  "web-01%00",
  "/etc/passwd",
  "....//....//etc/passwd",
  "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
  "%uff0e%uff0e/etc/passwd",
];

const segment = fc.oneof(
  fc.uuid().map(String),
  fc.constantFrom(...TRAVERSAL),
  fc.string({ maxLength: 80 }).map(encodeURIComponent),
  fc.string({ unit: "binary", maxLength: 40 }).map(encodeURIComponent),
  fc.constantFrom("", "%", "%zz", "%00", "null", "undefined", "-1", "0", "1e309", "ＡＢＣ", "%F0%9F%92%A9"),
);
const knownKeys = ["lines", "force", "wait", "node_id", "state", "limit", "cursor", "q", "reason", "role", "name"];
const queryValue = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.integer().map(String),
  fc.double().map(String),
  fc.constantFrom(
    "true",
    "false",
    "1",
    "0",
    "",
    "10001",
    "-5",
    "1.5",
    "0x10",
    "RUNNING",
    "running",
    "%",
    "a".repeat(2000),
  ),
);
const query = fc
  .array(fc.tuple(fc.oneof(fc.constantFrom(...knownKeys), fc.string({ maxLength: 10 })), queryValue), { maxLength: 4 })
  .map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&"));
const body = fc.oneof(
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc
    .record(
      {
        name: fc.oneof(fc.string({ maxLength: 300 }), fc.jsonValue()),
        role: fc.oneof(fc.constantFrom("viewer", "operator", "admin", "root", ""), fc.jsonValue()),
      },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify(v)),
  fc
    .record(
      { force: fc.jsonValue(), reason: fc.jsonValue(), joinToken: fc.jsonValue(), hostname: fc.jsonValue() },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify(v)),
  fc
    .record(
      {
        node_id: fc.oneof(
          fc.constant(() => nodeId),
          fc.string({ maxLength: 200 }),
          fc.jsonValue(),
        ),
        reason: fc.oneof(fc.string({ maxLength: 600 }), fc.jsonValue()),
      },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify({ ...v, ...(typeof v.node_id === "function" ? { node_id: v.node_id() } : {}) })),
  fc.string({ maxLength: 200 }),
  fc.constantFrom("", "{", "null", "[]", '{"__proto__":{"admin":true}}', "\u0000", '{"name":"a","name":"b"}'),
);
const contentType = fc.option(
  fc.constantFrom(
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=utf-16",
  ),
  { nil: undefined },
);
const token = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) }, // the admin token
  { weight: 1, arbitrary: fc.constant(null) },
  {
    weight: 1,
    arbitrary: fc.oneof(
      fc.string({ maxLength: 60 }).filter((s) => /^[\x21-\x7e]*$/.test(s)),
      fc.constantFrom("qxn_x", "qxj_x", "qxa_x", "Bearer"),
    ),
  },
);

/** Route templates; `:vm` takes a real VM id or a fuzzed segment, `:x` a fuzzed segment only. */
const ROUTES: [string, string][] = [
  ["GET", "/api/health"],
  ["GET", "/api/me"],
  ["GET", "/api/tokens"],
  ["POST", "/api/tokens"],
  ["DELETE", "/api/tokens/:x"],
  ["GET", "/api/nodes"],
  ["POST", "/api/nodes"],
  ["GET", "/api/nodes/:x"],
  ["DELETE", "/api/nodes/:x"],
  ["POST", "/api/nodes/:x/rotate_token"],
  ["GET", "/api/vms"],
  ["GET", "/api/vms/:vm"],
  ["POST", "/api/vms/:vm/start"],
  ["POST", "/api/vms/:vm/stop"],
  ["POST", "/api/vms/:vm/reset_state"],
  ["GET", "/api/vms/:vm/logs"],
  ["GET", "/api/vms/:vm/events"],
  ["GET", "/api/vms/:vm/logs/last_known"],
  ["POST", "/api/vms/:vm/clear_flag"],
  ["POST", "/api/vms/:vm/rehome"],
  ["GET", "/api/requests/:x"],
  ["POST", "/agent/enroll"],
  ["GET", "/agent/connect"],
  ["POST", "/agent/poll"],
  ["POST", "/agent/send"],
  ["PUT", "/api/vms/:vm"],
  ["PATCH", "/api/nodes"],
  ["GET", "/api/:x"],
];

const call = fc
  .tuple(fc.constantFrom(...ROUTES), segment, fc.boolean(), query, body, contentType, token)
  .map(([[method, template], seg, realVm, q, b, ct, tok]): Call => {
    const path = template
      .replace(":vm", realVm && vmIds.length ? vmIds[seg.length % vmIds.length] : seg)
      .replace(":x", seg);
    return { method, path, query: q, body: b, contentType: ct, token: tok };
  });

describe("REST fuzzing", () => {
  it("thousands of random calls over every route: no 5xx, always the JSON envelope", async () => {
    const before = tally.requests;
    await fc.assert(
      fc.asyncProperty(call, async (c) => {
        await send(c);
      }),
      { numRuns: 3_000, interruptAfterTimeLimit: 150_000, markInterruptAsFailure: false },
    );
    expect(tally.requests - before).toBeGreaterThanOrEqual(1_000);
  }, 200_000);

  it("every parameter of the logs route against the traversal corpus: never a file's content, always 4xx JSON", async () => {
    const realVm = vmIds[0];
    for (const evil of TRAVERSAL) {
      for (const path of [
        `/api/vms/${evil}/logs`,
        `/api/vms/${realVm}/logs/${evil}`,
        `/api/vms/${encodeURIComponent(evil)}/logs`,
      ]) {
        const status = await send({ method: "GET", path, query: "lines=10" });
        // Under /api it is a refusal; resolved out of /api by the URL parser it is the dashboard page.
        if (new URL(cp.url + path).pathname.startsWith("/api/")) expect(status, path).toBeGreaterThanOrEqual(400);
      }
      expect(
        await send({ method: "GET", path: `/api/vms/${realVm}/logs`, query: `lines=${encodeURIComponent(evil)}` }),
      ).toBe(400);
      expect(
        await send({
          method: "GET",
          path: `/api/vms/${realVm}/logs`,
          query: `lines=10&name=${encodeURIComponent(evil)}&path=${encodeURIComponent(evil)}`,
        }),
      ).toBe(200);
    }
    // The extra name/path parameters are ignored: the answer is still the VM's own log.
    const res = await json(await cp.api(`/api/vms/${realVm}/logs?lines=3&path=%2Fetc%2Fpasswd`));
    expect(res.logPath).toMatch(/\/fuzz-\d+\.log$/);
    expect(res.qemuLog).not.toMatch(/root:x:0:0/);
  });
});
