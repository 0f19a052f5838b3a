// Where the agent's consoles come from: libvirt's own console stream (DOMAIN_OPEN_CONSOLE) through
// the agent's libvirt RPC client, one daemon connection per console, so that a paused console (its
// credit window full) holds back only its own socket, never the agent's other libvirt calls.
import { LibvirtClient, LibvirtError, UnsupportedUriError } from "../libvirt/index.ts";
import type { ConsoleOpener, ConsoleStream } from "./console.ts";
import type { Logger } from "../logger.ts";

/** VIR_ERR_NO_SUPPORT: what a console open fails with where there is none to open. */
const NO_SUPPORT = 3;

export function consoleOpener(uri: string, log: Logger): ConsoleOpener {
  return {
    async openConsole(uuid, opts): Promise<ConsoleStream> {
      if (uri.startsWith("test:"))
        throw new LibvirtError(
          NO_SUPPORT,
          0,
          "libvirt's test driver has no serial consoles (its domains are not real guests)",
        );
      let client: LibvirtClient;
      try {
        client = await LibvirtClient.connect(uri, { connectTimeoutMs: 10_000 });
      } catch (err) {
        if (err instanceof UnsupportedUriError) throw new LibvirtError(NO_SUPPORT, 0, err.message);
        throw err;
      }
      try {
        const stream = await client.openConsole(uuid, opts);
        const done = () =>
          void client.close().catch((err: Error) => log.debug({ err: err.message }, "console connection close"));
        stream.onEnd(done);
        return {
          write: (bytes) => stream.write(bytes),
          onData: (cb) => stream.onData(cb),
          onEnd: (cb) => stream.onEnd(cb),
          pause: () => stream.pause(),
          resume: () => stream.resume(),
          close: () => void stream.close().finally(done),
        };
      } catch (err) {
        await client.close().catch(() => {});
        throw err;
      }
    },
  };
}
