// `npm start`: the local control plane (wrangler dev on 127.0.0.1:8787 with local D1 and Durable
// Objects) plus a demo agent on libvirt's test driver with the shipped demo node, served by a real
// libvirt daemon (this machine's, or a private unprivileged one under .wrangler/ that stops with us),
// one VM of which is left stuck in STOPPING on the first start (the reconciler repairs it after
// 15 min unless you reset it first). Where this machine runs QEMU under a system libvirtd, a second
// demo node, "demo-qemu", with one small real guest to try both consoles on (scripts/demo-guest.ts).
// `npm start -- --no-demo` runs the control plane alone. Ctrl-C stops everything it started.
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  appendFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { tidyAgent, tidyWrangler } from "./child-output.ts";
import { ensureLibvirtDaemon } from "./libvirt-prereq.mjs";
import { migrateLocalD1 } from "./local-d1.ts";
import { startPrivateLibvirtd } from "./private-libvirtd.ts";
import { LibvirtClient } from "../agent/libvirt/index.ts";
import { hostTokenPath } from "../agent/local/host-token.ts";
import { varArgs } from "./dev-vars.ts";
import { newKeyEntry } from "../worker/notifications/secret-box.ts";
import { afterChildrenStop, exitAfterStopping, onStop, runOwned, spawnOwned } from "./child-processes.ts";
import { demoGuest, hasQemu, otherDomains, startDemoGuest } from "./demo-guest.ts";

const ROOT = resolve(import.meta.dirname, "..");
const HOST = "127.0.0.1";
// `--port` and `--data-dir` run a second copy beside the usual one (the tests do).
const { values: flags } = parseArgs({
  options: {
    "no-demo": { type: "boolean", default: false },
    port: { type: "string", default: "8787" },
    "data-dir": { type: "string", default: ".wrangler" },
    // auto: the QEMU demo only where qemu:///system has no other guests; on: beside them too; off: never
    "qemu-demo": { type: "string", default: "auto" },
  },
  allowPositionals: false,
});
const PORT = Number(flags.port);
if (!Number.isInteger(PORT) || PORT < 1 || PORT > 65534) {
  console.error(`[start] --port must be a port number, not ${JSON.stringify(flags.port)}`);
  process.exit(2);
}
if (!["auto", "on", "off"].includes(flags["qemu-demo"])) {
  console.error(`[start] --qemu-demo must be auto, on or off, not ${JSON.stringify(flags["qemu-demo"])}`);
  process.exit(2);
}
/** The demo agent's host view: the port after the control plane's (the QEMU demo's: the next one). */
const AGENT_LISTEN = `${HOST}:${PORT + 1}`;
const URL_BASE = `http://${HOST}:${PORT}`;
const WRANGLER = join(ROOT, "node_modules/wrangler/bin/wrangler.js");
const DEV_VARS = join(ROOT, ".dev.vars");
const DEMO_NODE_NAME = "demo";
const DEMO_XML = join(ROOT, "agent/demo/node.xml");
const DEMO_LOGS = join(ROOT, "agent/demo/logs");
/** Local D1 and Durable Objects (wrangler's own default place for .wrangler), the demo's state. */
const DATA_DIR = resolve(ROOT, flags["data-dir"]);
const PERSIST_DIR = join(DATA_DIR, "state");
const DEMO_STATE_DIR = join(DATA_DIR, "demo-agent");
/** What the demo set up once (node id, stuck VM), so a second `npm start` does not redo it. */
const DEMO_MARKER = join(DATA_DIR, "demo.json");
/** Where the private libvirt daemon lives when this machine runs none. */
const PRIVATE_LIBVIRTD_DIR = join(DATA_DIR, "libvirtd");
/** The QEMU demo: a node of its own whose agent speaks to this machine's libvirtd. */
const QEMU_URI = "qemu:///system";
const QEMU_DEMO = {
  nodeName: "demo-qemu",
  stateDir: join(DATA_DIR, "demo-qemu-agent"),
  libvirtUri: QEMU_URI,
  logDir: "/var/log/libvirt/qemu",
  listen: `${HOST}:${PORT + 2}`,
};
/** The demo VM that `npm start` leaves stuck in STOPPING (see agent/demo/node.xml). */
const STUCK_VM = { id: "3f6a1c2e-8b4d-4e7f-9a10-5c2b7d8e9f07", name: "files-01" };

