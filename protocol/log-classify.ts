// QEMU / libvirt log line classification shared by the dashboard (colours, issues found, jump to the
// first error) and the Worker (which lines make a useful excerpt). Pure and dependency-free.
export type LineLevel = "error" | "warning" | "normal";

export const ISSUE_IDS = [
  "disk_full",
  "permission_denied",
  "killed_by_signal",
  "timeout",
  "kvm_unavailable",
  "missing_image",
  "out_of_memory",
  "network",
  "migration_failed",
  "guest_crash",
] as const;
export type IssueId = (typeof ISSUE_IDS)[number];

export type LineClass = { level: LineLevel; issue: IssueId | null };

/** What each issue is, in one line an operator can act on. */
export const ISSUES: Record<IssueId, { label: string; explanation: string }> = {
  disk_full: {
    label: "Disk full / IO error",
    explanation:
      "A guest disk write failed on the host (no space left or an I/O error): free space in the image's storage pool (df -h, thin-pool usage), then resume or restart the VM.",
  },
  permission_denied: {
    label: "Permission denied",
    explanation:
      "QEMU could not open a file or device: check owner and mode of the image or device for the qemu user and the AppArmor / SELinux labels (dmesg, audit.log).",
  },
  killed_by_signal: {
    label: "Killed by a signal",
    explanation:
      "QEMU was ended by a signal: 15 is usually a force stop (virsh destroy) or host shutdown, 9 a kill, often the OOM killer (check dmesg); the line names the sending pid.",
  },
  timeout: {
    label: "Timeout",
    explanation:
      "Something took too long: a guest ignoring ACPI shutdown, slow or unreachable storage (NFS, iSCSI), a busy host or a stuck libvirt job; Force stop ends a guest that will not shut down.",
  },
  kvm_unavailable: {
    label: "KVM unavailable",
    explanation:
      "Hardware virtualization is not usable: enable VT-x / AMD-V in the firmware, load kvm_intel or kvm_amd, and let the qemu user open /dev/kvm (kvm group).",
  },
  missing_image: {
    label: "Missing disk image",
    explanation:
      "A disk image or backing file named in the domain XML does not exist on this host: restore it or fix the path (virsh edit), and check that its storage is mounted.",
  },
  out_of_memory: {
    label: "Out of memory",
    explanation:
      "The host could not give QEMU the guest's memory: lower the VM's memory, free memory on the host, or check hugepages / locked-memory limits.",
  },
  network: {
    label: "Network device error",
    explanation:
      "The VM's tap device or bridge could not be set up: check that the bridge or libvirt network exists and is active (virsh net-list --all, ip link) and /dev/net/tun.",
  },
  migration_failed: {
    label: "Migration failed",
    explanation:
      "A live migration or state restore failed: compare QEMU versions and machine types on both hosts, shared storage and the network between them; the VM stays on the source.",
  },
  guest_crash: {
    label: "Guest crashed",
    explanation:
      "The guest OS panicked or the vCPU hit an unrecoverable KVM error: read the guest's own console / kernel log, and check guest drivers, CPU model and host firmware.",
  },
};

// libvirt logs QEMU's command line at every start (one option per line ending in a backslash); it
// carries option names like `werror=`, `rerror=`, `timeout=` and paths with "fail" in them, never an
// error by itself. QEMU's own messages start with a timestamp or "qemu-system-…:", never "-opt ".
const COMMAND_LINE =
  /^(LC_ALL=|PATH=|HOME=|XDG_\w+=|\/\S*qemu-system-[\w-]+(\s|$)|-[a-z][\w-]*\s)|\s\\$|\bqemu-system-[\w-]+\s+-name\s/;

// An explicit level label ("qemu-system-x86_64: warning: …", libvirt's "1234: error : …") wins
// over the words in the message: QEMU's "warning: failed to …" is still a warning.
const ERROR_LABEL = /(^|[\s:])(error|fatal|critical|panic)\s?:/i;
const WARNING_LABEL = /(^|[\s:])warn(ing)?\s?:/i;

const ERROR_WORDS = [
  /\berrors?\b/i, // word boundaries keep werror=/rerror=/error_policy= out
  /\bfail(s|ed|ure|ing)?\b/i,
  /\bfatal\b/i,
  /\bdenied\b/i,
  /\bno space left\b/i,
  /\bterminating on signal\b/i,
  /\bcannot\b|\bcan't\b|\bcould not\b|\bunable\b/i,
  /\bno such file\b/i,
  /\bi\/o error\b|\bEIO\b/i,
  /\bsegfault|segmentation fault|core dumped\b/i,
  /\bout of memory\b|\boom[- ]kill/i,
  /\bcorrupt(ed|ion)?\b/i,
  /\babort(ed|ing)?\b/i,
  /\bpanic(ked)?\b/i,
  /\breason=crashed\b/i,
];

const WARNING_WORDS = [
  /\bwarn(s|ed|ing|ings)?\b/i,
  /\bdeprecated\b|\bdeprecation\b/i,
  /\btime(d)? ?out\b|\btimeouts?\b/i,
  /\bretry(ing)?\b|\bretries\b|\bretrying\b/i,
  /\bnot supported\b|\bunsupported\b/i,
  /\bdoesn't support\b|\bdoes not support\b/i,
];

