// libvirt connection URIs as this client speaks them: `driver[+unix]:///path[?socket=...]` on the
// local machine. Which daemon socket serves a URI (modular virtqemud or monolithic libvirtd, system
// or session), and which name the daemon is asked to open (the URI without our own parameters).
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** A URI this client cannot speak: an unknown driver, a remote transport, a host. */
export class UnsupportedUriError extends Error {
  override name = "UnsupportedUriError";
}

export type Target = {
  /** the name CONNECT_OPEN sends */
  name: string;
  /** sockets to try, in order (the first that accepts wins) */
  sockets: string[];
};

const DRIVERS = ["qemu", "test"] as const;
const SYSTEM_DIR = "/var/run/libvirt";

function sessionDir(env: NodeJS.ProcessEnv): string {
  return env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, "libvirt") : join(homedir(), ".cache/libvirt");
}

/** Where the daemon for `uri` listens; throws UnsupportedUriError for what this client cannot reach. */
export function resolveUri(uri: string, env: NodeJS.ProcessEnv = process.env): Target {
  const m = /^([a-z][a-z0-9]*)(?:\+([a-z0-9-]+))?:\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/i.exec(uri);
  if (!m) throw new UnsupportedUriError(`"${uri}" is not a libvirt URI (driver:///path, e.g. qemu:///system)`);
  const driver = m[1];
  const transport = m[2];
  const host = m[3] ?? "";
  const path = m[4] ?? "";
  const query = m[5] ?? "";
  if (!(DRIVERS as readonly string[]).includes(driver))
    throw new UnsupportedUriError(
      `libvirt driver "${driver}" is not one this agent speaks (${DRIVERS.join(", ")}): ${uri}`,
    );
  if (transport && transport !== "unix")
    throw new UnsupportedUriError(
      `libvirt transport "${transport}" is not supported (only the local daemon's unix socket): ${uri}`,
    );
  if (host) throw new UnsupportedUriError(`remote libvirt host "${host}" is not supported (local daemon only): ${uri}`);
  const params = new URLSearchParams(query);
  const override = params.get("socket");
  params.delete("socket");
  const rest = params.toString();
  const name = `${driver}://${path}${rest ? `?${rest}` : ""}`;
  if (override) return { name, sockets: [override] };

  if (driver === "qemu") {
    if (path === "/system")
      return { name, sockets: [join(SYSTEM_DIR, "virtqemud-sock"), join(SYSTEM_DIR, "libvirt-sock")] };
    if (path === "/session") {
      const dir = sessionDir(env);
      return { name, sockets: [join(dir, "virtqemud-sock"), join(dir, "libvirt-sock")] };
    }
    throw new UnsupportedUriError(`qemu URI path "${path}" is neither /system nor /session: ${uri}`);
  }
  // test:///abs/path.xml: the test driver runs inside whichever daemon opens it (libvirtd, or
  // virtproxyd forwarding to it on modular hosts); as non-root, the session daemon.
  if (!path.startsWith("/") || path === "/")
    throw new UnsupportedUriError(`test driver URI needs an absolute file path or /default: ${uri}`);
  const root = typeof process.getuid === "function" && process.getuid() === 0;
  const sockets = root
    ? [join(SYSTEM_DIR, "libvirt-sock")]
    : [join(sessionDir(env), "libvirt-sock"), join(SYSTEM_DIR, "libvirt-sock")];
  return { name, sockets };
}

/** The candidates that exist now (a missing one is skipped; a stale one is refused at connect). */
export const presentSockets = (t: Target) => t.sockets.filter((s) => existsSync(s));
