// Makes sure this machine has what `npm test` needs before any suite runs (the `test` script's first step):
// a libvirt daemon for the agent's suites (libvirt's test driver, served by it), and for the suites
// on a real hypervisor or in a browser, libvirt's daemons running, QEMU and Chromium. As root on Debian/Ubuntu it installs what is missing and starts
// the daemons; otherwise it stops and prints the exact commands. What is already there is left alone,
// so a second run changes nothing. Plain .mjs like libvirt-prereq.mjs; vitest.config.ts takes its
// suite lists from here.
import { spawnSync } from "node:child_process";
import {
  accessSync,
  chmodSync,
  chownSync,
  closeSync,
  constants,
  existsSync,
  openSync,
  readFileSync,
  statSync,
} from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { aptInstall, isDebianLike, isRoot, onPath } from "./libvirt-prereq.mjs";

/** The suites that need more than Node, by what they need (vitest.config.ts runs each as a project). */
export const SUITES_NEEDING = {
  hypervisor: [
    "test/agent/qemu.test.ts",
    "test/agent/qemu-power.test.ts",
    "test/agent/qemu-metrics.test.ts",
    "test/faults/libvirt-vanishes.test.ts",
    "test/faults/power-on-real-qemu.test.ts",
    "test/faults/drift-soak.test.ts",
    "test/agent/libvirt/qemu-console.test.ts",
    "test/e2e/install-on-host.test.ts",
    "test/e2e/console-on-real-qemu.test.ts",
    "test/e2e/vnc-on-real-qemu.test.ts",
    "test/e2e/demo-guest-on-real-qemu.test.ts",
  ],
  browser: ["test/web/browser/**/*.test.ts"],
};

const PART_PURPOSE = {
  hypervisor: "a real guest on libvirtd + QEMU, or the agent installer run as root in a Debian root filesystem",
  browser: "the dashboard in Chromium",
};

/** System packages, each with the files the suites use from it (the tests name these paths). */
const PACKAGES = [
  {
    part: "hypervisor",
    pkg: "libvirt-daemon-system",
    what: "libvirt's daemons",
    files: ["/usr/sbin/libvirtd", "/usr/sbin/virtlogd"],
  },
  { part: "hypervisor", pkg: "qemu-system-x86", what: "QEMU", files: ["/usr/bin/qemu-system-x86_64"] },
  {
    part: "hypervisor",
    pkg: "debootstrap",
    what: "a Debian root filesystem for the installer test",
    files: ["/usr/sbin/debootstrap"],
  },
  { part: "browser", pkg: "chromium", what: "Chromium", files: ["/usr/bin/chromium"] },
];

/** virtlogd first: libvirtd hands each guest's output to it. */
const DAEMONS = [
  { name: "virtlogd", socket: "/var/run/libvirt/virtlogd-sock" },
  { name: "libvirtd", socket: "/var/run/libvirt/libvirt-sock" },
];
const QEMU_LOG_DIR = "/var/log/libvirt/qemu";
const DAEMON_START_TIMEOUT_MS = 30_000;

