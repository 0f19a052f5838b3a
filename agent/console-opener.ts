// Where the agent's consoles come from: libvirt's own console stream for the configured URI, and a
// clear refusal where there is none (libvirt's test driver has no character devices).
import type { ConsoleOpener } from "./console.ts";
import type { Logger } from "./logger.ts";

export function consoleOpener(uri: string, _log: Logger): ConsoleOpener {
  return {
    async openConsole() {
      if (uri.startsWith("test:"))
        throw Object.assign(new Error("no console: libvirt's test driver has no serial consoles"), { code: 3 });
      throw Object.assign(new Error("no console: this agent has no libvirt console client yet"), { code: 3 });
    },
  };
}