// Our children must not phone home, and their output is read by a filter, not a terminal.
// No metrics, no fetch of request.cf data and no update check against npm's registry (it goes with
// wrangler's banner): a local run talks to loopback only.
const CHILD_ENV = {
  ...process.env,
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_HIDE_BANNER: "true",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  FORCE_COLOR: "0",
  NO_COLOR: "1",
};
const started = Date.now();
let stopping = false;

const say = (line: string) => console.log(`[start] ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- .dev.vars ----------------------------------------------------------------------------------

/** The admin token from .dev.vars, created (mode 0600) with a random one when missing. */
function ensureAdminToken(): string {
  const existing = existsSync(DEV_VARS) ? readFileSync(DEV_VARS, "utf8") : null;
  const found = existing?.match(/^ADMIN_TOKEN\s*=\s*"?([^"\r\n]+)"?\s*$/m)?.[1];
  if (found) return found;
  const token = `qx_admin_${randomBytes(24).toString("base64url")}`;
  if (existing === null) {
    writeFileSync(
      DEV_VARS,
      `# Local secrets for wrangler dev (never committed). Created by npm start.\nADMIN_TOKEN=${token}\n`,
      { mode: 0o600 },
    );
    say("created .dev.vars with a random ADMIN_TOKEN");
  } else {
    appendFileSync(DEV_VARS, `${existing.endsWith("\n") ? "" : "\n"}ADMIN_TOKEN=${token}\n`);
    say("added a random ADMIN_TOKEN to .dev.vars");
  }
  chmodSync(DEV_VARS, 0o600);
  return token;
}

/** SECRETS_KEYS, the key that seals webhook target secrets in D1, added to .dev.vars when missing
 *  (after ensureAdminToken, so the file exists). */
function ensureSecretsKeys(): void {
  const existing = readFileSync(DEV_VARS, "utf8");
  if (/^\s*SECRETS_KEYS\s*=/m.test(existing)) return;
  appendFileSync(DEV_VARS, `${existing.endsWith("\n") ? "" : "\n"}SECRETS_KEYS=${newKeyEntry("k1")}\n`);
  say("added a random SECRETS_KEYS (seals webhook target secrets) to .dev.vars");
}

// ---- dashboard build ----------------------------------------------------------------------------

function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return readdirSync(path).reduce((m, name) => Math.max(m, newestMtime(join(path, name))), st.mtimeMs);
}

/** Builds web/dist (and the install assets in it) when missing or older than their sources; a
 *  placeholder when there is no web yet. */
