// Log line classification for highlighting (web/src/features/logs/classify.ts) and the help it links.
import { describe, expect, it } from "vitest";
import { classifyLine, splitLines } from "../../web/src/features/logs/classify.ts";
import { detectIssues } from "../../web/src/features/logs/help.ts";

describe("classifyLine", () => {
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
  ])("error: %s", (line) => {
    expect(classifyLine(line)).toBe("error");
  });

  it.each([
    "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]",
    "qemu-system-x86_64: -machine pc-i440fx-2.11: warning: machine type is deprecated",
    "qemu-system-x86_64: warning: failed to register linux io_uring ring file descriptor", // QEMU's own label wins
    "guest agent command timed out, retrying",
    "spice: connection timeout",
    "the -no-acpi option is deprecated",
  ])("warning: %s", (line) => {
    expect(classifyLine(line)).toBe("warning");
  });

  it.each([
    "2026-11-25 10:00:00.000+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0",
    "char device redirected to /dev/pts/3 (label charserial0)",
    "2026-11-25 10:00:05.000+0000: shutting down, reason=shutdown",
    // The command line carries werror=/rerror= and error_policy options: not errors.
    "LC_ALL=C PATH=/usr/bin HOME=/var/lib/libvirt/qemu/domain-1-db /usr/bin/qemu-system-x86_64 -name guest=db -blockdev werror=stop,rerror=stop -global timeout=5",
    "/usr/bin/qemu-system-x86_64 -name guest=web,debug-threads=on -drive error_policy=stop",
    "device_add werror=report rerror=ignore",
    // libvirt logs the command line one option per line, each ending in " \\".
    `-blockdev '{"driver":"file","filename":"/var/lib/libvirt/images/failover.qcow2","node-name":"libvirt-1-storage"}' \\`,
    "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \\",
    "-msg timestamp=on",
    "",
    "<script>alert(1)</script><img src=x onerror=alert(2)>",
  ])("normal: %s", (line) => {
    expect(classifyLine(line)).toBe("normal");
  });
});

describe("splitLines", () => {
  it("drops only the empty remainder after the final newline", () => {
    expect(splitLines("a\nb\n")).toEqual(["a", "b"]);
    expect(splitLines("a\r\n\nb")).toEqual(["a", "", "b"]);
    expect(splitLines("")).toEqual([]);
  });
});

describe("detectIssues", () => {
  it("names the common issues present in a log and only those", () => {
    const log = "block I/O error: No space left on device\nqemu: terminating on signal 15 from pid 1\n";
    expect(detectIssues(log).map((i) => i.id)).toEqual(["no-space", "signal"]);
    expect(detectIssues("Could not open disk: Permission denied").map((i) => i.id)).toEqual(["permission"]);
    expect(detectIssues("guest agent timed out").map((i) => i.id)).toEqual(["timeout"]);
    expect(detectIssues("all good")).toEqual([]);
  });
});
