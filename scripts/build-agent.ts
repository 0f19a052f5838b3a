// `npm run build:agent`: the agent as one ESM file for hosts with Node.js >= 18.17 and a libvirt daemon
// (it speaks libvirt's RPC protocol itself: nothing native, any architecture):
//   dist/agent/quantix-agent.mjs   the bundle (all JS dependencies inside)
//   dist/agent/web/                the host view (web/dist), when it has been built
//   dist/agent/quantix-agent.service  the example systemd unit
import { chmodSync, cpSync, existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { build, type Plugin } from "esbuild";
import pkg from "../package.json" with { type: "json" };

const ROOT = resolve(import.meta.dirname, "..");
const OUT = join(ROOT, "dist/agent");

/** V8 flags the agent runs with (the bundle's shebang; the systemd unit repeats them): a 1 MiB
 *  semi-space instead of up to 16 MiB, since an idle agent allocates little (bench/agent-rss.ts
 *  measured -1.4 MiB RSS, no CPU cost visible). */
export const AGENT_NODE_FLAGS = ["--max-semi-space-size=1"];

/** zod stays out of the agent: loading it and building the protocol's schemas cost an idle agent
 *  about 11 MiB (its V8 heap, and TurboFan's code pages once schema construction ran hot). The
 *  agent checks what it receives with protocol/lean-check.ts; an import of zod fails the build. */
const noZod: Plugin = {
  name: "no-zod",
  setup(b) {
    b.onResolve({ filter: /^zod(\/|$)/ }, ({ importer }) => ({
      errors: [
        {
          text: `${relative(ROOT, importer)} brings zod into the agent: check with protocol/lean-check.ts, or import the zod-free module (wire-constants.ts, console-frames.ts, metrics-series.ts)`,
        },
      ],
    }));
  },
};

/** Node's built-in modules as require() gives them. An ESM import of one makes Node build its ESM
 *  facade, which reads every export, lazy getters included: `fs.promises` loads the promise API
 *  and readline, `crypto.webcrypto` all of WebCrypto, `http.WebSocket` undici and its llhttp
 *  WebAssembly. Through require(), a property is read where the code uses it. */
const builtinsByRequire: Plugin = {
  name: "builtins-by-require",
  setup(b) {
    b.onResolve({ filter: /^node:/ }, ({ path, kind }) =>
      kind === "import-statement" || kind === "dynamic-import" ? { path, namespace: "builtin" } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "builtin" }, ({ path }) => ({
      contents: `module.exports = require(${JSON.stringify(path)});`,
      loader: "js",
    }));
  },
};

/** The oldest Node.js the bundle runs on: Debian 12 and Ubuntu 24.04 ship 18.19 (AbortSignal.any
 *  came in 18.17). The installer checks the host's Node against it. */
export const AGENT_NODE_MIN = "18.17";

/** `version`: what the bundle reports as its agentVersion (default package.json's); tests build
 *  other versions to update to. */
export async function buildAgent(outDir = OUT, { version = pkg.version }: { version?: string } = {}): Promise<string> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const outfile = join(outDir, "quantix-agent.mjs");
  await build({
    entryPoints: [join(ROOT, "agent/main.ts")],
    outfile,
    bundle: true,
    platform: "node",
    target: "node18",
    define: { QX_BUILD_VERSION: JSON.stringify(version) },
    format: "esm",
    // Whitespace and syntax only (names stay readable in stack traces): V8 keeps the source of the
    // bundle in memory, 1.3 MB unminified and held as a two-byte string if any character is not
    // Latin-1; this is 0.9 MB of ASCII. Measured: -2 MiB heap.
    minifyWhitespace: true,
    minifySyntax: true,
    charset: "ascii",
    sourcemap: false,
    legalComments: "none",
    // ws probes these optional native speed-ups with require() inside try/catch.
    external: ["bufferutil", "utf-8-validate"],
    // CommonJS dependencies (ws, pino) call require(): give the ESM bundle one.
    banner: {
      js: `#!/usr/bin/env -S node ${AGENT_NODE_FLAGS.join(" ")}\nimport { createRequire as __qxCreateRequire } from 'node:module';\nconst require = __qxCreateRequire(import.meta.url);`,
    },
    plugins: [noZod, builtinsByRequire],
    logLevel: "warning",
  });
  chmodSync(outfile, 0o755); // runnable as it is, through its shebang
  const web = join(ROOT, "web/dist");
  if (existsSync(join(web, "host.html"))) cpSync(web, join(outDir, "web"), { recursive: true });
  else
    console.warn(
      "build:agent: web/dist/host.html is missing (npm run build:web): the bundle's host view will answer 503",
    );
  cpSync(join(ROOT, "agent/quantix-agent.service"), join(outDir, "quantix-agent.service"));
  return outfile;
}

if (import.meta.main) {
  const out = await buildAgent();
  console.log(
    `built ${out} (${(statSync(out).size / 1024).toFixed(0)} KiB)${existsSync(join(OUT, "web")) ? " + web/" : ""} + quantix-agent.service`,
  );
}
