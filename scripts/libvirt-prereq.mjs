// Makes sure the agent's libvirt binding (@unraid/libvirt, a native addon) is built, installing the
// system packages it needs when we may (root on Debian/Ubuntu) and saying exactly what to install
// when we may not. Plain .mjs: it runs as `npm install`'s postinstall under whatever Node npm uses
// (the system Node 20 on a fresh machine) and is imported by scripts/start.ts.
//
// Why here and not in a preinstall: npm builds dependencies *before* it runs any root lifecycle script
// (preinstall included), and a failing dependency build aborts the whole install. So package.json's
// allowScripts denies @unraid/libvirt's own install script and this script builds it instead, once
// its prerequisites are in place.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BINDING_DIR = join(ROOT, "node_modules/@unraid/libvirt");
const BINDING_FILE = join(BINDING_DIR, "build/Release/libvirt.node");

/** What the build needs, each with the Debian/Ubuntu package that provides it. */
const REQUIREMENTS = [
  {
    what: "libvirt headers (libvirt/libvirt.h)",
    pkg: "libvirt-dev",
    present: () => existsSync("/usr/include/libvirt/libvirt.h") || pkgConfigHas("libvirt"),
  },
  { what: "pkg-config", pkg: "pkg-config", present: () => onPath("pkg-config") },
  { what: "a C++ compiler (g++)", pkg: "g++", present: () => onPath("g++") || onPath("c++") },
  { what: "make", pkg: "make", present: () => onPath("make") },
  { what: "python3 (for node-gyp)", pkg: "python3", present: () => onPath("python3") },
];

export function onPath(cmd) {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

function pkgConfigHas(lib) {
  return spawnSync("pkg-config", ["--exists", lib], { stdio: "ignore" }).status === 0;
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

/** Debian/Ubuntu packages still missing for the build. */
export function missingPackages() {
  return REQUIREMENTS.filter((r) => !r.present()).map((r) => r.pkg);
}

export function bindingBuilt() {
  return existsSync(BINDING_FILE);
}

function say(line) {
  process.stderr.write(`[libvirt] ${line}\n`);
}

function installCommand(pkgs) {
  return `apt-get install -y --no-install-recommends ${pkgs.join(" ")}`;
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

/** npm's own node-gyp: npm tells scripts where it is; otherwise look beside npm-cli.js. */
function nodeGypPath() {
  const candidates = [process.env.npm_config_node_gyp];
  if (process.env.npm_execpath)
    candidates.push(join(dirname(process.env.npm_execpath), "../node_modules/node-gyp/bin/node-gyp.js"));
  const npm = spawnSync("sh", ["-c", "command -v npm"], { encoding: "utf8" }).stdout?.trim();
  if (npm) candidates.push(join(dirname(realpathSync(npm)), "../node_modules/node-gyp/bin/node-gyp.js"));
  return candidates.find((p) => p && existsSync(p)) ?? null;
}

function buildBinding() {
  const gyp = nodeGypPath();
  if (!gyp) {
    say("cannot find npm's node-gyp; run `npm rebuild @unraid/libvirt --allow-scripts=@unraid/libvirt` by hand");
    return false;
  }
  // Node's headers: npm passes its `nodedir` setting; otherwise use installed ones when there are
  // some (the addon uses Node-API only, so any recent version's headers do) rather than download.
  const args = [gyp, "rebuild"];
  if (!process.env.npm_config_nodedir && existsSync("/usr/include/node/node_api.h")) args.push("--nodedir=/usr");
  say("building the native libvirt binding (node-gyp, about 20 s)");
  const r = spawnSync(process.execPath, args, {
    cwd: BINDING_DIR,
    stdio: ["ignore", "ignore", "pipe"],
    encoding: "utf8",
  });
  if (r.status !== 0) {
    process.stderr.write(r.stderr ?? "");
    say(`node-gyp failed (exit ${r.status})`);
    return false;
  }
  say("binding built");
  return true;
}

/**
 * Ensures the binding is built. Returns true when it is (or now is). When packages are missing and
 * we may not install them, prints exactly what to run and returns false.
 */
export function ensureLibvirtBinding() {
  if (bindingBuilt()) return true;
  if (!existsSync(BINDING_DIR)) {
    say("node_modules/@unraid/libvirt is missing: run `npm install` first");
    return false;
  }
  const missing = missingPackages();
  if (missing.length > 0) {
    if (isRoot() && isDebianLike() && onPath("apt-get")) {
      if (!aptInstall(missing)) return false;
    } else {
      say(
        `the agent needs ${REQUIREMENTS.filter((r) => missing.includes(r.pkg))
          .map((r) => r.what)
          .join(", ")}.`,
      );
      if (isDebianLike()) say(`install them with:  sudo ${installCommand(missing)}`);
      else
        say(
          `install the equivalents of the Debian packages: ${missing.join(" ")} (on Fedora: libvirt-devel pkgconf gcc-c++ make python3)`,
        );
      say("then run `npm start` again (it builds the binding), or `node scripts/libvirt-prereq.mjs`.");
      return false;
    }
  }
  return buildBinding();
}

// As npm's postinstall (or by hand): build when we can, explain when we cannot. Never fail the
// install: the control plane and the dashboard run without libvirt; `npm start` repeats the advice.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!ensureLibvirtBinding())
    say("the demo agent will not run until this is done (`npm start -- --no-demo` works meanwhile).");
}
