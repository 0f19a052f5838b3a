// mkfifo for tests (Node has no API for it): a named pipe where a log file should be.
import { execFileSync } from "node:child_process";

export function mkfifoSync(path: string) {
  execFileSync("mkfifo", [path]);
}
