// What `npm start` prints of its children: wrangler's output without the chatter that says nothing to
// someone running the demo, and the agent's pino JSON lines as short readable ones.
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

/** wrangler's chatter that says nothing to someone running the demo. */
const WRANGLER_NOISE = [
  /^\s*$/,
  /⛅️ wrangler/,
  /^[─-]+$/,
  /^Using (secrets|vars) defined in/,
  /^Your Worker has access to the following bindings/,
  /^Binding\s+Resource\s+Mode/,
  /^env\.\S+/,
  /^⎔ Starting local server/,
  /Ready on http/,
  /update available/,
  /✨ Parsed \d+ valid (header|redirect) rules?/,
  /^\[wrangler:info\] (GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) \S+ [123]\d\d /, // successful requests
];
/** Lines that start a noisy block whose stack trace follows (no network for `Request.cf` here). */
const WRANGLER_NOISY_BLOCK = [
  /Unable to fetch the `Request\.cf` object/,
  /^Error: getaddrinfo \S+ workers\.cloudflare\.com/,
];

function pipeLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void) {
  createInterface({ input: stream, crlfDelay: Infinity }).on("line", onLine);
}

export function tidyWrangler(child: ChildProcess) {
  let inNoisyBlock = false;
  const onLine = (raw: string) => {
    const line = raw.replace(/\x1b\[[0-9;]*m/g, "");
    if (WRANGLER_NOISY_BLOCK.some((re) => re.test(line))) return void (inNoisyBlock = true);
    if (inNoisyBlock && /^\s+at /.test(line)) return;
    inNoisyBlock = false;
    if (WRANGLER_NOISE.some((re) => re.test(line))) return;
    console.log(`[worker] ${line}`);
  };
  pipeLines(child.stdout!, onLine);
  pipeLines(child.stderr!, onLine);
}

/** pino's JSON lines as short readable ones; anything else as it comes. */
export function tidyAgent(child: ChildProcess) {
  const onLine = (line: string) => {
    try {
      const {
        level,
        msg,
        time: _t,
        pid: _p,
        hostname: _h,
        name: _n,
        svc: _s,
        ...rest
      } = JSON.parse(line) as Record<string, unknown>;
      if (typeof level === "number" && level < 30) return;
      const extra = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(" ");
      const tag =
        typeof level === "number" && level >= 50 ? "error: " : typeof level === "number" && level >= 40 ? "warn: " : "";
      console.log(`[agent] ${tag}${String(msg ?? "")}${extra ? ` ${extra}` : ""}`);
    } catch {
      if (line.trim()) console.log(`[agent] ${line}`);
    }
  };
  pipeLines(child.stdout!, onLine);
  pipeLines(child.stderr!, onLine);
}
