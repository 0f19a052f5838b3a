// Shared pieces of the dashboard browser tests: a fresh web build, Chromium (Debian's, via
// playwright-core), a real agent process on libvirt's test driver, and a watch on each page for
// console errors, CSP violations and dialogs (nothing in a log may run script).
import { execFile, type ChildProcess } from "node:child_process";
import { spawnOwned } from "../../../scripts/child-processes.ts";
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { ControlPlane, type ControlPlaneOptions } from "../../support/control-plane.ts";

const ROOT = resolve(import.meta.dirname, "../../..");
const WEB = join(ROOT, "web");
export const ARTIFACTS = join(ROOT, "test-artifacts");
export const SCREENSHOTS = join(ARTIFACTS, "screenshots");
const run = promisify(execFile);

function newestMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...readdirSync(path).map((f) => newestMtime(join(path, f))));
}

/** Builds web/dist when it is missing or older than its sources. Test files run in parallel, so
 *  one builds while the others wait on a lock directory. */
export async function ensureWebBuild(): Promise<void> {
  const lock = join(ROOT, "node_modules/.qx-web-build.lock");
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // A lock left by a killed run is older than any real build (about a second): take it over.
      if (Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 60_000)
        rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`web build lock ${lock} held for 2 minutes`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    const built = join(WEB, "dist/index.html");
    const sources = Math.max(
      ...["src", "public", "index.html", "host.html", "vite.config.ts"].map((p) => newestMtime(join(WEB, p))),
      newestMtime(join(ROOT, "protocol")),
    );
    if (existsSync(built) && existsSync(join(WEB, "dist/host.html")) && statSync(built).mtimeMs >= sources) return;
    await run(
      process.execPath,
      [join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--config", "web/vite.config.ts", "--logLevel", "warn"],
      { cwd: ROOT },
    );
    // vite empties web/dist: put back what `npm run build` adds (the installer and the agent bundle).
    await run(process.execPath, [join(ROOT, "scripts/build-install.ts")], { cwd: ROOT });
  } finally {
    rmdirSync(lock);
  }
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A test file's one control plane, started together with the web build check and Chromium (none
 *  waits on another); if one fails, the others are stopped. */
export async function startControlPlaneAndChromium(
  opts?: ControlPlaneOptions,
): Promise<{ cp: ControlPlane; browser: Browser }> {
  const [cp, built, browser] = await Promise.allSettled([ControlPlane.start(opts), ensureWebBuild(), launchChromium()]);
  if (cp.status === "fulfilled" && built.status === "fulfilled" && browser.status === "fulfilled")
    return { cp: cp.value, browser: browser.value };
  if (browser.status === "fulfilled") await browser.value.close();
  if (cp.status === "fulfilled") await cp.value.dispose();
  throw [cp, built, browser].find((r) => r.status === "rejected")!.reason;
}

export async function newContext(
  browser: Browser,
  origin: string,
  colorScheme: "light" | "dark" = "light",
): Promise<BrowserContext> {
  const context = await browser.newContext({
    acceptDownloads: true,
    viewport: { width: 1360, height: 860 },
    colorScheme,
  });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
  return context;
}

/** Everything a page did that a test must fail on. */
export type PageWatch = { problems: string[]; dialogs: string[] };

export function watchPage(page: Page): PageWatch {
  const watch: PageWatch = { problems: [], dialogs: [] };
  page.setDefaultTimeout(15_000);
  page.on("pageerror", (err) => watch.problems.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    const text = msg.text();
    // 401/403/404/503 answers the UI handles show up as failed resource loads: expected.
    if (
      msg.type() === "error" &&
      !/Failed to load resource: the server responded with a status of (401|403|404|409|503)/.test(text)
    ) {
      watch.problems.push(`console.error: ${text}`);
    }
    if (/Content Security Policy/i.test(text)) watch.problems.push(`CSP: ${text}`);
  });
  page.on("dialog", async (dialog) => {
    watch.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss();
  });
  return watch;
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: false });
}

// ---- the agent ------------------------------------------------------------------------------------

export type AgentProcess = { child: ChildProcess; output: () => string; stop: () => Promise<void> };

/** Runs `agent/main.ts`; without `token` it uses the credential kept in `stateDir`. */
export function startAgent(args: {
  server: string;
  token?: string;
  stateDir: string;
  libvirtUri: string;
  logDir: string;
  listen?: string;
}): AgentProcess {
  const argv = [
    join(ROOT, "agent/main.ts"),
    "--server",
    args.server,
    "--state-dir",
    args.stateDir,
    "--libvirt-uri",
    args.libvirtUri,
    "--log-dir",
    args.logDir,
  ];
  if (args.token) argv.push("--token", args.token);
  if (args.listen) argv.push("--listen", args.listen);
  const child = spawnOwned(process.execPath, argv, {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, QX_LOG_LEVEL: "warn" },
  });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  return {
    child,
    output: () => output,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGCONT"); // in case a test left it frozen
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Enrolls a node for `name` and waits until its agent is connected and has reported `vmCount` VMs. */
export async function enrollAgent(
  cp: ControlPlane,
  name: string,
  opts: { stateDir: string; libvirtUri: string; logDir: string; vmCount: number; listen?: string; timeoutMs?: number },
) {
  const res = await cp.api("/api/nodes", { method: "POST", json: { name } });
  if (res.status !== 201) throw new Error(`POST /api/nodes: ${res.status} ${await res.text()}`);
  const { node, joinToken } = (await res.json()) as { node: { id: string }; joinToken: string };
  const agent = startAgent({
    server: cp.url,
    token: joinToken,
    stateDir: opts.stateDir,
    libvirtUri: opts.libvirtUri,
    logDir: opts.logDir,
    listen: opts.listen,
  });
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = (await (await cp.api(`/api/nodes/${node.id}`)).json()) as {
      node?: { connected: boolean; vmCount: number };
    };
    if (n.node?.connected && n.node.vmCount >= opts.vmCount) break;
    if (agent.child.exitCode !== null) throw new Error(`agent exited ${agent.child.exitCode}:\n${agent.output()}`);
    if (Date.now() > deadline)
      throw new Error(`agent did not connect with ${opts.vmCount} VMs in ${timeoutMs / 1000} s:\n${agent.output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { nodeId: node.id, agent };
}

export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false>,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** Waits until the graphical console's noVNC canvas is drawn, not blank: a firmware text screen
 *  (SeaBIOS, then iPXE) has lit pixels among the black. */
export async function untilScreenDrawn(page: Page, ms = 60_000): Promise<void> {
  const canvas = page.getByTestId("graphical-screen").locator("canvas");
  await until(
    "a drawn screen",
    async () =>
      canvas.evaluate((c: HTMLCanvasElement) => {
        if (c.width < 100 || c.height < 100) return false;
        const data = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
        let lit = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 150) lit++;
        return lit > 200;
      }),
    ms,
  );
}
