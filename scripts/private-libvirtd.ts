// A private, unprivileged libvirt daemon in a directory of its own: its socket, state and log live
// there, it runs the test driver for whoever connects, and stopping it touches no other daemon.
// Run as root it drops to `nobody` (a root libvirtd would share /run/libvirt with the system one).
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { chownSync, existsSync, mkdirSync, openSync, closeSync } from "node:fs";
import { connect } from "node:net";
import { dirname, join } from "node:path";

export const LIBVIRTD = ["/usr/sbin/libvirtd", "/usr/local/sbin/libvirtd"].find((p) => existsSync(p)) ?? null;
const NOBODY = 65534;
const START_TIMEOUT_MS = 30_000;

export type PrivateDaemon = {
  /** the daemon's socket: pass it as `?socket=` in the URI */
  socket: string;
  dir: string;
  log: string;
  process: ChildProcess;
  /** SIGTERM, then SIGKILL after a grace; resolves once it exited */
  stop(): Promise<void>;
};

const answers = (socket: string) =>
  new Promise<boolean>((done) => {
    const c = connect(socket);
    c.once("connect", () => (c.destroy(), done(true)));
    c.once("error", () => done(false));
  });

/** `start` spawns the daemon (a script that stops its children on every way out passes its own). */
export async function startPrivateLibvirtd(
  dir: string,
  start: (command: string, args: string[], options: SpawnOptions) => ChildProcess = spawn,
): Promise<PrivateDaemon> {
  if (!LIBVIRTD) throw new Error("libvirtd is not installed (Debian/Ubuntu package libvirt-daemon-system)");
  const root = process.getuid?.() === 0;
  // The directories above with the usual mode (a recursive mkdir with 0o700 would make them all
  // 0700, and `nobody` could not reach its own directory through them).
  mkdirSync(dirname(dir), { recursive: true });
  for (const sub of ["", "run", "config", "cache"]) {
    mkdirSync(join(dir, sub), { recursive: true, mode: 0o700 });
    if (root) chownSync(join(dir, sub), NOBODY, NOBODY);
  }
  const socket = join(dir, "run/libvirt/libvirt-sock");
  const log = join(dir, "libvirtd.log");
  const out = openSync(log, "a");
  const env = {
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: dir,
    XDG_RUNTIME_DIR: join(dir, "run"),
    XDG_CONFIG_HOME: join(dir, "config"),
    XDG_CACHE_HOME: join(dir, "cache"),
  };
  const [cmd, args] = root
    ? ["setpriv", [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", LIBVIRTD]]
    : [LIBVIRTD, []];
  const child = start(cmd, args, { env, stdio: ["ignore", out, out], cwd: dir });
  closeSync(out);
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const grace = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(grace);
  };
  for (const deadline = Date.now() + START_TIMEOUT_MS; Date.now() < deadline; ) {
    if (child.exitCode !== null) throw new Error(`private libvirtd exited (${child.exitCode}); see ${log}`);
    if (existsSync(socket) && (await answers(socket))) return { socket, dir, log, process: child, stop };
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error(`private libvirtd did not answer on ${socket} within ${START_TIMEOUT_MS / 1000} s; see ${log}`);
}
