// QEMU / libvirt log classification (protocol/log-classify.ts): levels for highlighting, the known
// issue each line names, each issue once with its first line, and the first error.
import { describe, expect, it } from "vitest";
import {
  classifyLine,
  findIssues,
  firstErrorLine,
  ISSUE_IDS,
  ISSUES,
  splitLines,
  type IssueId,
} from "../../protocol/log-classify.ts";

const level = (line: string) => classifyLine(line).level;

describe("classifyLine: level", () => {
  it.each([
    "2026-11-25T10:00:01.123+0000: qemu-system-x86_64: -drive file=/var/lib/libvirt/images/db.qcow2: Could not open: Permission denied",
    "qemu-system-x86_64: terminating on signal 15 from pid 1234 (/usr/sbin/libvirtd)",
    "block I/O error in device 'drive-virtio-disk0': No space left on device (28)",
    "2026-11-25 10:00:02.000+0000: 4321: error : qemuProcessReportLogError:1234 : internal error",
    "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory",
    "kvm: failed to initialize KVM: Operation not permitted",
    "Unable to connect to monitor",
    "2026-11-25 10:00:05.000+0000: shutting down, reason=crashed",
    "FATAL: module not found",
    // QEMU's messages name the failing option but start with a timestamp or the binary's name.
    `2026-08-22T09:25:23.458167Z qemu-system-x86_64: -blockdev {"driver":"file"}: Could not open '/x.qcow2': Permission denied`,
    "KVM internal error. Suberror: 1",
    // No error word, but the issue it names is an error.
    "qemu-system-x86_64: KVM not available",
  ])("error: %s", (line) => {
    expect(level(line)).toBe("error");
  });

  it.each([
    "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]",
    "qemu-system-x86_64: -machine pc-i440fx-2.11: warning: machine type is deprecated",
    "qemu-system-x86_64: warning: failed to register linux io_uring ring file descriptor", // QEMU's own label wins
    "guest agent command timed out, retrying",
    "spice: connection timeout",
    "the -no-acpi option is deprecated",
  ])("warning: %s", (line) => {
    expect(level(line)).toBe("warning");
  });

  it.each([
    "2026-11-25 10:00:00.000+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0, hostname: kvm-test-01",
    "char device redirected to /dev/pts/3 (label charserial0)",
    "2026-11-25 10:00:05.000+0000: shutting down, reason=shutdown",
    // The command line carries werror=/rerror=, error_policy, timeout= and netdev tap options: not errors.
    "LC_ALL=C PATH=/usr/bin HOME=/var/lib/libvirt/qemu/domain-1-db /usr/bin/qemu-system-x86_64 -name guest=db -blockdev werror=stop,rerror=stop -global timeout=5",
    "/usr/bin/qemu-system-x86_64 -name guest=web,debug-threads=on -drive error_policy=stop",
    "device_add werror=report rerror=ignore",
    // libvirt logs the command line one option per line, each ending in " \\".
    `-blockdev '{"driver":"file","filename":"/var/lib/libvirt/images/failover.qcow2","node-name":"libvirt-1-storage"}' \\`,
    "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \\",
    "-netdev tap,fd=34,id=hostnet0,vhost=on,vhostfd=35 \\",
    "-msg timestamp=on",
    "",
    "<script>alert(1)</script><img src=x onerror=alert(2)>",
  ])("normal: %s", (line) => {
    expect(classifyLine(line)).toEqual({ level: "normal", issue: null });
  });
});

