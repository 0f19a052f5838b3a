// The small real guest that needs no OS and talks on both consoles: SeaBIOS (with useserial) and
// then iPXE, the e1000's option ROM, print on its serial port and draw on its VGA screen; Ctrl-B at
// iPXE's prompt gives an `iPXE>` shell that echoes. `npm start` runs one as its QEMU demo, and the
// real-QEMU tests build theirs with the same XML (test/support/firmware-guest.ts).
import { existsSync } from "node:fs";
import { LibvirtClient, type DomainRef } from "../agent/libvirt/index.ts";

export const QEMU_BINARY = "/usr/bin/qemu-system-x86_64";

export type FirmwareGuestOptions = {
  name: string;
  uuid: string;
  /** a VGA screen with a VNC display on the host's loopback (autoport) */
  vnc?: boolean;
  /** where QEMU also writes what the serial port prints */
  serialLog?: string;
  /** SeaBIOS boots again this long after finding nothing to boot (default: it stops there) */
  rebootAfterMs?: number;
};

const escapeXml = (s: string) =>
  s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll("'", "&apos;");

/**
 * The guest's domain XML: diskless, 64 MiB, type='qemu' (no KVM needed). Its NIC is user-mode
 * networking, which QEMU answers itself (DHCP for iPXE): nothing it does leaves the host.
 */
export function firmwareGuestXml(o: FirmwareGuestOptions): string {
  const reboot = o.rebootAfterMs === undefined ? "" : ` rebootTimeout='${o.rebootAfterMs}'`;
  const serial = o.serialLog
    ? `<serial type='pty'><log file='${escapeXml(o.serialLog)}' append='off'/></serial>`
    : "<serial type='pty'/>";
  const display = o.vnc
    ? "<graphics type='vnc' listen='127.0.0.1' autoport='yes'/>\n    <video><model type='vga'/></video>"
    : "<video><model type='none'/></video>";
  return `<domain type='qemu'>
  <name>${escapeXml(o.name)}</name>
  <uuid>${o.uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><bios useserial='yes'${reboot}/></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>${QEMU_BINARY}</emulator>
    <interface type='user'><model type='e1000'/></interface>
    ${serial}
    <console type='pty'/>
    ${display}
    <memballoon model='none'/>
  </devices>
</domain>`;
}

/**
 * `npm start`'s QEMU demo guest for the control plane on `port`: a fixed name and UUID per port, so
 * a restart finds (and replaces) its own and a second copy on another port keeps its own.
 */
export function demoGuest(port: number): FirmwareGuestOptions {
  const suffix = port === 8787 ? "" : `-${port}`;
  return {
    name: `demo-qemu-ipxe${suffix}`,
    uuid: `6d1f0c3a-5e2b-4c7d-8a9e-0b1c2d3e${port.toString(16).padStart(4, "0")}`,
    vnc: true,
    // SeaBIOS starts over every 10 s when nothing boots, so its banner shows whenever a console opens.
    rebootAfterMs: 10_000,
  };
}

/** Whether this machine has QEMU (the binary the guest's XML names). */
export const hasQemu = () => existsSync(QEMU_BINARY);

/** Destroys and undefines a domain of this name if there is one (a demo left by a run that was killed). */
async function removeByName(client: LibvirtClient, name: string): Promise<void> {
  let dom: DomainRef;
  try {
    dom = await client.lookupByName(name);
  } catch {
    return; // none
  }
  await client.destroy(dom).catch(() => {}); // not running
  await client.undefine(dom).catch(() => {}); // transient: gone with destroy
}

/**
 * Defines and starts the demo guest on `uri`, replacing one left behind. Returns the function that
 * stops and undefines it.
 */
export async function startDemoGuest(uri: string, guest: FirmwareGuestOptions): Promise<{ stop: () => Promise<void> }> {
  const client = await LibvirtClient.connect(uri, { connectTimeoutMs: 10_000 });
  try {
    await removeByName(client, guest.name);
    const dom = await client.defineXml(firmwareGuestXml(guest));
    await client.start(dom);
  } finally {
    await client.close().catch(() => {});
  }
  return {
    stop: async () => {
      const c = await LibvirtClient.connect(uri, { connectTimeoutMs: 10_000 });
      try {
        await removeByName(c, guest.name);
      } finally {
        await c.close().catch(() => {});
      }
    },
  };
}

/** The domains on `uri` other than `name`: what a demo agent on that URI would also list and control. */
export async function otherDomains(uri: string, name: string): Promise<string[]> {
  const client = await LibvirtClient.connect(uri, { connectTimeoutMs: 5_000 });
  try {
    return (await client.listDomains()).map((d) => d.name).filter((n) => n !== name);
  } finally {
    await client.close().catch(() => {});
  }
}