// First match wins, so the specific come before the general: "failed to initialize kvm: Permission
// denied" is a KVM problem, "could not configure /dev/net/tun: Operation not permitted" a network
// one, "Could not open '…': No such file or directory" a missing image. `level` is the least a line
// naming the issue is (a label saying "warning:" still wins).
const ISSUE_RULES: Array<{ id: IssueId; pattern: RegExp; level: Exclude<LineLevel, "normal"> }> = [
  {
    id: "kvm_unavailable",
    pattern:
      /could not access kvm kernel module|failed to initiali[sz]e kvm|\bkvm (is )?not (available|supported|present)|requires kvm, but it is not available|disabled by bios|domaintype=kvm|\/dev\/kvm\b[^\n]*(no such file|permission denied|not found|does not exist|missing)|(no such file|permission denied|cannot open|failed to open|could not open|unable to open)[^\n]*\/dev\/kvm/i,
    level: "error",
  },
  {
    id: "guest_crash",
    pattern:
      /guest[ _-]?panic|\bpanicked\b|reason=crashed|guest (has )?crashed|kvm internal error|entry failed, hardware error|emulation failure|triple fault/i,
    level: "error",
  },
  {
    id: "migration_failed",
    pattern:
      /migrat\w*[^\n]*\b(fail\w*|error|cancel\w*|abort\w*)|\b(fail\w*|error)\b[^\n]*migrat|error while loading state|unknown savevm section/i,
    level: "error",
  },
  {
    id: "missing_image",
    pattern:
      /(could not open|cannot access storage file|cannot open file|failed to open|unable to open|could not open backing file)[^\n]*(no such file or directory|ENOENT)|storage (file|volume|pool)[^\n]*(not found|does not exist)|no storage vol(ume)? with matching/i,
    level: "error",
  },
  {
    id: "disk_full",
    pattern:
      /no space left on device|\bENOSPC\b|reason='?enospc|\bi\/o error\b|\bio error\b|\bEIO\b|disk quota exceeded/i,
    level: "error",
  },
  {
    id: "out_of_memory",
    pattern:
      /cannot allocate memory|\bENOMEM\b|\bout of memory\b|\boom[- ]kill|failed to (allocate|mmap)[^\n]*memory|cannot set up guest memory|insufficient free host memory/i,
    level: "error",
  },
  {
    id: "network",
    pattern:
      /\/dev\/net\/tun|\btap\d*\b[^\n]*\b(error|fail\w*|could not|cannot|unable|denied|busy)|\b(could not|cannot|unable to|failed to)\b[^\n]*\b(tap|bridge|vnet\d*|macvtap|netdev|interface)\b|network '[^']*' is not active|\bbridge\b[^\n]*(no such device|does not exist|not found)/i,
    level: "error",
  },
  {
    id: "permission_denied",
    pattern:
      /permission denied|operation not permitted|\bEACCES\b|\bEPERM\b|apparmor="?denied|avc:\s+denied|\bsvirt\b[^\n]*denied/i,
    level: "error",
  },
  {
    id: "killed_by_signal",
    pattern: /terminating on signal \d+|killed by signal|\bsignal (9|15)\b[^\n]*(kill|term)/i,
    level: "error",
  },
  { id: "timeout", pattern: /\btime(d)? ?out\b|\btimeouts?\b|\bETIMEDOUT\b/i, level: "warning" },
];

const rank: Record<LineLevel, number> = { normal: 0, warning: 1, error: 2 };

function wordLevel(line: string): LineLevel {
  if (ERROR_WORDS.some((re) => re.test(line))) return "error";
  if (WARNING_WORDS.some((re) => re.test(line))) return "warning";
  return "normal";
}

/** The level of one log line and the known issue it names, if any. */
export function classifyLine(line: string): LineClass {
  if (line === "" || COMMAND_LINE.test(line)) return { level: "normal", issue: null };
  const rule = ISSUE_RULES.find((r) => r.pattern.test(line));
  const issue = rule?.id ?? null;
  if (WARNING_LABEL.test(line) && !ERROR_LABEL.test(line)) return { level: "warning", issue };
  if (ERROR_LABEL.test(line)) return { level: "error", issue };
  const words = wordLevel(line);
  const level = rule && rank[rule.level] > rank[words] ? rule.level : words;
  return { level, issue };
}

/** Splits a log into lines, dropping the empty remainder after a final newline. */
export function splitLines(text: string): string[] {
  if (text === "") return [];
  const lines = text.split(/\r?\n/);
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

export type FoundIssue = { id: IssueId; label: string; explanation: string; firstLine: number; count: number };

/** Each issue named in the classified lines, once, in the order first seen; `firstLine` is 0-based. */
export function findIssues(classes: readonly LineClass[]): FoundIssue[] {
  const found = new Map<IssueId, FoundIssue>();
  classes.forEach((c, index) => {
    if (!c.issue) return;
    const seen = found.get(c.issue);
    if (seen) seen.count++;
    else found.set(c.issue, { id: c.issue, ...ISSUES[c.issue], firstLine: index, count: 1 });
  });
  return [...found.values()];
}

/** 0-based index of the first error line, or -1. */
export function firstErrorLine(classes: readonly LineClass[]): number {
  return classes.findIndex((c) => c.level === "error");
}