async function ensureDashboard(): Promise<void> {
  const dist = join(ROOT, "web/dist");
  const sources = ["web/src", "web/index.html", "web/host.html", "web/public", "web/vite.config.ts", "protocol"].map(
    (p) => join(ROOT, p),
  );
  if (!existsSync(join(ROOT, "web/vite.config.ts"))) {
    if (!existsSync(join(dist, "index.html"))) {
      mkdirSync(dist, { recursive: true });
      writeFileSync(
        join(dist, "index.html"),
        "<!doctype html><title>Quantix Edge</title><p>The dashboard is not built yet; the API is at /api.</p>\n",
      );
      say("no dashboard sources yet: wrote a placeholder web/dist/index.html");
    }
    return;
  }
  // The install assets (installer, agent bundle) are built with it and go stale with the agent.
  const built =
    existsSync(join(dist, "index.html")) && existsSync(join(dist, "install/manifest.json")) ? newestMtime(dist) : 0;
  if (built >= Math.max(...[...sources, join(ROOT, "agent")].map(newestMtime))) return;
  say("building the dashboard and the agent it serves (npm run build)");
  const t0 = Date.now();
  try {
    await runOwned("npm", ["run", "build", "--silent"], { cwd: ROOT, env: CHILD_ENV });
    say(`built the dashboard and the agent it serves in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    process.stderr.write(`${e.stdout ?? ""}${e.stderr ?? ""}`);
    throw new Error("the dashboard build failed (see above)");
  }
}

// ---- control plane ------------------------------------------------------------------------------

async function migrateLocalDb(): Promise<void> {
  try {
    const applied = await migrateLocalD1(PERSIST_DIR, CHILD_ENV);
    say(applied.length ? `local D1: applied ${applied.join(", ")}` : "local D1: migrations up to date");
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    process.stderr.write(`${e.stdout ?? ""}${e.stderr ?? ""}`);
    throw new Error("applying the local D1 migrations failed (see above)");
  }
}

/** The demo's settings, each only when the user set none (see dev-vars.ts): its stuck VM is marked
 *  stuck after a minute (default 2 min), and the reconciler leaves it for 15 min (default: it asks
 *  the hypervisor at once), so there is time to try Reset State on it. */
const DEMO_VARS = { STUCK_AFTER_MS: 60_000, REPAIR_AFTER_MS: 15 * 60_000 };

function startWrangler(withDemo: boolean): ChildProcess {
  const devVars = existsSync(DEV_VARS) ? readFileSync(DEV_VARS, "utf8") : null;
  const demoArgs: string[] = [];
  for (const [name, value] of withDemo ? Object.entries(DEMO_VARS) : []) {
    const v = varArgs(name, String(value), devVars, process.env);
    if (v.from !== "demo")
      say(
        `${name}: yours (from ${v.from === "dev.vars" ? ".dev.vars" : "the environment"}), not the demo's ${value / 60_000} min`,
      );
    demoArgs.push(...v.args);
  }
  const child = spawnOwned(
    process.execPath,
    [
      WRANGLER,
      "dev",
      "--ip",
      HOST,
      "--port",
      String(PORT),
      "--persist-to",
      PERSIST_DIR,
      "--show-interactive-dev-session=false",
      ...demoArgs,
    ],
    { cwd: ROOT, env: CHILD_ENV, stdio: ["ignore", "pipe", "pipe"] },
  );
  tidyWrangler(child);
  child.once("exit", (code, signal) => {
    if (!stopping) {
      console.error(`[start] the control plane (wrangler dev) exited (${signal ?? code}); stopping`);
      stopping = true;
      void exitAfterStopping(1);
    }
  });
  return child;
}

async function healthy(): Promise<boolean> {
  try {
    const res = await fetch(`${URL_BASE}/api/health`, { signal: AbortSignal.timeout(2_000) });
    return res.ok;
  } catch {
    return false;
  }
}

async function waitForHealth(child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error("wrangler dev exited before it was ready");
    if (await healthy()) return;
    await sleep(250);
  }
  throw new Error(`the control plane did not answer ${URL_BASE}/api/health within 120 s`);
}

// ---- REST as the admin ----------------------------------------------------------------------------

