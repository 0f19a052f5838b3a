// A fresh Debian 12 root filesystem for installer tests: made once with debootstrap (minbase plus
// Node.js from Debian's own archive, curl, and libvirt's library and group as a KVM host has them),
// kept under /var/tmp, and used through an overlay in private mount, PID and UTS namespaces, so
// what a test installs lands in a throwaway upper directory and never in this machine's /etc.
// Needs root. The network namespace is shared: a control plane on this machine's loopback answers.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stopProcessGroup } from "./process-group.ts";

/** Bump when the packages change: a new name builds a new cache. */
const CACHE = "/var/tmp/quantix-edge-rootfs/bookworm";
const PACKAGES = ["nodejs", "curl", "ca-certificates", "libvirt0"];
const MIRROR = "http://deb.debian.org/debian";

/** The cached root filesystem, made (a few minutes, from Debian's mirror) when missing. */
export function debianRoot(): string {
  if (existsSync(join(CACHE, "usr/bin/node"))) return CACHE;
  if (process.getuid?.() !== 0) throw new Error("the installer tests need root (debootstrap, chroot, namespaces)");
  const building = `${CACHE}.building-${process.pid}`;
  mkdirSync(join(CACHE, ".."), { recursive: true });
  execFileSync("debootstrap", ["--variant=minbase", `--include=${PACKAGES.join(",")}`, "bookworm", building, MIRROR], {
    stdio: "ignore",
    timeout: 900_000,
  });
  // libvirt-daemon-system makes this group on a KVM host and opens qemu:///system to it.
  execFileSync("chroot", [building, "groupadd", "--system", "libvirt"]);
  execFileSync("chroot", [building, "apt-get", "clean"]);
  renameSync(building, CACHE);
  return CACHE;
}

export type RunResult = { code: number | null; stdout: string; stderr: string; ms: number };

/** One throwaway root over the cache: every run sees what the earlier runs left. */
export class IsolatedRoot {
  readonly dir: string;
  readonly upper: string;
  private readonly lower: string;
  private readonly children = new Set<ChildProcess>();

  constructor(lower = debianRoot()) {
    this.lower = lower;
    this.dir = mkdtempSync(join(tmpdir(), "qx-root-"));
    this.upper = join(this.dir, "upper");
    for (const d of ["upper", "work", "merged"]) mkdirSync(join(this.dir, d));
  }

  /** `sh -c script` inside the root, as root, with the host's loopback. */
  spawn(script: string): ChildProcess {
    const merged = join(this.dir, "merged");
    const setup = [
      "set -e",
      "mount --make-rprivate /",
      `mount -t overlay overlay -o lowerdir=${this.lower},upperdir=${this.upper},workdir=${join(this.dir, "work")} ${merged}`,
      `mount -t proc proc ${merged}/proc`,
      `mount --rbind /dev ${merged}/dev`,
      `mount -t tmpfs tmpfs ${merged}/run`,
      `mount -t tmpfs tmpfs ${merged}/tmp`,
      `exec chroot ${merged} /bin/sh -c "$0"`,
    ].join("\n");
    const child = spawn(
      "unshare",
      ["--mount", "--pid", "--uts", "--ipc", "--fork", "--kill-child", "sh", "-c", setup, script],
      { stdio: ["ignore", "pipe", "pipe"], detached: true, env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" } },
    );
    this.children.add(child);
    child.once("exit", () => this.children.delete(child));
    return child;
  }

  /** Runs `script` to its end (bounded by `timeoutMs`) and answers its status, output and time. */
  run(script: string, timeoutMs = 120_000): Promise<RunResult> {
    const started = performance.now();
    const child = this.spawn(script);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => void stopProcessGroup(child, "SIGKILL"), timeoutMs);
    return new Promise((resolve) =>
      child.once("close", (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr, ms: performance.now() - started });
      }),
    );
  }

  /** Stops a process started with spawn() and all it started (its PID namespace ends with it). */
  async stop(child: ChildProcess): Promise<void> {
    await stopProcessGroup(child);
  }

  /** Stops what is still running in the root (its PID namespace dies with it) and removes the root. */
  async dispose(): Promise<void> {
    await Promise.all([...this.children].map((c) => stopProcessGroup(c)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
