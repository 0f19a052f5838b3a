// What the control plane serves to install and update agents, without sign-in: the installer, the
// agent bundle and the manifest describing it. Nothing here is secret.
import { z } from "zod";

export const INSTALL_SCRIPT_PATH = "/install.sh";
export const INSTALL_MANIFEST_PATH = "/install/manifest.json";
export const INSTALL_AGENT_PATH = "/install/quantix-agent.mjs";
/** The same bundle for a connected agent updating itself, behind its node credential. */
export const AGENT_UPDATE_PATH = "/agent/update/quantix-agent.mjs";

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, "a hex SHA-256");

export const InstallManifest = z.object({
  /** the agentVersion the bundle reports */
  version: z.string().min(1).max(64),
  sha256,
  size: z.number().int().positive(),
  file: z.string().optional(),
  /** the oldest Node.js the bundle runs on */
  nodeMin: z.string().optional(),
  /** the native libvirt binding served beside the bundle, while the agent still has one */
  native: z.object({ file: z.string(), arch: z.string(), sha256, size: z.number().int().positive() }).optional(),
});
export type InstallManifest = z.infer<typeof InstallManifest>;

/** The one line that installs an agent enrolled with `joinToken`, for the control plane at `origin`. */
export const installCommand = (origin: string, joinToken: string) =>
  `curl -fsSL ${origin}${INSTALL_SCRIPT_PATH} | sh -s -- --token ${joinToken}`;
