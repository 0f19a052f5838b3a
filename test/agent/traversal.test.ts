// Nothing given to the agent — a domain name in a command or anything in a local API URL — reads a
// file outside the log directory or the web directory: encoded, double-encoded, backslashes, NUL,
// Unicode dots, absolute paths, and symlinks pointing out.
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveLogPath } from "../../agent/logs/log-path.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { startLocalApi, type LocalApi } from "../../agent/local/local-api.ts";
import { HostTokenCheck, ensureHostToken } from "../../agent/local/host-token.ts";
import { TEST_URI, VMS, silentLog, tempDir } from "./helpers.ts";

const SECRET = "TOP-SECRET-CONTENT-never-served";
const base = tempDir("qx-traversal-");
const tokenFile = ensureHostToken(join(base, "state")).path;
const HOST_TOKEN = readFileSync(tokenFile, "utf8").trim();
const hostToken = new HostTokenCheck(tokenFile, () => {});
const logDir = join(base, "logs");
const webDir = join(base, "web");

const CORPUS = [
  "../secret",
  "../secret.txt",
  "..%2fsecret",
  "%2e%2e%2fsecret",
  "%2e%2e/secret",
  "%252e%252e%252fsecret",
  "%25252e%25252e%25252fsecret",
  "..\\secret",
  "..%5csecret",
  "%5c..%5csecret",
  "web-running\0",
  "web-running%00",
  "web-running%2500",
  "/etc/passwd",
  "%2fetc%2fpasswd",
  "\u2024\u2024/secret", // one-dot leaders
  "\uff0e\uff0e\uff0fsecret", // fullwidth dot and solidus
  "%e2%80%a4%e2%80%a4%2fsecret",
  "%c0%ae%c0%ae%2fsecret", // overlong UTF-8 dots
  "....//secret",
  "web-running/../../secret",
  "..",
  ".",
  "",
  "db-paused", // its log is a symlink to ../secret.txt
];

let libvirt: Libvirt;
let api: LocalApi;
let port: number;

beforeAll(async () => {
  mkdirSync(logDir);
  mkdirSync(join(webDir, "assets"), { recursive: true });
  writeFileSync(join(base, "secret.txt"), SECRET + "\n");
  writeFileSync(join(base, "secret.log"), SECRET + "\n");
  writeFileSync(join(logDir, `${VMS.running.name}.log`), "boot\nqemu-system-x86_64: terminating on signal 15\n");
  symlinkSync(join(base, "secret.txt"), join(logDir, `${VMS.paused.name}.log`)); // points out
  symlinkSync(join(logDir, `${VMS.running.name}.log`), join(logDir, `${VMS.shutoff.name}.log`)); // stays inside
  writeFileSync(join(webDir, "host.html"), "<!doctype html><title>host view</title>");
  writeFileSync(join(webDir, "assets", "host.js"), "console.log('host')");
  symlinkSync(join(base, "secret.txt"), join(webDir, "leak.txt"));
  libvirt = new Libvirt(TEST_URI, silentLog);
  api = await startLocalApi({
    host: "127.0.0.1",
    port: 0,
    acceptsToken: (t) => hostToken.accepts(t),
    libvirt,
    logDir,
    webDir,
    log: silentLog,
  });
  port = Number(new URL(api.url).port);
});

afterAll(async () => {
  await api?.close();
  await libvirt?.close();
  rmSync(base, { recursive: true, force: true });
});

