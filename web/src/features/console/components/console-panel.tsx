// The Console tab: the VM's serial console in xterm.js (loaded with this module only, which the VM
// page imports lazily), with who writes, "Take control", why it ended, and reconnecting shown.
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { useCallback, useEffect, useRef, useState } from "react";
import type { ConsoleClient } from "../../../../../protocol/console-client.ts";
import { Button } from "../../../components/ui/button.tsx";
import { Notice, Panel } from "../../../components/ui/panel.tsx";
import { ApiError } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";
import { useCan } from "../../../lib/permissions.tsx";
import { ENDED_BECAUSE, openConsole, type ConsoleState } from "../api/console.ts";

export default function ConsolePanel({ vmId }: { vmId: string }) {
  const api = useApiClient();
  const canOperate = useCan("operate");
  const box = useRef<HTMLDivElement>(null);
  const term = useRef<Terminal | null>(null);
  const client = useRef<ConsoleClient | null>(null);
  /** bumped by every (re)connect and by leaving: a console that opens for an older one is closed */
  const generation = useRef(0);
  const [state, setState] = useState<ConsoleState>({ kind: "connecting" });
  const [refused, setRefused] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const connect = useCallback(
    async (force: boolean) => {
      client.current?.close();
      client.current = null;
      const mine = ++generation.current;
      setRefused(null);
      setNotice(null);
      setState({ kind: "connecting" });
      term.current?.reset(); // the replay starts over: never shown twice
      try {
        const opened = await openConsole(api, vmId, "rw", force, {
          onOutput: (bytes) => generation.current === mine && term.current?.write(bytes),
          onState: (s) => generation.current === mine && setState(s),
          onNotice: (n) => generation.current === mine && setNotice(n),
        });
        // Left, or connected again while the ticket came: this one must not hold the console.
        if (generation.current !== mine) return opened.close();
        client.current = opened;
      } catch (err) {
        if (generation.current === mine) setRefused(err instanceof ApiError ? err.message : String(err));
      }
    },
    [api, vmId],
  );

  useEffect(() => {
    if (!canOperate || !box.current) return;
    const t = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 13, scrollback: 5000 });
    const fit = new FitAddon();
    t.loadAddon(fit);
    t.open(box.current);
    fit.fit();
    const encoder = new TextEncoder();
    // Typing and pasting go to the client, which sends a paste in paced frames.
    const typed = t.onData((data) => client.current?.send(encoder.encode(data)));
    const binary = t.onBinary((data) => client.current?.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    const resize = new ResizeObserver(() => fit.fit());
    resize.observe(box.current);
    term.current = t;
    void connect(false);
    return () => {
      resize.disconnect();
      typed.dispose();
      binary.dispose();
      generation.current++;
      client.current?.close();
      client.current = null;
      term.current = null;
      t.dispose();
    };
  }, [canOperate, connect]);

  if (!canOperate)
    return <Notice tone="info">A console needs the operator role: what it shows can hold secrets.</Notice>;
  return (
    <Panel className="p-2">
      <div className="mb-2 flex flex-wrap items-center gap-2 text-[13px]" data-testid="console-status">
        <ConsoleStatus state={state} refused={refused} />
        {state.kind === "open" && !state.writer && (
          <Button tone="primary" onClick={() => client.current?.take()}>
            Take control
          </Button>
        )}
        {(state.kind === "ended" || refused) && (
          <>
            <Button onClick={() => void connect(false)}>Open again</Button>
            {state.kind === "ended" && state.reason === "console_busy" && (
              <Button tone="danger" onClick={() => void connect(true)}>
                Open with force
              </Button>
            )}
          </>
        )}
        {notice && <span className="text-amber-700 dark:text-amber-400">{notice}</span>}
      </div>
      <div ref={box} className="h-[28rem] w-full bg-black" data-testid="console-terminal" />
    </Panel>
  );
}

function ConsoleStatus({ state, refused }: { state: ConsoleState; refused: string | null }) {
  if (refused) return <span className="text-red-700 dark:text-red-400">Console refused: {refused}</span>;
  switch (state.kind) {
    case "connecting":
      return <span>Connecting…</span>;
    case "reconnecting":
      return <span>Reconnecting (resuming where it left off)…</span>;
    case "open":
      return state.writer ? (
        <span className="text-emerald-700 dark:text-emerald-400">Connected: you are typing into this console</span>
      ) : (
        <span>Watching: {state.mode === "ro" ? "read-only" : "someone else holds the keyboard"}</span>
      );
    case "ended":
      return (
        <span className="text-red-700 dark:text-red-400" data-testid="console-ended" data-reason={state.reason}>
          Console closed: {ENDED_BECAUSE[state.reason] ?? state.reason}
          {state.message ? ` (${state.message})` : ""}
        </span>
      );
  }
}