// Real lines as QEMU, qemu-img and libvirt write them, per issue.
const ISSUE_LINES: Record<IssueId, string[]> = {
  disk_full: [
    "2026-11-25T10:01:00.000000Z qemu-system-x86_64: block I/O error in device 'drive-virtio-disk0': No space left on device (28)",
    "block I/O error in device 'drive-virtio-disk0': Input/output error (5)",
    "qemu-img: error while writing sector 2048: No space left on device",
  ],
  permission_denied: [
    "2026-11-25T10:00:01.123456Z qemu-system-x86_64: -drive file=/home/ops/vm.qcow2,format=qcow2,if=none,id=drive-virtio-disk0: Could not open '/home/ops/vm.qcow2': Permission denied",
    "error: cannot access storage file '/srv/images/db.img' (as uid:64055, gid:108): Permission denied",
    'audit: type=1400 audit(1700000000.123:45): apparmor="DENIED" operation="open" profile="libvirt-5a1e0000" name="/srv/iso/debian.iso"',
  ],
  killed_by_signal: [
    "2026-11-25T10:04:59.000000Z qemu-system-x86_64: terminating on signal 15 from pid 1187 (/usr/sbin/libvirtd)",
    "qemu-system-x86_64: terminating on signal 9 from pid 1 (/sbin/init)",
  ],
  timeout: [
    "error: Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainCreateWithFlags)",
    "2026-11-25T10:02:00.000000Z qemu-system-x86_64: guest agent command timed out, retrying",
  ],
  kvm_unavailable: [
    "Could not access KVM kernel module: No such file or directory",
    "qemu-system-x86_64: failed to initialize kvm: No such file or directory",
    "qemu-system-x86_64: failed to initialize KVM: Permission denied",
    "error: unsupported configuration: Domain requires KVM, but it is not available. Check that virtualization is enabled in the host BIOS, and host configuration is setup to load the kvm modules.",
    "error: invalid argument: could not find capabilities for domaintype=kvm",
  ],
  missing_image: [
    `2026-11-25T10:00:01.000000Z qemu-system-x86_64: -blockdev {"driver":"file","filename":"/var/lib/libvirt/images/db.qcow2","node-name":"libvirt-1-storage"}: Could not open '/var/lib/libvirt/images/db.qcow2': No such file or directory`,
    "error: Cannot access storage file '/var/lib/libvirt/images/win10.qcow2': No such file or directory",
    "qemu-system-x86_64: Could not open backing file: Could not open '/srv/base.qcow2': No such file or directory",
  ],
  out_of_memory: [
    "qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory",
    "kvm_init_vcpu failed: Cannot allocate memory",
    "os_mem_prealloc: Insufficient free host memory pages available to allocate guest RAM",
  ],
  network: [
    "2026-11-25T10:00:01.000000Z qemu-system-x86_64: -netdev tap,fd=34,id=hostnet0,vhost=on,vhostfd=35: could not configure /dev/net/tun (tap0): Operation not permitted",
    "error: Unable to add bridge br0 port vnet0: No such device",
    "error: Requested operation is not valid: network 'default' is not active",
    "error: Cannot get interface MTU on 'br1': No such device",
  ],
  migration_failed: [
    "2026-11-25T10:00:09.000000Z qemu-system-x86_64: load of migration failed: Invalid argument",
    "qemu-system-x86_64: error while loading state for instance 0x0 of device 'ram'",
    "error: operation failed: migration out job: unexpectedly failed",
    "qemu-system-x86_64: Unknown savevm section or instance 'kvm-tpr-opt' 0. Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices",
  ],
  guest_crash: [
    "2026-11-25 10:00:05.000+0000: shutting down, reason=crashed",
    "KVM internal error. Suberror: 1",
    "KVM: entry failed, hardware error 0x80000021",
    "qemu-system-x86_64: guest panicked: GUEST_PANICKED",
  ],
};

describe("classifyLine: issue", () => {
  for (const id of ISSUE_IDS) {
    it.each(ISSUE_LINES[id])(`${id}: %s`, (line) => {
      const c = classifyLine(line);
      expect(c.issue).toBe(id);
      expect(c.level).not.toBe("normal");
    });
  }

  it("every issue has a label and a one-line explanation", () => {
    expect(Object.keys(ISSUES).sort()).toEqual([...ISSUE_IDS].sort());
    for (const id of ISSUE_IDS) {
      expect(ISSUES[id].label.length).toBeGreaterThan(3);
      expect(ISSUES[id].explanation).not.toContain("\n");
      expect(ISSUES[id].explanation.length).toBeGreaterThan(40);
    }
  });

  it("a warning line keeps its issue but not an error level; plain warnings name none", () => {
    expect(classifyLine("qemu-system-x86_64: warning: spice: connection timeout")).toEqual({
      level: "warning",
      issue: "timeout",
    });
    expect(
      classifyLine("qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]"),
    ).toEqual({ level: "warning", issue: null });
  });
});

describe("findIssues and firstErrorLine", () => {
  const log = [
    "2026-11-25 10:00:00.000+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0",
    "-msg timestamp=on",
    "qemu-system-x86_64: warning: guest agent command timed out, retrying",
    "block I/O error in device 'drive-virtio-disk0': No space left on device (28)",
    "block I/O error in device 'drive-virtio-disk0': No space left on device (28)",
    "qemu-system-x86_64: terminating on signal 15 from pid 1187 (/usr/sbin/libvirtd)",
    "2026-11-25 10:05:00.000+0000: shutting down, reason=shutdown",
  ];
  const classes = log.map(classifyLine);

  it("lists each issue once, in the order first seen, with its first line and count", () => {
    expect(findIssues(classes).map(({ id, firstLine, count }) => ({ id, firstLine, count }))).toEqual([
      { id: "timeout", firstLine: 2, count: 1 },
      { id: "disk_full", firstLine: 3, count: 2 },
      { id: "killed_by_signal", firstLine: 5, count: 1 },
    ]);
    expect(findIssues(classes)[1].explanation).toBe(ISSUES.disk_full.explanation);
    expect(findIssues(["all good"].map(classifyLine))).toEqual([]);
  });

  it("finds the first error line, skipping warnings", () => {
    expect(firstErrorLine(classes)).toBe(3);
    expect(firstErrorLine(["fine", "qemu: warning: x"].map(classifyLine))).toBe(-1);
  });
});

describe("splitLines", () => {
  it("drops only the empty remainder after the final newline", () => {
    expect(splitLines("a\nb\n")).toEqual(["a", "b"]);
    expect(splitLines("a\r\n\nb")).toEqual(["a", "", "b"]);
    expect(splitLines("")).toEqual([]);
  });
});