async function api<T>(
  token: string,
  path: string,
  init: { method?: string; json?: unknown } = {},
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${URL_BASE}${path}`, {
    method: init.method ?? (init.json === undefined ? "GET" : "POST"),
    headers: {
      authorization: `Bearer ${token}`,
      ...(init.json === undefined ? {} : { "content-type": "application/json" }),
    },
    body: init.json === undefined ? undefined : JSON.stringify(init.json),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text for the error message
  }
  return { status: res.status, body: body as T };
}

type NodeView = { id: string; name: string; connected: boolean };
type VmView = { id: string; name: string; state: string };

// ---- demo agent -----------------------------------------------------------------------------------

type DemoMarker = { nodeId: string; stuckVmSeeded?: boolean };

function readMarker(): DemoMarker | null {
  try {
    return JSON.parse(readFileSync(DEMO_MARKER, "utf8")) as DemoMarker;
  } catch {
    return null;
  }
}

const writeMarker = (m: DemoMarker) => writeFileSync(DEMO_MARKER, `${JSON.stringify(m, null, 2)}\n`);

/** One demo node and its agent: the test-driver demo, or the QEMU demo. */
type DemoAgent = { nodeName: string; stateDir: string; libvirtUri: string; logDir: string; listen: string };

/** The agent keeps its node credential in `<state dir>/node.json` (agent/link/credentials.ts). */
const stateDirHasCredential = (d: DemoAgent) => existsSync(join(d.stateDir, "node.json"));

/**
 * The demo node's id and, when the agent must (re-)enroll, a join token. Reuses the node and the
 * agent's kept credential across restarts; a fresh join token only when the credential is gone.
 */
async function demoNode(
  token: string,
  d: DemoAgent,
  forceNewJoin = false,
): Promise<{ nodeId: string; joinToken?: string }> {
  const list = await api<{ nodes: NodeView[] }>(token, "/api/nodes");
  if (list.status !== 200) throw new Error(`GET /api/nodes answered ${list.status}: ${JSON.stringify(list.body)}`);
  const existing = list.body.nodes.find((n) => n.name === d.nodeName);
  if (existing && stateDirHasCredential(d) && !forceNewJoin) return { nodeId: existing.id };
  rmSync(d.stateDir, { recursive: true, force: true });
  if (existing) {
    const rotated = await api<{ joinToken: string }>(token, `/api/nodes/${existing.id}/rotate_token`, { json: {} });
    if (rotated.status >= 300)
      throw new Error(`rotate_token answered ${rotated.status}: ${JSON.stringify(rotated.body)}`);
    say(`demo node "${d.nodeName}" re-enrolling with a fresh join token`);
    return { nodeId: existing.id, joinToken: rotated.body.joinToken };
  }
  const created = await api<{ node: NodeView; joinToken: string }>(token, "/api/nodes", {
    json: { name: d.nodeName },
  });
  if (created.status !== 201)
    throw new Error(`POST /api/nodes answered ${created.status}: ${JSON.stringify(created.body)}`);
  say(`enrolled demo node "${d.nodeName}" (${created.body.node.id})`);
  return { nodeId: created.body.node.id, joinToken: created.body.joinToken };
}

/** Whether `nobody` may reach into `dir` (every directory above it searchable by others). */
function othersCanReach(dir: string): boolean {
  for (let d = resolve(dir); ; d = dirname(d)) {
    if (existsSync(d) && (statSync(d).mode & 0o001) === 0) return false;
    if (d === dirname(d)) return true;
  }
}

/**
 * The demo agent's libvirt URI: the test driver serving the demo host, through this machine's libvirt
 * daemon when one answers, else through a private unprivileged one (stopped when we stop). Null
 * when there is no daemon to run (the command that installs it has been printed).
 */
async function demoLibvirtUri(): Promise<string | null> {
  const uri = `test://${DEMO_XML}`;
  try {
    const probe = await LibvirtClient.connect(uri, { connectTimeoutMs: 5_000 });
    await probe.close();
    say("demo host: libvirt's test driver through this machine's libvirt daemon");
    return uri;
  } catch {
    // no daemon here, or not ours to use: a private one
  }
  if (!ensureLibvirtDaemon(say)) return null;
  const root = process.getuid?.() === 0;
  // As root the daemon runs as nobody, who must be able to reach its directory.
  mkdirSync(dirname(PRIVATE_LIBVIRTD_DIR), { recursive: true });
  const dir =
    !root || othersCanReach(dirname(PRIVATE_LIBVIRTD_DIR))
      ? PRIVATE_LIBVIRTD_DIR
      : join(tmpdir(), "quantix-demo-libvirtd");
  rmSync(dir, { recursive: true, force: true });
  const daemon = await startPrivateLibvirtd(dir, spawnOwned); // stopped with npm start
  const xml = join(dir, "node.xml");
  copyFileSync(DEMO_XML, xml);
  if (root) chownSync(xml, 65534, 65534);
  say(
    `demo host: libvirt's test driver through a private libvirtd (${relative(ROOT, dir) || dir}; stops with npm start)`,
  );
  return `test://${xml}?socket=${daemon.socket}`;
}

