// `npm run build` (after the dashboard): what the control plane serves to install and update agents,
// written into its static assets (web/dist) and deployed with the Worker:
//   install.sh                  the installer, with the systemd unit inlined (the Worker fills in its URL)
//   install/quantix-agent.mjs   the agent bundle (scripts/build-agent.ts)
//   install/manifest.json       {version, sha256, size} of that bundle
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { AGENT_NODE_MIN, buildAgent } from "./build-agent.ts";
import { InstallManifest } from "../protocol/install.ts";

const ROOT = resolve(import.meta.dirname, "..");
/** Cloudflare's limit on one static asset. */
const MAX_ASSET_BYTES = 25 * 1024 * 1024;

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

function copyAsset(from: string, to: string) {
  const size = statSync(from).size;
  if (size > MAX_ASSET_BYTES)
    throw new Error(`${from} is ${size} bytes: over the ${MAX_ASSET_BYTES}-byte limit of one static asset`);
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(from, to);
  return { sha256: sha256(to), size };
}

/** The installer as served, but for the control plane's URL: the unit inlined, the Node.js minimum
 *  the same as the bundle's. */
export function installScript(): string {
  const unit = readFileSync(join(ROOT, "agent/quantix-agent.service"), "utf8").trimEnd();
  const script = readFileSync(join(ROOT, "agent/install.sh"), "utf8");
  if (!script.includes("@QX_UNIT@") || !script.includes(`NODE_MIN='${AGENT_NODE_MIN}'`))
    throw new Error("agent/install.sh: the @QX_UNIT@ marker or NODE_MIN matching the bundle's minimum is missing");
  return script.replace("@QX_UNIT@", unit);
}

/** Writes the install assets into `assetsDir` (web/dist); `version` builds an agent reporting another
 *  version (tests). Answers the manifest. */
export async function buildInstallAssets(
  assetsDir = join(ROOT, "web/dist"),
  { version }: { version?: string } = {},
): Promise<InstallManifest> {
  const work = mkdtempSync(join(tmpdir(), "qx-agent-build-"));
  try {
    const bundle = await buildAgent(work, { version });
    const served = copyAsset(bundle, join(assetsDir, "install/quantix-agent.mjs"));
    const manifest: InstallManifest = {
      version: version ?? (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version,
      ...served,
      file: "quantix-agent.mjs",
      nodeMin: AGENT_NODE_MIN,
    };
    writeFileSync(join(assetsDir, "install/manifest.json"), JSON.stringify(manifest) + "\n");
    writeFileSync(join(assetsDir, "install.sh"), installScript());
    return manifest;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const manifest = await buildInstallAssets();
  console.log(
    `install assets: agent ${manifest.version} (${(manifest.size / 1024).toFixed(0)} KiB, sha256 ${manifest.sha256.slice(0, 12)}…)` +
      " + install.sh in web/dist",
  );
}
