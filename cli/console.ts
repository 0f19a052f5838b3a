// `qx vms console <vm-id> [--ro] [--force]`: a VM's serial console in this terminal. The terminal
// goes to raw mode (every key goes to the guest, Ctrl-C too), Ctrl-] leaves, and the terminal's mode
// is restored on every way out: leaving, the console ending, a signal, an error.
import WebSocket from "ws";
import { ConsoleClient, type ConsoleState } from "../protocol/console-client.ts";
import type { ConsoleMode, ConsoleTicketAnswer } from "../protocol/console.ts";

/** Ctrl-]: leaves the console (as `virsh console` and telnet do). */
const ESCAPE = 0x1d;

export type ConsoleIo = {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  /** status lines (server text in them: made safe by the caller), kept apart from the guest's output */
  status: (line: string) => void;
};

type Call = <T>(method: string, path: string, body?: unknown) => Promise<T>;

/** Runs the console until the user leaves (0) or it ends for another reason (1). */
export async function runConsole(
  call: Call,
  baseUrl: string,
  vmId: string,
  opts: { mode: ConsoleMode; force: boolean },
  io: ConsoleIo,
): Promise<number> {
  const answer = await call<ConsoleTicketAnswer>("POST", `/api/vms/${encodeURIComponent(vmId)}/console`, {
    mode: opts.mode,
    ...(opts.force ? { force: true } : {}),
  });
  const url = new URL(answer.url, baseUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const { stdin, stdout } = io;
  const raw = stdin.isTTY === true;
  const restore = () => {
    if (raw && stdin.isRaw) stdin.setRawMode(false);
  };

  return new Promise<number>((resolve) => {
    let done = false;
    const finish = (code: number, line?: string) => {
      if (done) return;
      done = true;
      client.close();
      stdin.off("data", onInput);
      stdin.pause();
      restore();
      process.off("exit", restore);
      for (const sig of SIGNALS) process.off(sig, onSignal);
      if (line) io.status(line);
      resolve(code);
    };
    const onSignal = (sig: NodeJS.Signals) =>
      finish(128 + (sig === "SIGHUP" ? 1 : 15), `qx: ${sig}, leaving the console`);
    const onInput = (chunk: Buffer) => {
      const at = chunk.indexOf(ESCAPE);
      if (at >= 0) {
        if (at > 0) client.send(chunk.subarray(0, at));
        return finish(0, "qx: left the console");
      }
      client.send(chunk);
    };
    const onState = (s: ConsoleState) => {
      if (s.kind === "open")
        io.status(
          `qx: console of ${vmId}: ${s.writer ? "you are typing" : s.mode === "ro" ? "read-only" : "watching (someone else types)"}; Ctrl-] leaves`,
        );
      else if (s.kind === "reconnecting") io.status("qx: connection lost, resuming…");
      else if (s.kind === "ended") finish(1, `qx: console closed: ${s.reason}${s.message ? ` (${s.message})` : ""}`);
    };
    const client = new ConsoleClient({
      ticket: answer.ticket,
      connect: () => new WebSocket(url),
      onOutput: (bytes) => stdout.write(bytes),
      onState,
      onNotice: (m) => io.status(`qx: ${m}`),
    });
    process.on("exit", restore); // even an uncaught error leaves the terminal as it was
    for (const sig of SIGNALS) process.on(sig, onSignal);
    if (raw) stdin.setRawMode(true);
    stdin.on("data", onInput);
    stdin.resume();
  });
}

const SIGNALS = ["SIGTERM", "SIGHUP"] as const;