/** A raw HTTP/1.1 GET: the path goes on the wire exactly as given (no client-side normalization). */
function rawGet(
  path: string,
  auth: string | null = `Bearer ${HOST_TOKEN}`,
): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    let data = "";
    sock.on("data", (d) => (data += d.toString("latin1")));
    sock.on("error", reject);
    sock.on("close", () => {
      const [head = "", ...rest] = data.split("\r\n\r\n");
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
        headers: head,
        body: rest.join("\r\n\r\n"),
      });
    });
    sock.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth ? `Authorization: ${auth}\r\n` : ""}Connection: close\r\n\r\n`,
      "latin1",
    );
  });
}

describe("log-path", () => {
  it.each(CORPUS)("refuses %j", (name) => {
    let path: string | null = null;
    let code: string | undefined;
    try {
      path = resolveLogPath(logDir, name);
    } catch (err) {
      code = (err as { code?: string }).code;
    }
    expect(path).toBeNull();
    expect(["invalid_name", "log_not_found"]).toContain(code);
  });

  it("resolves a plain name, and a symlink that stays inside the directory", () => {
    expect(resolveLogPath(logDir, VMS.running.name)).toBe(join(logDir, `${VMS.running.name}.log`));
    expect(resolveLogPath(logDir, VMS.shutoff.name)).toBe(join(logDir, `${VMS.running.name}.log`));
  });
});

describe("local API", () => {
  it("requires the host token (timing-safe compare)", async () => {
    for (const auth of [
      null,
      "Bearer wrong",
      `Bearer ${HOST_TOKEN}x`,
      `bearer${HOST_TOKEN}`,
      `Bearer ${HOST_TOKEN} extra`,
      HOST_TOKEN,
    ]) {
      const res = await rawGet("/api/v1/vms", auth);
      expect(res.status, String(auth)).toBe(401);
      expect(JSON.parse(res.body)).toMatchObject({ success: false, error: { code: "unauthorized" } });
    }
  });

  it("lists the host's VMs and reads a log by UUID or name", async () => {
    const list = await rawGet("/api/v1/vms");
    expect(list.status).toBe(200);
    const { vms } = JSON.parse(list.body) as { vms: { id: string; name: string; state: string }[] };
    expect(vms).toHaveLength(8);
    expect(vms.find((v) => v.id === VMS.paused.uuid)).toMatchObject({ name: VMS.paused.name, state: "PAUSED" });
    const filtered = JSON.parse((await rawGet("/api/v1/vms?state=RUNNING&limit=100")).body) as {
      vms: { name: string }[];
    };
    expect(filtered.vms.map((v) => v.name).sort()).toEqual(["batch-blocked", "web-running"]);

    for (const id of [VMS.running.uuid, VMS.running.name, VMS.running.uuid.toUpperCase()]) {
      const res = await rawGet(`/api/v1/vms/${id}/logs?lines=1`);
      expect(res.status, id).toBe(200);
      expect(JSON.parse(res.body)).toMatchObject({
        qemuLog: "qemu-system-x86_64: terminating on signal 15\n",
        logPath: join(logDir, `${VMS.running.name}.log`),
        linesReturned: 1,
        truncated: true,
        logSizeBytes: 50,
        lastModified: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      });
    }
  });

  it("answers the JSON error envelope: 400 for lines out of range, 404 vm_not_found / log_not_found", async () => {
    for (const lines of ["0", "10001", "abc", "1.5", "-1", "1e3"]) {
      const res = await rawGet(`/api/v1/vms/${VMS.running.uuid}/logs?lines=${lines}`);
      expect(res.status, lines).toBe(400);
      expect(JSON.parse(res.body).error.message).toMatch(/1 to 10000/);
    }
    const ghost = await rawGet("/api/v1/vms/99999999-0000-4000-8000-000000000000/logs");
    expect(ghost.status).toBe(404);
    expect(JSON.parse(ghost.body).error.code).toBe("vm_not_found");
    const nolog = await rawGet(`/api/v1/vms/${VMS.crashed.uuid}/logs`);
    expect(nolog.status).toBe(404);
    expect(JSON.parse(nolog.body).error.code).toBe("log_not_found");
  });

  it("a log symlinked out of the log directory is refused", async () => {
    const res = await rawGet(`/api/v1/vms/${VMS.paused.uuid}/logs`);
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body).error.code).toBe("log_not_found");
    expect(res.body).not.toContain(SECRET);
  });

  it.each(CORPUS.map((c) => encodeForWire(c)))("log route never reads outside: %j", async (id) => {
    const res = await rawGet(`/api/v1/vms/${id}/logs?lines=10`);
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.body).not.toContain(SECRET);
  });

  const STATIC_CORPUS = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%252e%252e/secret.txt",
    "/.%2e/secret.txt",
    "/..%5csecret.txt",
    "/%5c..%5csecret.txt",
    "/assets/..%2f..%2fsecret.txt",
    "/assets/%2e%2e/%2e%2e/secret.txt",
    "//etc/passwd",
    "/etc/passwd",
    "/%2fetc%2fpasswd",
    "/leak.txt",
    "/host.html%00.js",
    "/%e2%80%a5/secret.txt",
    "/%ef%bc%8e%ef%bc%8e/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/assets/../../secret.txt",
    "/api/../../secret.txt",
  ];

  it.each(STATIC_CORPUS)("static files never read outside: %j", async (path) => {
    const res = await rawGet(path, null);
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.body).not.toContain(SECRET);
    expect(res.body).not.toContain("root:x:0:0");
  });

  it("a raw NUL or backslash in the request line never reaches a file", async () => {
    for (const path of ["/\0", "/assets/\0../../secret.txt", "/\\..\\secret.txt", "/api/v1/vms/..\\..\\secret/logs"]) {
      const res = await rawGet(path);
      expect(res.status === 0 || (res.status >= 400 && res.status < 500), path).toBe(true);
      expect(res.body).not.toContain(SECRET);
    }
  });

  it("serves the host view at / with a strict CSP, and its assets", async () => {
    const page = await rawGet("/", null);
    expect(page.status).toBe(200);
    expect(page.body).toContain("host view");
    expect(page.headers.toLowerCase()).toContain("content-security-policy: default-src 'self'");
    const asset = await rawGet("/assets/host.js", null);
    expect(asset.status).toBe(200);
    expect(asset.headers.toLowerCase()).toContain("content-type: text/javascript");
  });

  it("says the web build is missing when host.html is absent (503, not a crash)", async () => {
    const other = await startLocalApi({
      host: "127.0.0.1",
      port: 0,
      acceptsToken: (t) => hostToken.accepts(t),
      libvirt,
      logDir,
      webDir: join(base, "nowhere"),
      log: silentLog,
    });
    try {
      const res = await fetch(other.url + "/");
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("web_build_missing");
    } finally {
      await other.close();
    }
  });
});

/** Request-line safe form of a corpus entry: raw bytes that HTTP cannot carry are percent-encoded. */
function encodeForWire(s: string): string {
  return s.replace(/[^\x21-\x7e]/gu, (ch) => encodeURIComponent(ch)) || "%20";
}
