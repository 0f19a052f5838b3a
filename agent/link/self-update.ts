// Self-update: fetch the bundle the control plane serves (with the node credential), refuse it unless
// its size and SHA-256 are the ones asked for, swap it in atomically and exit for the service manager
// to start it. The old file is kept beside it; a new agent that does not connect is put back by the
// next start (`--check-update`, run from the old file by the unit's ExecStartPre).
import { createHash, randomUUID } from "node:crypto";
import { copyFileSync, createWriteStream, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { boolean, number, object, optional, string, type Check } from "../../protocol/lean-check.ts";
import { AGENT_UPDATE_PATH } from "../../protocol/wire-constants.ts";
import type { AgentMessage, ServerMessage } from "../../protocol/wire.ts";
import { httpBase } from "./credentials.ts";
import type { Logger } from "../logger.ts";
import { http, https } from "../node-http.ts";

/** Exit status after a new bundle was swapped in: the unit restarts on it. */
export const EXIT_UPDATED = 4;

type UpdateCommand = Extract<ServerMessage, { type: "agent.update" }>;
type UpdateStatus = Extract<AgentMessage, { type: "agent.update.status" }>["payload"];

/** `<state dir>/update.json`: an update swapped in and not yet confirmed by the new agent connecting. */
type Pending = {
  fromVersion: string;
  toVersion: string;
  requestedBy?: string;
  /** starts of the new file so far; a second start before it connected means it failed */
  starts: number;
  /** set by --check-update when it put the old file back: the old agent reports it */
  rolledBack?: boolean;
};
const Pending: Check<Pending> = object({
  fromVersion: string(),
  toVersion: string(),
  requestedBy: optional(string()),
  starts: number({ int: true, min: 0 }),
  rolledBack: optional(boolean),
});

const pendingPath = (stateDir: string) => join(stateDir, "update.json");
/** The file kept to roll back to (a .mjs, so Node reads it as a module when ExecStartPre runs it). */
export const previousFile = (agentFile: string) => join(dirname(agentFile), "quantix-agent.previous.mjs");

function readPending(stateDir: string): Pending | null {
  try {
    return Pending(JSON.parse(readFileSync(pendingPath(stateDir), "utf8")))?.value ?? null;
  } catch {
    return null;
  }
}

function writePending(stateDir: string, pending: Pending) {
  const tmp = `${pendingPath(stateDir)}.tmp`;
  writeFileSync(tmp, JSON.stringify(pending) + "\n", { mode: 0o600 });
  renameSync(tmp, pendingPath(stateDir));
}

/**
 * `--check-update`, before each start of the service, run from the previous file: a pending update
 * whose new file already had a start without connecting is rolled back; otherwise its start is
 * counted. Answers what it did, for the log.
 */
export function checkPendingUpdate(agentFile: string, stateDir: string): string {
  const pending = readPending(stateDir);
  if (!pending || pending.rolledBack) return "no update pending";
  if (pending.starts < 1) {
    writePending(stateDir, { ...pending, starts: pending.starts + 1 });
    return `starting ${pending.toVersion} (updated from ${pending.fromVersion}); it rolls back unless it connects`;
  }
  renameSync(previousFile(agentFile), agentFile);
  writePending(stateDir, { ...pending, rolledBack: true });
  return `${pending.toVersion} did not connect: rolled back to ${pending.fromVersion}`;
}

export type SelfUpdaterOptions = {
  /** the running bundle; null when running from a checkout (no file to replace) */
  agentFile: string | null;
  stateDir: string;
  server: string;
  version: string;
  credential: () => string;
  log: Logger;
  send: (msg: AgentMessage) => boolean;
  peerFeatures: () => ReadonlySet<string>;
  /** stop the agent with this exit status (closing its link cleanly) */
  exit: (code: number) => void;
  /** how long a new agent may take to connect before it gives up for a rollback */
  confirmWithinMs: number;
};

export class SelfUpdater {
  private readonly o: SelfUpdaterOptions;
  private busy = false;
  private probation: NodeJS.Timeout | null = null;

  constructor(options: SelfUpdaterOptions) {
    this.o = options;
  }

  /** At start: a new agent on probation gives itself `confirmWithinMs` to connect. */
  start() {
    const pending = readPending(this.o.stateDir);
    if (!pending || pending.rolledBack || pending.toVersion !== this.o.version) return;
    this.probation = setTimeout(() => {
      this.o.log.error(
        { withinMs: this.o.confirmWithinMs, version: this.o.version },
        "updated agent did not connect in time: exiting so the next start rolls back",
      );
      this.o.exit(1);
    }, this.o.confirmWithinMs);
    this.probation.unref();
  }

  /** Welcomed: confirm an update that brought us here, or report the rollback that brought us back. */
  onWelcome() {
    const pending = readPending(this.o.stateDir);
    if (!pending) return;
    if (this.probation) clearTimeout(this.probation);
    this.probation = null;
    const { fromVersion, toVersion, requestedBy } = pending;
    if (pending.rolledBack) {
      this.report({
        outcome: "rolled_back",
        fromVersion,
        toVersion,
        requestedBy,
        message: `${toVersion} did not connect after the update; ${fromVersion} was put back`,
      });
    } else if (toVersion === this.o.version) {
      this.report({ outcome: "updated", fromVersion, toVersion, requestedBy, message: `updated to ${toVersion}` });
      if (this.o.agentFile) rmSync(previousFile(this.o.agentFile), { force: true });
    } else return; // an update for another version: not ours to confirm
    rmSync(pendingPath(this.o.stateDir), { force: true });
  }

  async apply(cmd: UpdateCommand) {
    const { version, sha256, size, requestedBy } = cmd.payload;
    const failed = (message: string) => {
      this.o.log.error({ toVersion: version }, `update failed: ${message}`);
      this.report({ outcome: "failed", fromVersion: this.o.version, toVersion: version, requestedBy, message });
    };
    if (this.busy) return;
    const file = this.o.agentFile;
    if (!file) return failed("this agent runs from a source checkout, not an installed bundle: nothing to replace");
    this.busy = true;
    const download = join(dirname(file), `.${basename(file)}.download`);
    try {
      this.o.log.info({ toVersion: version, requestedBy }, "update: downloading the new agent");
      const got = await this.fetchTo(download, size);
      if (got.size !== size || got.sha256 !== sha256) {
        rmSync(download, { force: true });
        return failed(
          `the downloaded file's SHA-256 ${got.sha256} (${got.size} bytes) is not the expected ${sha256} (${size} bytes): refused, ${this.o.version} keeps running`,
        );
      }
      copyFileSync(file, previousFile(file));
      writePending(this.o.stateDir, { fromVersion: this.o.version, toVersion: version, requestedBy, starts: 0 });
      renameSync(download, file); // atomic: whoever starts the file next gets one whole version
      this.o.log.info({ fromVersion: this.o.version, toVersion: version }, "update: swapped in; exiting to restart");
      this.o.exit(EXIT_UPDATED);
    } catch (err) {
      rmSync(download, { force: true });
      failed(`${(err as Error).message}; ${this.o.version} keeps running`);
    } finally {
      this.busy = false;
    }
  }

  private report(payload: UpdateStatus) {
    if (!this.o.peerFeatures().has("update")) return;
    this.o.send({ type: "agent.update.status", id: randomUUID(), payload });
  }

  /** GET the bundle with the node credential into `path`, hashing as it comes; at most `size` bytes. */
  private fetchTo(path: string, size: number): Promise<{ size: number; sha256: string }> {
    const url = httpBase(this.o.server) + AGENT_UPDATE_PATH;
    const request = url.startsWith("https:") ? https.request : http.request;
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        { headers: { authorization: `Bearer ${this.o.credential()}` }, timeout: 60_000 },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            return reject(new Error(`GET ${AGENT_UPDATE_PATH} answered HTTP ${res.statusCode}`));
          }
          const hash = createHash("sha256");
          const out = createWriteStream(path, { mode: 0o755 });
          let received = 0;
          res.on("data", (chunk: Buffer) => {
            received += chunk.length;
            if (received > size) {
              req.destroy(new Error(`the download is larger than the expected ${size} bytes`));
              return;
            }
            hash.update(chunk);
            out.write(chunk);
          });
          res.on("end", () => out.end(() => resolve({ size: received, sha256: hash.digest("hex") })));
          res.on("error", (err) => out.destroy(err));
          out.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error("no answer in 60 s")));
      req.on("error", reject);
      req.end();
    });
  }
}