function startAgent(d: DemoAgent, joinToken: string | undefined): ChildProcess {
  const args = [
    join(ROOT, "agent/main.ts"),
    "--server",
    URL_BASE,
    "--state-dir",
    d.stateDir,
    "--libvirt-uri",
    d.libvirtUri,
    "--log-dir",
    d.logDir,
    "--listen",
    d.listen,
  ];
  if (joinToken) args.push("--token", joinToken);
  mkdirSync(d.stateDir, { recursive: true, mode: 0o700 });
  // The join token goes on the command line as the agent's `--token` flag takes it; it is single-use and spent at once.
  const child = spawnOwned(process.execPath, args, { cwd: ROOT, env: CHILD_ENV, stdio: ["ignore", "pipe", "pipe"] });
  tidyAgent(child);
  return child;
}

/** Starts the agent; if its kept credential is refused (exit soon after start), re-enrolls once. */
async function startDemoAgent(token: string, d: DemoAgent): Promise<{ agent: ChildProcess; nodeId: string }> {
  let { nodeId, joinToken } = await demoNode(token, d);
  for (let attempt = 0; ; attempt++) {
    const agent = startAgent(d, joinToken);
    const exit = new Promise<number | null>((r) => agent.once("exit", (code) => r(code)));
    const outcome = await Promise.race([exit, waitForConnected(token, nodeId, agent).then(() => "connected" as const)]);
    if (outcome === "connected") {
      agent.once("exit", (code, signal) => {
        if (!stopping)
          console.error(
            `[start] the "${d.nodeName}" demo agent exited (${signal ?? code}); the control plane keeps running`,
          );
      });
      return { agent, nodeId };
    }
    if (attempt > 0 || joinToken) throw new Error(`the demo agent exited (${outcome}) before connecting`);
    say("the demo agent's kept credential was refused; enrolling it again");
    ({ nodeId, joinToken } = await demoNode(token, d, true));
  }
}

async function waitForConnected(token: string, nodeId: string, agent: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && agent.exitCode === null) {
    const res = await api<{ node: NodeView }>(token, `/api/nodes/${nodeId}`);
    if (res.status === 200 && res.body.node.connected) return;
    await sleep(250);
  }
  if (agent.exitCode === null) throw new Error("the demo agent did not connect within 60 s");
  await new Promise(() => {}); // exited: the race's other side reports it
}

/** Waits until the control plane lists every domain of the demo node. */
async function waitForInventory(token: string, nodeId: string): Promise<VmView[]> {
  const expected = (readFileSync(DEMO_XML, "utf8").match(/<domain\b/g) ?? []).length;
  const deadline = Date.now() + 60_000;
  let vms: VmView[] = [];
  while (Date.now() < deadline) {
    const res = await api<{ vms: VmView[] }>(token, `/api/vms?node_id=${nodeId}&limit=100`);
    if (res.status === 200) vms = res.body.vms;
    if (vms.length >= expected) return vms;
    await sleep(250);
  }
  throw new Error(`the demo inventory did not arrive: ${vms.length} of ${expected} VMs listed after 60 s`);
}

/**
 * Leaves STUCK_VM in STOPPING the way it happens in the field: a stop that the agent never
 * acknowledges. The agent is frozen (SIGSTOP) while the stop is sent, the control plane gives up
 * after its acknowledgement deadline (request failed, VM left STOPPING), then the agent is thawed;
 * it finds the command's deadline passed and drops it, so the domain keeps running. The demo's
 * REPAIR_AFTER_MS keeps the reconciler off it for 15 min (then it puts it back to RUNNING, an
 * `auto_repair` event). Once per node. Returns what the VM is afterwards.
 */
