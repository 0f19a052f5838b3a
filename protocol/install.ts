// What the control plane serves to install and update agents, without sign-in: the installer, the
// agent bundle and the manifest describing it. Nothing here is secret.
import { z } from "zod";

export const INSTALL_SCRIPT_PATH = "/install.sh";
export const INSTALL_MANIFEST_PATH = "/install/manifest.json";
export const INSTALL_AGENT_PATH = "/install/quantix-agent.mjs";
export { AGENT_UPDATE_PATH } from "./wire-constants.ts";

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, "a hex SHA-256");

export const InstallManifest = z.object({
  /** the agentVersion the bundle reports */
  version: z.string().min(1).max(64),
  sha256,
  size: z.number().int().positive(),
  file: z.string().optional(),
  /** the oldest Node.js the bundle runs on */
  nodeMin: z.string().optional(),
});
export type InstallManifest = z.infer<typeof InstallManifest>;

/** The one line that installs an agent enrolled with `joinToken`, for the control plane at `origin`. */
export const installCommand = (origin: string, joinToken: string) =>
  `curl -fsSL ${origin}${INSTALL_SCRIPT_PATH} | sh -s -- --token ${joinToken}`;

/** Orders versions like `1.2.10` > `1.2.9`, and a release after its pre-releases (`1.2.0` >
 *  `1.2.0-rc.1`); parts that are not numbers compare as text. Negative when `a` is older. */
export function compareVersions(a: string, b: string): number {
  const split = (v: string) => {
    const [core = "", pre] = v.replace(/^v/, "").split(/-(.*)/s);
    return { core: core.split(".").map(Number), pre };
  };
  const x = split(a);
  const y = split(b);
  for (let i = 0; i < Math.max(x.core.length, y.core.length); i++) {
    const d = (x.core[i] || 0) - (y.core[i] || 0);
    if (d) return d;
  }
  if (x.pre === y.pre) return 0;
  if (x.pre === undefined) return 1;
  if (y.pre === undefined) return -1;
  return x.pre.localeCompare(y.pre, "en", { numeric: true });
}
