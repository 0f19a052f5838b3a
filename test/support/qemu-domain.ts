// The smallest real QEMU guest for tests on a real libvirtd: diskless, 64 MiB, no OS, so it boots,
// writes /var/log/libvirt/qemu/<name>.log, and ignores a graceful shutdown (no ACPI handling).
import { randomBytes } from "node:crypto";

/** `memoryMiB` with `preallocate`: a larger guest whose memory QEMU allocates whole before it runs,
 *  which makes its start slower (as large guests are in the field). */
export function disklessQemuDomain(
  prefix: string,
  opts: { memoryMiB?: number; preallocate?: boolean } = {},
): { name: string; uuid: string; xml: string } {
  const name = `${prefix}-${randomBytes(4).toString("hex")}`;
  const uuid = crypto.randomUUID();
  const backing = opts.preallocate ? "\n  <memoryBacking><allocation mode='immediate'/></memoryBacking>" : "";
  const xml = `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='MiB'>${opts.memoryMiB ?? 64}</memory>${backing}
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
