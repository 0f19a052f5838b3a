// Enrollment and the kept node credential: `<state dir>/node.json` {nodeId, credential, server}
// (file 0600, dir 0700). A join token is traded once for the credential.
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { http, https } from "../node-http.ts";
import { join } from "node:path";
import { object, optional, string, type Check } from "../../protocol/lean-check.ts";
import { EnrollResponse } from "../../protocol/server-frames.ts";
import { AGENT_ENROLL_PATH } from "../../protocol/wire-constants.ts";

/** Exit status for a refused join token or credential: systemd must not restart into it. */
export const EXIT_REFUSED = 3;

export const JOIN_TOKEN_REFUSED =
  "join token refused: used, expired or unknown — create a new one with rotate_token (or POST /api/nodes) and start the agent with --token";
export const CREDENTIAL_REFUSED =
  "node credential refused: revoked (rotate_token) or the node was deleted — start the agent with a new join token (--token)";

export type NodeCredential = {
  nodeId: string;
  credential: string;
  server: string;
  /** sha256 of the join token this credential came from: a *different* token means "re-enroll". */
  joinTokenSha256?: string;
};
const NodeFile: Check<NodeCredential> = object({
  nodeId: string(),
  credential: string({ min: 1 }),
  server: string(),
  joinTokenSha256: optional(string()),
});

/** A refusal that must end the process (exit EXIT_REFUSED), never be retried. */
export class RefusedError extends Error {}

export const tokenDigest = (token: string) => createHash("sha256").update(token).digest("hex");

export function nodeFilePath(stateDir: string) {
  return join(stateDir, "node.json");
}

export function readCredential(stateDir: string): NodeCredential | null {
  let text: string;
  try {
    text = readFileSync(nodeFilePath(stateDir), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  return NodeFile(JSON.parse(text))?.value ?? null;
}

export function writeCredential(stateDir: string, cred: NodeCredential) {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  chmodSync(stateDir, 0o700);
  // Write then rename: a crash never leaves a half-written credential behind.
  const tmp = `${nodeFilePath(stateDir)}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(cred, null, 2) + "\n", { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, nodeFilePath(stateDir));
}

/** Whether `token` is a join token other than the one the kept credential came from. */
export function isNewJoinToken(cred: NodeCredential | null, token: string | undefined): token is string {
  return !!token && (!cred || cred.joinTokenSha256 !== tokenDigest(token));
}

/**
 * POST {server}/agent/enroll. 401/403/400/404 → RefusedError (a new join token is needed); network
 * trouble and 5xx → a plain Error the caller retries with backoff.
 */
export async function enroll(
  server: string,
  joinToken: string,
  hostname: string,
  timeoutMs = 10_000,
): Promise<NodeCredential> {
  const { status, body: text } = await postJson(
    httpBase(server) + AGENT_ENROLL_PATH,
    { joinToken, hostname },
    timeoutMs,
  );
  if (status === 401 || status === 403 || status === 404 || status === 400 || status === 410) {
    throw new RefusedError(`${JOIN_TOKEN_REFUSED} (HTTP ${status})`);
  }
  if (status < 200 || status > 299) throw new Error(`enrollment failed: HTTP ${status}`);
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // reported below
  }
  const body = EnrollResponse(json)?.value;
  if (!body) throw new Error("enrollment failed: the server's answer is not {nodeId, credential}");
  return {
    nodeId: body.nodeId,
    credential: body.credential,
    server,
    joinTokenSha256: tokenDigest(joinToken),
  };
}

/** node:http(s) rather than fetch: fetch loads undici and its WebAssembly parser, ~20 MiB for one call. */
function postJson(url: string, payload: unknown, timeoutMs: number): Promise<{ status: number; body: string }> {
  const data = JSON.stringify(payload);
  const request = url.startsWith("https:") ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: "POST",
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(data) },
        timeout: timeoutMs,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          if (body.length < 64 * 1024) body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer from ${new URL(url).host} in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(data);
  });
}

export function httpBase(server: string) {
  return server.replace(/^ws(s?):/, "http$1:");
}

export function wsUrl(server: string, path: string) {
  return server.replace(/^http(s?):/, "ws$1:") + path;
}
