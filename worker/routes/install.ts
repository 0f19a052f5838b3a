// The open install door: the installer (with this control plane's own URL filled in), the agent
// bundle and its manifest, read from the Worker's static assets (built by `npm run build`).
import { Hono } from "hono";
import { INSTALL_SCRIPT_PATH } from "../../protocol/install.ts";
import type { AppEnv } from "../app-env.ts";
import { ApiError } from "../errors.ts";

const SERVER_MARKER = "'@QX_SERVER@'";

/** A built install asset, or a 404 that says how to build it (never the dashboard's index page,
 *  which the assets' single-page fallback would answer). */
export async function installAsset(env: Env, url: string, path: string): Promise<Response> {
  const res = await env.ASSETS.fetch(new URL(path, url));
  if (!res.ok || (res.headers.get("content-type") ?? "").startsWith("text/html"))
    throw new ApiError(404, "not_built", `${path} is not among this control plane's assets: run npm run build`);
  return res;
}

const FILES: Record<string, string> = {
  "manifest.json": "application/json",
  "quantix-agent.mjs": "text/javascript",
};

export const installRoutes = new Hono<AppEnv>()
  .get(INSTALL_SCRIPT_PATH, async (c) => {
    const script = await (await installAsset(c.env, c.req.url, INSTALL_SCRIPT_PATH)).text();
    // An origin is scheme://host[:port]: nothing in it can leave the single quotes.
    const origin = new URL(c.req.url).origin;
    return c.body(script.replace(SERVER_MARKER, `'${origin}'`), 200, {
      "content-type": "text/x-shellscript; charset=utf-8",
      "cache-control": "no-cache",
    });
  })
  .get("/install/:file", async (c) => {
    const file = c.req.param("file");
    const type = FILES[file];
    if (!type) throw new ApiError(404, "not_found", `no install file ${file}`);
    const res = await installAsset(c.env, c.req.url, `/install/${file}`);
    const headers = new Headers(res.headers);
    headers.set("content-type", type);
    // The manifest changes with every deploy; the bundle is checked against it anyway.
    headers.set("cache-control", file === "manifest.json" ? "no-cache" : "public, max-age=60");
    return new Response(res.body, { status: 200, headers });
  });
