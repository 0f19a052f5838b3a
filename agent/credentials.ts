// Enrollment and the kept node credential: `<state dir>/node.json` {nodeId, credential, server}
// (file 0600, dir 0700). A join token is traded once for the credential (SPEC §3).
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { AGENT_ENROLL_PATH, EnrollResponse } from "../protocol/wire.ts";

/** Exit status for a refused join token or credential: systemd must not restart into it. */
export const EXIT_REFUSED = 3;

export const JOIN_TOKEN_REFUSED =
  "join token refused: used, expired or unknown — create a new one with rotate_token (or POST /api/nodes) and start the agent with --token";
export const CREDENTIAL_REFUSED =
  "node credential refused: revoked (rotate_token) or the node was deleted — start the agent with a new join token (--token)";

const NodeFile = z.object({
  nodeId: z.string(),
  credential: z.string().min(1),
  server: z.string(),
  /** sha256 of the join token this credential came from: a *different* token means "re-enroll". */
  joinTokenSha256: z.string().optional(),
});
export type NodeCredential = z.infer<typeof NodeFile>;

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
  const parsed = NodeFile.safeParse(JSON.parse(text));
  return parsed.success ? parsed.data : null;
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
export async function enroll(server: string, joinToken: string, hostname: string, timeoutMs = 10_000): Promise<NodeCredential> {
  const url = httpBase(server) + AGENT_ENROLL_PATH;
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ joinToken, hostname }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (res.status === 401 || res.status === 403 || res.status === 404 || res.status === 400 || res.status === 410) {
    throw new RefusedError(`${JOIN_TOKEN_REFUSED} (HTTP ${res.status})`);
  }
  if (!res.ok) throw new Error(`enrollment failed: HTTP ${res.status}`);
  const body = EnrollResponse.safeParse(await res.json().catch(() => null));
  if (!body.success) throw new Error("enrollment failed: the server's answer is not {nodeId, credential}");
  return { nodeId: body.data.nodeId, credential: body.data.credential, server, joinTokenSha256: tokenDigest(joinToken) };
}

export function httpBase(server: string) {
  return server.replace(/^ws(s?):/, "http$1:");
}

export function wsUrl(server: string, path: string) {
  return server.replace(/^http(s?):/, "ws$1:") + path;
}
