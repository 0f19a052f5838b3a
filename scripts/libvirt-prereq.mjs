// What this machine needs from libvirt for `npm start`'s demo and the tests: a libvirt daemon
// binary (the agent itself needs nothing native: it speaks libvirt's RPC protocol in TypeScript).
// As root on Debian/Ubuntu it installs the daemon package; otherwise it says exactly what to run.
// Plain .mjs: scripts/start.ts and scripts/test-prereq.mjs import it.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";

/** The Debian/Ubuntu package with libvirtd (the test driver is part of libvirt itself). */
export const DAEMON_PACKAGE = "libvirt-daemon";
export const LIBVIRTD_PATHS = ["/usr/sbin/libvirtd", "/usr/local/sbin/libvirtd"];

export function onPath(cmd) {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

export function isDebianLike() {
  try {
    const osRelease = readFileSync("/etc/os-release", "utf8");
    return /^(ID|ID_LIKE)=.*\b(debian|ubuntu)\b/m.test(osRelease);
  } catch {
    return false;
  }
}

export const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0;

export const daemonInstalled = () => LIBVIRTD_PATHS.some((p) => existsSync(p));

function say(line) {
  process.stderr.write(`[libvirt] ${line}\n`);
}

/** apt-get update + install (root only); `log` prefixes the lines with the caller's name. */
export function aptInstall(pkgs, log = say) {
  log(`installing ${pkgs.join(" ")} with apt-get (running as root)`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [
    ["update", "-qq"],
    ["install", "-y", "-qq", "--no-install-recommends", ...pkgs],
  ]) {
    const r = spawnSync("apt-get", args, { stdio: ["ignore", "inherit", "inherit"], env });
    if (r.status !== 0) {
      log(`apt-get ${args[0]} failed (exit ${r.status})`);
      return false;
    }
  }
  return true;
}

/** The exact command that installs the daemon here. */
export function daemonInstallCommand() {
  const sudo = isRoot() ? "" : "sudo ";
  return isDebianLike()
    ? `${sudo}apt-get install -y --no-install-recommends ${DAEMON_PACKAGE}`
    : `install libvirt's daemon (libvirtd; on Fedora: ${sudo}dnf install libvirt-daemon libvirt-daemon-driver-qemu)`;
}

/** True when a libvirt daemon binary is here (installing it when we may); prints the command when not. */
export function ensureLibvirtDaemon(log = say) {
  if (daemonInstalled()) return true;
  if (isRoot() && isDebianLike() && onPath("apt-get")) return aptInstall([DAEMON_PACKAGE], log) && daemonInstalled();
  log(`the demo needs a libvirt daemon (libvirtd), which is not installed. Run:  ${daemonInstallCommand()}`);
  return false;
}
