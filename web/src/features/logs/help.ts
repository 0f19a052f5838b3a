// Help for the common QEMU log problems (SPEC §5): what a line means and what to check on the host.
export type LogIssue = { id: string; title: string; pattern: RegExp; advice: string };

export const LOG_ISSUES: LogIssue[] = [
  {
    id: "no-space",
    title: "IO error / no space left on device",
    pattern: /no space left on device|\bi\/o error\b|\bEIO\b|\bENOSPC\b|block I\/O error|werror/i,
    advice:
      "The guest's disk write failed on the host. Check free space of the storage pool (df -h on the image's filesystem, thin-pool usage), free it, then resume or restart the VM.",
  },
  {
    id: "signal",
    title: "terminating on signal",
    pattern: /terminating on signal/i,
    advice:
      "QEMU was stopped by a signal: signal 15 usually means a force stop (virsh destroy) or the host shutting down, signal 9 a kill (often the OOM killer: check dmesg). The pid named in the line is who sent it.",
  },
  {
    id: "permission",
    title: "permission denied",
    pattern: /permission denied|\bdenied\b|EACCES|apparmor|selinux/i,
    advice:
      "QEMU could not open a file or device. Check ownership and mode of the disk image or device (qemu user), and AppArmor / SELinux labels (dmesg, audit.log).",
  },
  {
    id: "timeout",
    title: "timeout",
    pattern: /\btime(d)? ?out\b|\btimeouts?\b/i,
    advice:
      "An operation took too long: a guest that ignores ACPI shutdown, slow or unreachable storage (NFS, iSCSI), or a busy host. Check the guest's ACPI support and storage latency; Force stop ends a guest that will not shut down.",
  },
];

/** The issues whose pattern appears in the given log text. */
export function detectIssues(text: string): LogIssue[] {
  return LOG_ISSUES.filter((issue) => issue.pattern.test(text));
}
