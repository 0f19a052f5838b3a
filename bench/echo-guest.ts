// A zero-delay echo console for the benches: a real QEMU guest (on the real libvirtd) whose whole
// software is one 512-byte boot sector. It prints a banner on COM1, then sleeps (hlt) and, on the
// UART's receive interrupt, writes every byte it reads straight back; Ctrl-F (0x06) makes it print
// FLOOD_BYTES of known text instead. The serial port is a `<serial type='pty'>`, so the agent opens
// it as it opens any guest's console (libvirt's DOMAIN_OPEN_CONSOLE). The echo takes about 0.1 ms
// here (measured on a QEMU serial socket), where the iPXE shell takes about 90 ms.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LibvirtAdmin } from "../test/support/libvirt-admin.ts";

/* The boot sector's code (GNU as, .code16, intel syntax; loaded at 0x7c00), assembled below:
 *   cli; xor ax,ax; mov ds/es/ss,ax; mov sp,0x7c00
 *   mov word [0x30], handler; mov word [0x32], 0      ; IRQ4 (INT 0Ch) -> handler
 *   out 0x3fb,3 (8N1); out 0x3fa,0 (no FIFO); out 0x3f9,1 (rx interrupt); out 0x3fc,0x0b (OUT2)
 *   in al,0x21; and al,0xef; out 0x21,al                ; unmask IRQ4
 *   print banner with putc; idle: sti; hlt; jmp idle
 *   putc: wait for LSR.THRE (0x3fd bit 5), out 0x3f8,al
 *   handler: while LSR.DR: in al,0x3f8; if al == 6 -> flood else putc
 *            flood: 160 x 1024 lines, line k = 62 bytes of ALPHABET from k mod 63, then "\r\n"
 *            in 0x3fa (IIR); out 0x20,0x20 (EOI); iret
 */
const CODE =
  "fa31c08ed88ec08ed0bc007cc7063000587cc70632000000bafb03b003eebafa0330c0eebaf903b001eebafc03b00beee42124ef" +
  "e621beb37cac84c07405e80600ebf6fbf4ebfc5250bafd03eca82074fb58baf803ee5ac3505251535655bafd03eca801743ebaf8" +
  "03ec3c067405e8d6ffebeb31dbbda000b90004bec67c01de51b93e00ace8bfffe2fa59b00de8b7ffb00ae8b2ff4383fb3f720231" +
  "dbe2dc4d75d6ebbabafa03ecb020e6205d5e5b595a58cf";
/** Printed once the guest listens (the code reads it at 0x7cb3). */
export const ECHO_BANNER = "echo guest ready\r\n";
/** The byte that starts a flood. */
export const FLOOD_KEY = "\x06";
const ALPHABET_CYCLE = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-";
const FLOOD_LINES = 160 * 1024;
const LINE_TEXT = 62;
export const FLOOD_BYTES = FLOOD_LINES * (LINE_TEXT + 2);

function bootSector(): Buffer {
  const sector = Buffer.alloc(512);
  let at = sector.write(CODE, "hex");
  at += sector.write(`${ECHO_BANNER}\0`, at, "latin1");
  if (at !== 0xc6) throw new Error("echo guest: the banner moved; the code's addresses are wrong");
  sector.write(ALPHABET_CYCLE.repeat(2), at, "latin1");
  sector.writeUInt16LE(0xaa55, 510);
  return sector;
}

/** The whole flood, as the guest prints it (known, so a reader can check every byte it got). */
export function floodBytes(): Buffer {
  const cycle = Buffer.from(ALPHABET_CYCLE.repeat(2), "latin1");
  const out = Buffer.alloc(FLOOD_BYTES);
  for (let line = 0; line < FLOOD_LINES; line++) {
    const at = line * (LINE_TEXT + 2);
    const from = line % ALPHABET_CYCLE.length;
    cycle.copy(out, at, from, from + LINE_TEXT);
    out[at + LINE_TEXT] = 13;
    out[at + LINE_TEXT + 1] = 10;
  }
  return out;
}

export class EchoGuest {
  readonly name: string;
  readonly uuid = crypto.randomUUID();
  private readonly dir: string;
  private readonly admin: LibvirtAdmin;

  private constructor(name: string, dir: string, admin: LibvirtAdmin) {
    this.name = name;
    this.dir = dir;
    this.admin = admin;
  }

  /** Starts the guest (transient: it is gone once destroyed). */
  static async start(uri: string, name: string): Promise<EchoGuest> {
    const dir = mkdtempSync(join(tmpdir(), "qx-echo-guest-"));
    chmodSync(dir, 0o755); // QEMU runs as its own user
    const image = join(dir, "boot.img");
    writeFileSync(image, bootSector(), { mode: 0o644 });
    const admin = new LibvirtAdmin({ uri });
    await admin.connectOpen();
    const guest = new EchoGuest(name, dir, admin);
    try {
      await admin.domainCreateXML(`<domain type='qemu'><name>${name}</name><uuid>${guest.uuid}</uuid>
        <memory unit='MiB'>16</memory><vcpu>1</vcpu>
        <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
        <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
        <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${image}'/><target dev='hda' bus='ide'/></disk>
        <serial type='pty'/><console type='pty'/><video><model type='none'/></video>
        <memballoon model='none'/></devices></domain>`);
    } catch (err) {
      await guest.dispose();
      throw err;
    }
    return guest;
  }

  async dispose(): Promise<void> {
    const dom = await this.admin.domainLookupByUUIDString(this.uuid).catch(() => null);
    if (dom) await this.admin.domainDestroy(dom).catch(() => {});
    await this.admin.connectClose();
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(`/var/log/libvirt/qemu/${this.name}.log`, { force: true });
  }
}
