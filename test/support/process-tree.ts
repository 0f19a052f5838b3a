// What a process started, read from Linux's /proc: every descendant (also those in process groups
// of their own, which still name their parent), the loopback TCP ports they listen on, and whether
// each one is still there (a pid is matched with its start time, so a reused pid does not count).
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

export type ProcessEntry = { pid: number; ppid: number; startTime: string; command: string };

function entry(pid: number): ProcessEntry | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name is in parentheses and may hold spaces: the fields after its ")" are fixed.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
    return { pid, ppid: Number(rest[1]), startTime: rest[19], command };
  } catch {
    return null; // gone meanwhile
  }
}

function allProcesses(): ProcessEntry[] {
  return readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map((name) => entry(Number(name)))
    .filter((e): e is ProcessEntry => e !== null && e.command !== "");
}

/** Every process below `root` now (not `root` itself). */
export function descendants(root: number): ProcessEntry[] {
  const all = allProcesses();
  const found: ProcessEntry[] = [];
  const parents = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of all)
      if (parents.has(p.ppid) && !parents.has(p.pid)) {
        parents.add(p.pid);
        found.push(p);
        grew = true;
      }
  }
  return found;
}

/** The same process (pid and start time) is still there; a zombie counts as gone. */
export function stillRunning(p: ProcessEntry): boolean {
  const now = entry(p.pid);
  if (!now || now.startTime !== p.startTime) return false;
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${p.pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
        if (m) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone
  }
  return inodes;
}

/** TCP ports these processes listen on. */
export function listeningPorts(processes: ProcessEntry[]): number[] {
  const inodes = new Set(processes.flatMap((p) => [...socketInodes(p.pid)]));
  const ports = new Set<number>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; column 9 is the socket's inode
      if (cols[3] === "0A" && inodes.has(cols[9])) ports.add(Number.parseInt(cols[1].split(":")[1], 16));
    }
  }
  return [...ports].sort((a, b) => a - b);
}
