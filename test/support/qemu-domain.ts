// The smallest real QEMU guest for tests on a real libvirtd: diskless, 64 MiB, no OS, so it boots,
// writes /var/log/libvirt/qemu/<name>.log, and ignores a graceful shutdown (no ACPI handling).
import { randomBytes } from "node:crypto";

export function disklessQemuDomain(prefix: string): { name: string; uuid: string; xml: string } {
  const name = `${prefix}-${randomBytes(4).toString("hex")}`;
  const uuid = crypto.randomUUID();
  const xml = `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>`;
  return { name, uuid, xml };
}
