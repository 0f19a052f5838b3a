// The bench's targets, in one table: every target a row prints, and whether it is met, comes from
// here (the README's table of targets quotes it). A target is judged on the row's own figures: its
// value, and the floor or baseline measured beside it in the same run.
export type Figures = { value: number; floor?: number; baseline?: number };
type Target = { figure: string; text: string; met: (f: Figures) => boolean };

const ref = (x: number | undefined) => x ?? Number.NaN;

export const TARGETS = {
  restErrors: { figure: "every REST load run: non-2xx + errors", text: "= 0", met: (f) => f.value === 0 },
  vmShowP50: {
    figure: "`GET /api/vms/:id` p50, 1 connection",
    text: "≤ floor + 1 ms",
    met: (f) => f.value <= ref(f.floor) + 1,
  },
  vmShowThroughput: {
    figure: "`GET /api/vms/:id` throughput, 50 connections",
    text: "≥ 0.9× floor",
    met: (f) => f.value >= 0.9 * ref(f.floor),
  },
  resetP50: {
    figure: "`reset_state` p50, 1 connection",
    text: "≤ floor + 2 ms",
    met: (f) => f.value <= ref(f.floor) + 2,
  },
  resetThroughput: {
    figure: "`reset_state` throughput, 50 connections",
    text: "≥ 0.7× floor",
    met: (f) => f.value >= 0.7 * ref(f.floor),
  },
  logsP50: {
    figure: "`GET /api/vms/:id/logs?lines=1000` p50, 1 connection",
    text: "≤ floor + 4 ms",
    met: (f) => f.value <= ref(f.floor) + 4,
  },
  inventoryStatements: {
    figure: "D1 statements for a 5,000-VM inventory sync",
    text: "≤ 500 (batched)",
    met: (f) => f.value <= 500,
  },
  inventoryParams: {
    figure: "most bound parameters in one D1 statement",
    text: "≤ 100",
    met: (f) => f.value <= 100,
  },
  fleetResetP99: {
    figure: "`reset_state` p99 with the fleet connected",
    text: "≤ 2× one agent",
    met: (f) => f.value <= 2 * ref(f.baseline),
  },
  fleetBack: {
    figure: "agents back after a control-plane restart",
    text: "= fleet size",
    met: (f) => f.value === f.baseline,
  },
  fleetReconnectBurst: {
    figure: "most reconnects in any one second after a restart",
    text: "≤ 0.1× fleet",
    met: (f) => f.value <= 0.1 * ref(f.baseline),
  },
  fleetLastBack: {
    figure: "control plane up → last agent back",
    text: "≤ 60000 ms",
    met: (f) => f.value <= 60_000,
  },
  tailVsGnu: {
    figure: "`tail -n 1,000` and `-n 10,000` of a 1 GiB log, in the agent",
    text: "≤ 0.5× GNU tail (process)",
    met: (f) => f.value <= 0.5 * ref(f.baseline),
  },
  tailOverread: {
    figure: "bytes a tail reads beyond those it returns",
    text: "≤ 65536 B",
    met: (f) => f.value <= 65_536,
  },
  tailRss: {
    figure: "peak RSS growth of a tail, 1 MiB or 1 GiB log",
    text: "≤ 16 MiB",
    met: (f) => f.value <= 16,
  },
  digestBytes: { figure: "digest frame at 50 VMs", text: "≤ 512 B", met: (f) => f.value <= 512 },
  digestStatements: {
    figure: "D1 statements per digest when nothing differs",
    text: "≤ 1",
    met: (f) => f.value <= 1,
  },
  digestStatementsPerHour: {
    figure: "D1 statements per node per hour, digests every 60 s",
    text: "≤ 60",
    met: (f) => f.value <= 60,
  },
  agentIdleRss: {
    figure: "agent idle RSS",
    text: "≤ floor + 16 MiB (floor: a bare `node`)",
    met: (f) => f.value <= ref(f.floor) + 16,
  },
  libvirtStateCall: {
    figure: "a libvirt state call (lookup + DOMAIN_GET_STATE)",
    text: "≤ 1.0× a long-lived virsh",
    met: (f) => f.value <= ref(f.baseline),
  },
  libvirtAllStats: {
    figure: "statistics of every active domain",
    text: "≤ 1.0× a long-lived virsh",
    met: (f) => f.value <= ref(f.baseline),
  },
  libvirtDestroyToRecord: {
    figure: "an out-of-band `virsh destroy` to the record, poll at 60 s",
    text: "≤ 100 ms",
    met: (f) => f.value <= 100,
  },
  floodP50: {
    figure: "viewer list / operator reset p50 while a rogue agent floods its node",
    text: "≤ 3× idle p50",
    met: (f) => f.value <= 3 * ref(f.baseline),
  },
  floodMax: {
    figure: "viewer list / operator reset, slowest call during the flood",
    text: "≤ 1000 ms",
    met: (f) => f.value <= 1000,
  },
  floodEvents: {
    figure: "event rows a rogue agent gets written in 10 s",
    text: "≤ 10000",
    met: (f) => f.value <= 10_000,
  },
  retentionP99: {
    figure: "viewer list p99 while the retention cron deletes a million old events",
    text: "≤ 4× idle p50",
    met: (f) => f.value <= 4 * ref(f.baseline),
  },
  retentionMax: {
    figure: "viewer list, slowest call while the retention cron deletes a million old events",
    text: "≤ 250 ms",
    met: (f) => f.value <= 250,
  },
  consoleKeystrokeP50: {
    figure: "console keystroke round trip p50, to a zero-delay echo",
    text: "≤ floor + 3 ms",
    met: (f) => f.value <= ref(f.floor) + 3,
  },
  consoleKeystrokeP99: {
    figure: "console keystroke round trip p99, to a zero-delay echo",
    text: "≤ floor + 10 ms",
    met: (f) => f.value <= ref(f.floor) + 10,
  },
  consoleFloodLost: {
    figure: "console flood (10 MiB): bytes lost or wrong for a reader that keeps up",
    text: "= 0",
    met: (f) => f.value === 0,
  },
  consoleFloodHeap: {
    figure: "console flood (10 MiB): isolate heap growth",
    text: "≤ 4 MiB",
    met: (f) => f.value <= 4,
  },
  consoleFloodTooSlow: {
    figure: "console flood: a stalled reader is cut with too_slow",
    text: "≤ 1024 KiB sent first",
    met: (f) => f.value <= 1024,
  },
  soakIsolateHeap: {
    figure: "soak: heap slope of every isolate after warm-up",
    text: "< 1 MiB/h",
    met: (f) => f.value < 1,
  },
  soakAgentRss: {
    figure: "soak: agent RSS slope after warm-up",
    text: "< 2 MiB/h",
    met: (f) => f.value < 2,
  },
  costIdleNode: {
    figure: "cost: idle node, 100 running VMs, monitoring on, per node-month at list prices",
    text: "≤ $0.01",
    met: (f) => f.value <= 0.01,
  },
  costFleet: {
    figure: "cost: fleet of 10,000 nodes at 100 VMs, per month billed",
    text: "≤ $100",
    met: (f) => f.value <= 100,
  },
  costAwakeShare: {
    figure: "cost: share of the window an idle node's object is awake (work in hand only)",
    text: "≤ 1 %",
    met: (f) => f.value <= 1,
  },
  freshStart: {
    figure: "a fresh clone to the demo VMs listed: `npm install` + `npm start`, npm's cache warm",
    text: "≤ 60 s",
    met: (f) => f.value <= 60,
  },
} satisfies Record<string, Target>;

export type TargetId = keyof typeof TARGETS;

/** The row's target text and whether its figures meet it. */
export function goal(id: TargetId, figures: Figures): { target: string; met: boolean } {
  const t: Target = TARGETS[id];
  return { target: t.text, met: t.met(figures) };
}