async function leaveOneVmStuck(token: string, agent: ChildProcess): Promise<string | null> {
  const vm = await api<{ vm: VmView }>(token, `/api/vms/${STUCK_VM.id}`);
  if (vm.status !== 200 || vm.body.vm.state !== "RUNNING") return vm.body?.vm?.state ?? null;
  say(
    `leaving ${STUCK_VM.name} stuck in STOPPING: freezing the demo agent while a stop is sent (about 10 s, first start only)`,
  );
  process.kill(agent.pid!, "SIGSTOP");
  try {
    const stop = await api<{ request: { id: string } }>(token, `/api/vms/${STUCK_VM.id}/stop`, { json: {} });
    if (stop.status !== 202) throw new Error(`stop answered ${stop.status}: ${JSON.stringify(stop.body)}`);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const req = await api<{ request: { status: string } }>(token, `/api/requests/${stop.body.request.id}`);
      if (req.status === 200 && !["queued", "sent"].includes(req.body.request.status)) break;
      await sleep(500);
    }
  } finally {
    process.kill(agent.pid!, "SIGCONT");
  }
  await sleep(1_000); // let the thawed agent read (and drop) the expired stop
  return (await api<{ vm: VmView }>(token, `/api/vms/${STUCK_VM.id}`)).body?.vm?.state ?? null;
}

// ---- QEMU demo ------------------------------------------------------------------------------------

/**
 * The QEMU demo, where this machine has QEMU and a system libvirtd: one small real guest
 * (SeaBIOS/iPXE on its serial port and on a VNC display on 127.0.0.1) and a second demo agent, node
 * "demo-qemu", on qemu:///system. An agent manages every domain of its URI, so on a machine that
 * already runs other guests it would list them and offer their power buttons too: `auto` leaves the
 * QEMU demo out there (`--qemu-demo on` starts it anyway). The guest is stopped and undefined when
 * npm start stops. Returns the lines for the summary, or null (it said why).
 */
async function startQemuDemo(token: string): Promise<string[] | null> {
  const mode = flags["qemu-demo"];
  if (mode === "off") return null;
  if (!hasQemu()) {
    say(
      "no QEMU here, so no real guest to try the consoles on (install qemu-system-x86 and libvirt-daemon-system as root: see the README's demo section)",
    );
    return null;
  }
  const guest = demoGuest(PORT);
  let others: string[];
  try {
    others = await otherDomains(QEMU_URI, guest.name);
  } catch (err) {
    say(
      `${QEMU_URI} does not answer (${err instanceof Error ? err.message : String(err)}), so no real guest: it needs a system libvirtd and root (or the libvirt group)`,
    );
    return null;
  }
  if (others.length && mode !== "on") {
    say(
      `${QEMU_URI} already has ${others.length} other guest(s) (${others.slice(0, 3).join(", ")}${others.length > 3 ? ", …" : ""}); a demo agent there would list and control them too, so the QEMU demo is left out (npm start -- --qemu-demo on starts it anyway)`,
    );
    return null;
  }
  const running = await startDemoGuest(QEMU_URI, guest);
  afterChildrenStop(async () => {
    await running.stop();
    say(`stopped and undefined the demo guest ${guest.name}`);
  });
  say(`started the demo guest ${guest.name} on ${QEMU_URI} (64 MiB, no disk, no network off this machine)`);
  const { agent, nodeId } = await startDemoAgent(token, QEMU_DEMO);
  const deadline = Date.now() + 60_000;
  while ((await api(token, `/api/vms/${guest.uuid}`)).status !== 200) {
    if (Date.now() > deadline) throw new Error(`the demo guest was not listed on "${QEMU_DEMO.nodeName}" within 60 s`);
    await sleep(250);
  }
  return [
    `QEMU demo:    node "${QEMU_DEMO.nodeName}" (${nodeId}), agent PID ${agent.pid} on ${QEMU_URI}${others.length ? `, with ${others.length} other guest(s)` : ""}`,
    `              ${URL_BASE}/vms/${guest.uuid}/console: SeaBIOS and iPXE on the serial console`,
    `              (Ctrl-B for iPXE's shell), Graphical for its screen; host view http://${QEMU_DEMO.listen}/`,
  ];
}

