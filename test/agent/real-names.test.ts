// Domain names as libvirt allows them — spaces, Cyrillic, the same word in Unicode NFC and NFD (two
// different domains, two different log files), parentheses, quotes, `%`, `&`, a leading dot, and a
// domain literally named `..` — on libvirt's test driver: listed, started and stopped, their logs
// read from `<log dir>/<name>.log` exactly as the name is spelled (commands, local API, live follow),
// and nothing outside the log directory read for any of them.
import { appendFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommandRunner } from "../../agent/host/commands.ts";
import { InventoryReporter } from "../../agent/host/inventory.ts";
import { Libvirt } from "../../agent/host/libvirt.ts";
import { startLocalApi, type LocalApi } from "../../agent/local/local-api.ts";
import { LogFollower } from "../../agent/logs/log-follow.ts";
import { resolveLogPath } from "../../agent/logs/log-path.ts";
import { MAX_LOG_BYTES, type AgentMessage } from "../../protocol/wire.ts";
import { recorder, silentLog, tempDir } from "./helpers.ts";

const SECRET = "OUTSIDE-THE-LOG-DIR-never-served";
const HOST_TOKEN = "real-names-host-token"; // the local API accepts exactly this token here

/** Each name with its UUID and runstate (1 running, 5 shut off). */
const DOMAINS = [
  { name: "Windows 11 Pro", runstate: 5 },
  { name: "тест-вм", runstate: 1 },
  { name: "\u0401лка", runstate: 1 }, // Ё as one code point (NFC)
  { name: "\u0415\u0308лка", runstate: 5 }, // Е + combining diaeresis (NFD): another domain, another file
  { name: "db (copy)", runstate: 1 },
  { name: `it's "quoted"`, runstate: 1 },
  { name: "100% cpu", runstate: 1 },
  { name: "%2e%2e%2fsecret", runstate: 1 }, // looks encoded: it is just a name
  { name: "R&D <lab>", runstate: 1 },
  { name: ".hidden", runstate: 1 },
  { name: "..", runstate: 5 },
].map((d, i) => ({ ...d, uuid: `31111111-0000-4000-8000-${String(i).padStart(12, "0")}` }));

const base = tempDir("qx-names-");
const logDir = join(base, "logs");
const xmlEscape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const logText = (name: string) => `2026-11-30 boot of [${name}]\nqemu-system-x86_64: last line of [${name}]\n`;
let uri: string;