const say = (line) => process.stderr.write(`[test-prereq] ${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const suitesOf = (part) => `${SUITES_NEEDING[part].join(", ")} (${PART_PURPOSE[part]})`;
const hasSystemd = () => existsSync("/run/systemd/system");

/**
 * Whether a daemon answers on its socket: "up", "denied" (the socket is root's, so a user cannot
 * tell; libvirtd's own socket is open to all), or "down". A socket file alone proves nothing: a
 * daemon that died leaves it behind, and a process list may show another root's daemons (a chroot).
 */
function probe(socket) {
  return new Promise((done) => {
    const conn = connect(socket);
    const finish = (state) => {
      conn.destroy();
      done(state);
    };
    conn.once("connect", () => finish("up"));
    conn.once("error", (err) => finish(err.code === "EACCES" ? "denied" : "down"));
    conn.setTimeout(2000, () => finish("down"));
  });
}

/** Starts a daemon (root only) and waits until it answers on its socket. */
async function startDaemon({ name, socket }) {
  const bin = existsSync(`/usr/sbin/${name}`) ? `/usr/sbin/${name}` : name;
  const [cmd, args] = hasSystemd() ? ["systemctl", ["start", name]] : [bin, ["-d"]];
  say(`starting ${name} (${cmd} ${args.join(" ")})`);
  // Its output goes to a file, not a pipe: a daemon that kept our pipe open would hold npm up.
  const logPath = join(tmpdir(), `qx-test-prereq-${name}.log`);
  const out = openSync(logPath, "w");
  const r = spawnSync(cmd, args, { stdio: ["ignore", out, out] });
  closeSync(out);
  if (r.status !== 0) {
    process.stderr.write(readFileSync(logPath, "utf8"));
    say(`${cmd} ${args.join(" ")} failed (exit ${r.status ?? r.error?.message})`);
    return false;
  }
  for (const deadline = Date.now() + DAEMON_START_TIMEOUT_MS; Date.now() < deadline; await sleep(100)) {
    if ((await probe(socket)) === "up") return true;
  }
  say(`${name} started but does not answer on ${socket} after ${DAEMON_START_TIMEOUT_MS / 1000} s`);
  return false;
}

/**
 * Opens qemu:///system and lists its domains, as the hypervisor suites do; returns why not, or null.
 * libvirtd opens its socket before its QEMU driver is loaded (and may still fail loading it), so an
 * answering socket alone does not say the suites can start a guest.
 */
async function qemuSystemProblem() {
  const { LibvirtClient } = await import("../agent/libvirt/index.ts");
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${DAEMON_START_TIMEOUT_MS / 1000} s`)),
      DAEMON_START_TIMEOUT_MS,
    );
  });
  try {
    const client = await Promise.race([LibvirtClient.connect("qemu:///system"), timeout]);
    await Promise.race([client.listDomains(), timeout]);
    await client.close();
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * QEMU's user (libvirt-qemu, of group kvm on Debian) must be able to open /dev/kvm. libvirtd probes
 * each QEMU binary's capabilities once and caches them, but when it found KVM at that probe and
 * QEMU's user cannot open /dev/kvm now, it throws the cache away on every lookup and probes again:
 * each define then takes tens of seconds (about 40 s on our 2-core machines) and each start several,
 * for guests that do not even use KVM. udev gives /dev/kvm to group kvm (0660) on a normal host; a
 * machine without udev leaves it root's 0600. As root we do what udev would; otherwise we say how.
 */
function kvmDeviceForQemu() {
  const device = "/dev/kvm";
  if (!existsSync(device)) return;
  const kvmGid = readFileSync("/etc/group", "utf8")
    .split("\n")
    .map((line) => line.split(":"))
    .find((f) => f[0] === "kvm")?.[2];
  if (kvmGid === undefined) return;
  const st = statSync(device);
  if (st.gid === Number(kvmGid) && (st.mode & 0o060) === 0o060) return;
  if (!isRoot()) {
    say(
      `${device} is not open to group kvm (QEMU's user): libvirtd re-probes QEMU on every define and start, which makes ${suitesOf("hypervisor")} slow. udev's setting: sudo chgrp kvm ${device} && sudo chmod 0660 ${device}`,
    );
    return;
  }
  chownSync(device, st.uid, Number(kvmGid));
  chmodSync(device, (st.mode & 0o7777) | 0o060);
  say(
    `${device} opened to group kvm (0660, as udev does): libvirtd otherwise re-probes QEMU on every define and start`,
  );
}

/** Prints what to do when we may not do it ourselves, each step with the suites that need it. */
function explain({ missing, daemonsDown, cannotUse }) {
  const sudo = isRoot() ? "" : "sudo ";
  say("npm test cannot run yet; some suites need what this machine lacks:");
  for (const part of ["hypervisor", "browser"]) {
    const lacking = missing.filter((p) => p.part === part);
    if (lacking.length > 0) say(`  ${lacking.map((p) => `${p.what} (${p.pkg})`).join(", ")}: ${suitesOf(part)}`);
  }
  if (daemonsDown.length > 0) say(`  ${daemonsDown.join(" and ")} running: ${suitesOf("hypervisor")}`);
  for (const { need } of cannotUse) say(`  ${need}: ${suitesOf("hypervisor")}`);
  const pkgs = missing.map((p) => p.pkg);
  const commands = [];
  if (pkgs.length > 0) {
    if (isDebianLike())
      commands.push(`${sudo}apt-get update`, `${sudo}apt-get install -y --no-install-recommends ${pkgs.join(" ")}`);
    else {
      const paths = missing.flatMap((p) => p.files);
      commands.push(
        `install the equivalents of the Debian packages ${pkgs.join(" ")}${paths.length > 0 ? ` (the tests run ${paths.join(", ")})` : ""}`,
      );
    }
  }
  if (daemonsDown.length > 0) {
    commands.push(
      hasSystemd()
        ? `${sudo}systemctl start ${daemonsDown.join(" ")}`
        : daemonsDown.map((d) => `${sudo}${d} -d`).join(" && "),
    );
  }
  if (commands.length > 0) {
    say("Run:");
    for (const c of commands) say(`  ${c}`);
    say(`then npm test again${isRoot() ? "" : " (as root, npm test does this itself: sudo npm test)"}.`);
  }
  for (const { fix } of cannotUse) say(fix);
  if (missing.some((p) => p.pkg === "libvirt-daemon-system"))
    say("Meanwhile `npx vitest run --project worker` runs the Worker's suites (the agent's need a libvirt daemon).");
  else say("Meanwhile `npm run test:unit` runs every suite that needs no hypervisor and no browser.");
}

/** Returns true when every suite can run; prints what to do and returns false when not. */
export async function prepareTestMachine() {
  const started = performance.now();
  const mayInstall = isRoot() && isDebianLike() && onPath("apt-get");
  let missing = PACKAGES.filter((p) => !p.files.every((f) => existsSync(f)));

  const toInstall = missing.map((p) => p.pkg);
  if (toInstall.length > 0 && mayInstall) {
    if (!aptInstall(toInstall, say)) return false;
    missing = PACKAGES.filter((p) => !p.files.every((f) => existsSync(f)));
    if (missing.length > 0) {
      say(`installed, yet still missing: ${missing.flatMap((p) => p.files.filter((f) => !existsSync(f))).join(", ")}`);
      return false;
    }
  } else if (toInstall.length > 0) {
    const daemonsInstalled = !missing.some((p) => p.pkg === "libvirt-daemon-system");
    const daemonsDown = [];
    for (const d of DAEMONS) if (!daemonsInstalled || (await probe(d.socket)) === "down") daemonsDown.push(d.name);
    explain({ missing, daemonsDown, cannotUse: [] });
    return false;
  }

  const daemonsDown = [];
  const cannotUse = [];
  for (const d of DAEMONS) {
    const state = await probe(d.socket);
    if (state === "up" || (state === "denied" && d.name === "virtlogd")) continue;
    if (state === "denied") {
      cannotUse.push({
        need: `your user's access to ${d.socket} (qemu:///system)`,
        fix: "Run the tests as root (sudo npm test), or add your user to the libvirt group (sudo adduser $USER libvirt) and log in again.",
      });
    } else if (isRoot()) {
      if (!(await startDaemon(d))) return false;
    } else {
      daemonsDown.push(d.name);
    }
  }
  if (!isRoot()) {
    try {
      // The hypervisor suites read and remove the QEMU logs of the guests they start.
      accessSync(QEMU_LOG_DIR, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch {
      cannotUse.push({
        need: `your user's read and write access to ${QEMU_LOG_DIR} (QEMU's logs, root's)`,
        fix: "Run the tests as root: sudo npm test.",
      });
    }
  }
  if (daemonsDown.length > 0 || cannotUse.length > 0) {
    explain({ missing: [], daemonsDown, cannotUse });
    return false;
  }
  kvmDeviceForQemu();
  const problem = await qemuSystemProblem();
  if (problem !== null) {
    say(`libvirtd runs but qemu:///system does not open: ${problem}`);
    say(
      `${suitesOf("hypervisor")} would fail; its log may say why (journalctl -u libvirtd, or run \`libvirtd\` in the foreground).`,
    );
    return false;
  }
  say(
    `ready: libvirtd and virtlogd running, qemu:///system answering, Chromium installed (${((performance.now() - started) / 1000).toFixed(2)} s)`,
  );
  return true;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // Exit explicitly: a libvirt call that timed out would otherwise keep the process waiting.
  process.exit((await prepareTestMachine()) ? 0 : 1);
}