// ---- lifecycle ------------------------------------------------------------------------------------

// Ctrl-C, SIGTERM, an error or the end: child-processes.ts stops the agent first (so it closes its
// socket cleanly), then the control plane.
onStop(() => {
  stopping = true;
  say("stopping…");
});

async function main() {
  const withDemo = !flags["no-demo"];

  if (await healthy()) throw new Error(`something already answers on ${URL_BASE} (another npm start?); stop it first`);
  const adminToken = ensureAdminToken();
  ensureSecretsKeys();
  // Independent steps, side by side: on a fresh clone the dashboard's build is most of the wait.
  const [demoUri] = await Promise.all([withDemo ? demoLibvirtUri() : null, ensureDashboard(), migrateLocalDb()]);
  const wrangler = startWrangler(withDemo);
  await waitForHealth(wrangler);
  say(`control plane ready on ${URL_BASE}`);

  const lines = [`Dashboard:    ${URL_BASE}/`, `Admin token:  ${adminToken}   (from .dev.vars)`];
  if (withDemo && demoUri) {
    const { agent, nodeId } = await startDemoAgent(adminToken, {
      nodeName: DEMO_NODE_NAME,
      stateDir: DEMO_STATE_DIR,
      libvirtUri: demoUri,
      logDir: DEMO_LOGS,
      listen: AGENT_LISTEN,
    });
    const vms = await waitForInventory(adminToken, nodeId);
    say(`demo agent connected: ${vms.length} VMs listed`);
    const marker = readMarker();
    if (!(marker?.nodeId === nodeId && marker.stuckVmSeeded)) {
      const after = await leaveOneVmStuck(adminToken, agent);
      say(
        after === "STOPPING"
          ? `${STUCK_VM.name} is stuck in STOPPING (the hypervisor says running): try Reset State, or leave it and the reconciler repairs it in 15 min`
          : `${STUCK_VM.name} is ${after ?? "unknown"} (the rest of the demo is unaffected)`,
      );
      writeMarker({ nodeId, stuckVmSeeded: true });
    }
    const stuckNow = (await api<{ vm: VmView }>(adminToken, `/api/vms/${STUCK_VM.id}`)).body?.vm?.state === "STOPPING";
    lines.push(
      `Host view:    http://${AGENT_LISTEN}/   (the demo agent's own VM list and logs; sign in with`,
      `              the host token in ${relative(ROOT, hostTokenPath(DEMO_STATE_DIR))})`,
      `Demo node:    "${DEMO_NODE_NAME}", libvirt test driver, ${vms.length} VMs` +
        (stuckNow
          ? ` (${STUCK_VM.name} is stuck in STOPPING: try Reset State, or wait for the reconciler to repair it)`
          : ""),
      `Demo agent:   PID ${agent.pid} (kill -STOP ${agent.pid} freezes it: node.offline within about a minute,`,
      `              OFFLINE_AFTER_MS; kill -CONT ${agent.pid} thaws it)`,
    );
  } else if (withDemo) {
    say("the demo agent is not started: no libvirt daemon to serve its host (see above for the command)");
  }
  if (withDemo) {
    try {
      const qemu = await startQemuDemo(adminToken);
      if (qemu) lines.push(...qemu);
    } catch (err) {
      say(`the QEMU demo did not start: ${err instanceof Error ? err.message : String(err)} (the rest runs on)`);
    }
  }
  const width = Math.max(...lines.map((l) => l.length));
  console.log(
    `\n┌${"─".repeat(width + 2)}┐\n${lines.map((l) => `│ ${l.padEnd(width)} │`).join("\n")}\n└${"─".repeat(width + 2)}┘`,
  );
  say(
    `ready in ${((Date.now() - started) / 1000).toFixed(1)} s. Ctrl-C stops everything; data stays in ${relative(ROOT, PERSIST_DIR)}.`,
  );
}

main().catch((err: unknown) => {
  console.error(`[start] ${err instanceof Error ? err.message : String(err)}`);
  void exitAfterStopping(1);
});
