// QEMU logs for the browser tests' test-driver host (test/web/fixtures/node.xml), written into a
// temporary log directory: realistic lines, error / warning lines, HTML and script payloads, and
// one 10,000-line log.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const FIXTURE_XML = join(import.meta.dirname, "../fixtures/node.xml");

export const VMS = {
  web: { id: "5a1e0000-0000-4000-8000-000000000001", name: "web-01" },
  stuck: { id: "5a1e0000-0000-4000-8000-000000000002", name: "db-stuck" },
  forceMe: { id: "5a1e0000-0000-4000-8000-000000000003", name: "force-me" },
  oddName: { id: "5a1e0000-0000-4000-8000-000000000004", name: "payload+name@x:y.z_-1" },
  bigLog: { id: "5a1e0000-0000-4000-8000-000000000005", name: "big-log" },
  crashy: { id: "5a1e0000-0000-4000-8000-000000000006", name: "crashy" },
} as const;

/** Payloads that must show as literal text and run nothing. */
export const PAYLOADS = [
  `<script>window.__pwned = "script"; alert("script")</script>`,
  `<img src=x onerror="window.__pwned = 'img'; alert('img')">`,
  `<svg onload="window.__pwned = 'svg'">`,
  `"><iframe src="javascript:alert('iframe')"></iframe>`,
];

export const WEB_LOG_LAST_LINE = "2026-11-25 10:05:00.000+0000: shutting down, reason=shutdown";

function webLog(): string {
  return [
    "2026-11-25 10:00:00.000+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.0, hostname: kvm-test-01",
    "LC_ALL=C \\",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin \\",
    "/usr/bin/qemu-system-x86_64 \\",
    "-name guest=web-01,debug-threads=on \\",
    `-blockdev '{"driver":"file","filename":"/var/lib/libvirt/images/web-01.qcow2","node-name":"libvirt-1-storage"}' \\`,
    "-msg timestamp=on",
    "char device redirected to /dev/pts/3 (label charserial0)",
    "2026-11-25T10:00:01.000000Z qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.80000001H:ECX.svm [bit 2]",
    ...PAYLOADS.map((p) => `2026-11-25T10:00:02.000000Z guest console: ${p}`),
    "2026-11-25T10:01:00.000000Z qemu-system-x86_64: block I/O error in device 'virtio-disk0': No space left on device (28)",
    "2026-11-25T10:02:00.000000Z qemu-system-x86_64: guest agent command timed out, retrying",
    "2026-11-25T10:04:59.000000Z qemu-system-x86_64: terminating on signal 15 from pid 1187 (/usr/sbin/libvirtd)",
    WEB_LOG_LAST_LINE,
    "",
  ].join("\n");
}

function bigLog(lines: number): string {
  const out: string[] = [];
  for (let i = 1; i <= lines; i++) {
    const level =
      i % 97 === 0
        ? "qemu-system-x86_64: warning: guest did not acknowledge stats request in time"
        : i % 151 === 0
          ? "qemu-system-x86_64: error: virtio-net: failed to send"
          : "virtio-balloon: stats update";
    out.push(`2026-11-25T10:00:00.${String(i).padStart(6, "0")}Z line ${i} ${level}`);
  }
  return out.join("\n") + "\n";
}

export function writeFixtureLogs(logDir: string): void {
  mkdirSync(logDir, { recursive: true });
  writeFileSync(join(logDir, `${VMS.web.name}.log`), webLog());
  writeFileSync(
    join(logDir, `${VMS.stuck.name}.log`),
    "2026-11-25 09:00:00.000+0000: starting up libvirt version: 9.0.0\n",
  );
  writeFileSync(
    join(logDir, `${VMS.forceMe.name}.log`),
    "2026-11-25 09:00:00.000+0000: starting up libvirt version: 9.0.0\n",
  );
  writeFileSync(join(logDir, `${VMS.oddName.name}.log`), `name check: ${VMS.oddName.name}\n`);
  writeFileSync(join(logDir, `${VMS.bigLog.name}.log`), bigLog(12_000));
  // crashy has no log on purpose: the Logs tab explains log_not_found.
}

/** A test-driver host with `count` shut-off domains fleet-00001…, for paging through a big list. */
export function writeFleetXml(path: string, count: number): void {
  const domains: string[] = [];
  for (let i = 1; i <= count; i++) {
    const n = String(i).padStart(5, "0");
    domains.push(
      `<domain type="test"><name>fleet-${n}</name><uuid>f1ee0000-0000-4000-8000-${String(i).padStart(12, "0")}</uuid><memory unit="MiB">512</memory><vcpu>1</vcpu><os><type arch="x86_64">hvm</type></os><test:runstate>5</test:runstate></domain>`,
    );
  }
  writeFileSync(
    path,
    `<?xml version="1.0"?>\n<node xmlns:test="http://libvirt.org/schemas/domain/test/1.0">\n${domains.join("\n")}\n</node>\n`,
  );
}