beforeAll(() => {
  mkdirSync(logDir);
  writeFileSync(join(base, "secret.log"), SECRET + "\n");
  writeFileSync(join(base, ".log"), SECRET + "\n"); // what `<log dir>/..` + `.log` would be if paths were joined naively
  for (const d of DOMAINS) writeFileSync(join(logDir, `${d.name}.log`), logText(d.name));
  const body = DOMAINS.map(
    (d) =>
      `  <domain type="test"><name>${xmlEscape(d.name)}</name><uuid>${d.uuid}</uuid><memory unit="MiB">256</memory><vcpu>1</vcpu>` +
      `<os><type arch="x86_64">hvm</type></os><test:runstate>${d.runstate}</test:runstate></domain>`,
  ).join("\n");
  writeFileSync(
    join(base, "node.xml"),
    `<node xmlns:test="http://libvirt.org/schemas/domain/test/1.0">\n${body}\n</node>\n`,
  );
  uri = `test://${join(base, "node.xml")}`;
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

function runner() {
  const libvirt = new Libvirt(uri, silentLog);
  const rec = recorder();
  const r = new CommandRunner({ libvirt, logDir, send: rec.send, log: silentLog, serverNow: Date.now, stopPollMs: 20 });
  return { libvirt, rec, r };
}
const target = (d: { uuid: string; name: string }) => ({ vmId: d.uuid, name: d.name, deadline: Date.now() + 10_000 });
const logTextOf = (frames: AgentMessage[]) =>
  frames
    .filter((m) => m.type === "log.chunk")
    .map((m) => (m.payload as { text: string }).text)
    .join("");

describe("any libvirt domain name", () => {
  it("is listed exactly as libvirt spells it (NFC and NFD are two domains), and the inventory frames carry it", async () => {
    const { libvirt, rec } = runner();
    try {
      const vms = await libvirt.listDomains();
      for (const d of DOMAINS) expect(vms.find((v) => v.uuid === d.uuid)?.name, d.name).toBe(d.name);
      expect(vms).toHaveLength(DOMAINS.length);
      const inv = new InventoryReporter({ libvirt, send: rec.send, log: silentLog, pollMs: 60_000 });
      await inv.fullSync(); // the recorder parses each frame with the wire schema
      const sent = rec.sent
        .filter((m) => m.type === "inventory")
        .flatMap((m) => (m.payload as { vms: { name: string }[] }).vms.map((v) => v.name));
      expect(sent.sort()).toEqual(DOMAINS.map((d) => d.name).sort());
    } finally {
      await libvirt.close();
    }
  });

  it("each VM's log is <log dir>/<name>.log, byte for byte its own name's file", async () => {
    const { libvirt, rec, r } = runner();
    try {
      for (const d of DOMAINS) {
        const id = `logs-${d.uuid}`;
        await r.handle({ type: "vm.logs", id, payload: { ...target(d), lines: 10, maxBytes: MAX_LOG_BYTES } });
        const result = rec.of(id).find((m) => m.type === "result")?.payload as { logPath: string } | undefined;
        expect(result?.logPath, d.name).toBe(join(logDir, `${d.name}.log`));
        expect(logTextOf(rec.of(id)), d.name).toBe(logText(d.name));
        expect(logTextOf(rec.of(id))).not.toContain(SECRET);
      }
    } finally {
      await libvirt.close();
    }
  });

  it("is controlled: start, graceful stop request, force stop by UUID", async () => {
    const { libvirt, rec, r } = runner();
    try {
      const win = DOMAINS[0];
      await r.handle({ type: "vm.start", id: "start", payload: target(win) });
      expect(rec.of("start").find((m) => m.type === "result")?.payload).toMatchObject({ state: "RUNNING" });
      await r.handle({ type: "vm.forceStop", id: "force", payload: target(win) });
      expect(rec.of("force").find((m) => m.type === "result")?.payload).toMatchObject({ state: "STOPPED" });
      const dots = DOMAINS.find((d) => d.name === "..")!;
      await r.handle({ type: "vm.start", id: "start-dots", payload: target(dots) });
      expect(rec.of("start-dots").find((m) => m.type === "result")?.payload).toMatchObject({ state: "RUNNING" });
      expect((await libvirt.domain(dots.uuid)).name).toBe("..");
    } finally {
      await libvirt.close();
    }
  });

  it("confinement is on the resolved path: `..` is the file `...log` inside, `../x` and NUL name no file", () => {
    expect(resolveLogPath(logDir, "..")).toBe(join(logDir, "...log"));
    expect(resolveLogPath(logDir, ".hidden")).toBe(join(logDir, ".hidden.log"));
    for (const name of ["../secret", "../", "/etc/passwd", "x\0", ""]) {
      expect(() => resolveLogPath(logDir, name), JSON.stringify(name)).toThrow(
        expect.objectContaining({ code: "invalid_name" }),
      );
    }
  });

  it("is followed live under its own name", () => {
    const rec = recorder();
    const followDir = join(base, "follow");
    mkdirSync(followDir);
    const names = ["Windows 11 Pro", "\u0415\u0308лка", "\u0401лка", 'it\'s "quoted"'];
    for (const n of names) writeFileSync(join(followDir, `${n}.log`), logText(n));
    const follower = new LogFollower({ logDir: followDir, send: rec.send, log: silentLog, pollMs: 3_600_000 });
    try {
      names.forEach((n, i) => follower.start(`f${i}`, n, () => {}));
      names.forEach((n) => appendFileSync(join(followDir, `${n}.log`), `more of [${n}]\n`));
      follower.tick();
      names.forEach((n, i) =>
        expect(
          rec
            .of(`f${i}`)
            .map((m) => (m.payload as { text: string }).text)
            .join(""),
        ).toBe(`more of [${n}]\n`),
      );
    } finally {
      follower.stopAll();
    }
  });
});

describe("local API with real-world names", () => {
  let api: LocalApi;
  let libvirt: Libvirt;
  beforeAll(async () => {
    libvirt = new Libvirt(uri, silentLog);
    api = await startLocalApi({
      host: "127.0.0.1",
      port: 0,
      acceptsToken: (t) => t === HOST_TOKEN,
      libvirt,
      logDir,
      webDir: join(base, "web"),
      log: silentLog,
    });
  });
  afterAll(async () => {
    await api?.close();
    await libvirt?.close();
  });
  const get = (path: string) => fetch(api.url + path, { headers: { authorization: `Bearer ${HOST_TOKEN}` } });

  it("lists every VM under its own name", async () => {
    const { vms } = (await (await get("/api/v1/vms")).json()) as { vms: { id: string; name: string }[] };
    for (const d of DOMAINS) expect(vms.find((v) => v.id === d.uuid)?.name).toBe(d.name);
    const q = (await (await get(`/api/v1/vms?q=${encodeURIComponent("тест")}`)).json()) as { vms: { name: string }[] };
    expect(q.vms.map((v) => v.name)).toEqual(["тест-вм"]);
  });

  it("reads each VM's log by UUID and by its URL-encoded name (NFC and NFD each their own)", async () => {
    for (const d of DOMAINS) {
      // A path segment `..` (even as %2e%2e) is resolved away by every URL parser: that VM is reached by UUID.
      for (const id of d.name === ".." ? [d.uuid] : [d.uuid, encodeURIComponent(d.name)]) {
        const res = await get(`/api/v1/vms/${id}/logs?lines=5`);
        expect(res.status, `${d.name} as ${id}`).toBe(200);
        const body = (await res.json()) as { qemuLog: string; logPath: string };
        expect(body.qemuLog, d.name).toBe(logText(d.name));
        expect(body.logPath).toBe(join(logDir, `${d.name}.log`));
      }
    }
  });

  it("a name that matches no domain is 404, never a file", async () => {
    for (const id of ["..%2fsecret", "%2e%2e%2f..%2fsecret", encodeURIComponent("../secret"), "%E0%A4%A"]) {
      const res = await get(`/api/v1/vms/${id}/logs`);
      expect(res.status, id).toBe(404);
      expect(await res.text()).not.toContain(SECRET);
    }
  });
});
