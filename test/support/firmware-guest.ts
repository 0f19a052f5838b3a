// The SeaBIOS/iPXE guest of the real-QEMU console tests (scripts/demo-guest.ts has its XML): a name
// with the test's prefix and a random suffix, defined (not started) through LibvirtAdmin, and removed
// with its logs afterwards.
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { firmwareGuestXml } from "../../scripts/demo-guest.ts";
import type { LibvirtAdmin } from "./libvirt-admin.ts";

export const QEMU_LOG_DIR = "/var/log/libvirt/qemu";

export type FirmwareGuest = {
  name: string;
  uuid: string;
  xml: string;
  /** the serial port's own log, when asked for */
  serialLog?: string;
};

/** A guest description; `serialLog: true` has QEMU copy the serial output to `<name>-serial.log`. */
export function firmwareGuest(prefix: string, opts: { vnc?: boolean; serialLog?: boolean } = {}): FirmwareGuest {
  const name = `${prefix}-${randomBytes(4).toString("hex")}`;
  const uuid = crypto.randomUUID();
  const serialLog = opts.serialLog ? join(QEMU_LOG_DIR, `${name}-serial.log`) : undefined;
  return { name, uuid, serialLog, xml: firmwareGuestXml({ name, uuid, vnc: opts.vnc, serialLog }) };
}

/** Destroys and undefines the guest if it is there, and deletes its logs. */
export async function removeFirmwareGuest(admin: LibvirtAdmin, guest: FirmwareGuest): Promise<void> {
  const dom = await admin.domainLookupByUUIDString(guest.uuid).catch(() => null);
  if (dom) {
    await admin.domainDestroy(dom).catch(() => {});
    await admin.domainUndefine(dom).catch(() => {});
  }
  rmSync(join(QEMU_LOG_DIR, `${guest.name}.log`), { force: true });
  if (guest.serialLog) rmSync(guest.serialLog, { force: true });
}
