// The Console tab's graphical view: the VM's VNC display in noVNC (unmodified; loaded with this
// module only, which is imported lazily), fed our socket as its channel. Ctrl-Alt-Del, "type this
// text" (paced keystrokes), fit to window or 1:1, full screen. noVNC uses QEMU's extended key events
// when the server offers them, so the guest's own keyboard layout applies.
import RFB from "@novnc/novnc";
import { useCallback, useEffect, useRef, useState } from "react";
import type { VncChannel } from "../../../../../protocol/vnc-channel.ts";
import { Button } from "../../../components/ui/button.tsx";
import { Notice, Panel } from "../../../components/ui/panel.tsx";
import { ApiError } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";
import { useCan } from "../../../lib/permissions.tsx";
import { ENDED_BECAUSE } from "../api/console.ts";
import { openGraphicalConsole, typeText, type VncState } from "../api/graphical.ts";

const GRAPHICAL_ENDED: Record<string, string> = {
  no_display: "This VM has no graphical display (no VNC display in its definition).",
  password_required:
    "This VM's VNC display asks for a password, which is never relayed: give it a display on the host's loopback without one.",
  vm_stopped: "The VM is not running (or stopped), so its display closed.",
};

export default function GraphicalPanel({ vmId }: { vmId: string }) {
  const api = useApiClient();
  const canOperate = useCan("operate");
  const frame = useRef<HTMLDivElement>(null);
  const screen = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const channel = useRef<VncChannel | null>(null);
  const typing = useRef(0);
  /** bumped by every disconnect: a ticket that arrives for an older connect is thrown away */
  const generation = useRef(0);
  const [state, setState] = useState<VncState>({ kind: "connecting" });
  const [refused, setRefused] = useState<string | null>(null);
  const [fit, setFit] = useState(true);
  const [text, setText] = useState("");
  const [busyTyping, setBusyTyping] = useState(false);

  const disconnect = () => {
    generation.current++;
    typing.current++;
    if (rfb.current) rfb.current.disconnect();
    else channel.current?.close(); // not handed to noVNC yet
    rfb.current = null;
    channel.current = null;
  };

  const connect = useCallback(async () => {
    disconnect();
    setRefused(null);
    setState({ kind: "connecting" });
    const mine = generation.current;
    if (!screen.current) return;
    let ch: VncChannel | null = null;
    // noVNC gets the channel once it is ready (synchronously, before the next frame): a console that
    // ends before that (no_display, password_required) is ours to show, not a noVNC failure.
    const onState = (s: VncState) => {
      if (generation.current !== mine) return;
      if (s.kind === "open" && ch && !rfb.current && screen.current) {
        const r = new RFB(screen.current, ch, { shared: true });
        r.scaleViewport = true;
        r.background = "#000";
        rfb.current = r;
      }
      setState(s);
    };
    try {
      ch = await openGraphicalConsole(api, vmId, "rw", onState);
      if (generation.current !== mine || !screen.current) return ch.close(); // left, or connected again meanwhile
      channel.current = ch;
    } catch (err) {
      if (generation.current === mine) setRefused(err instanceof ApiError ? err.message : String(err));
    }
  }, [api, vmId]);

  useEffect(() => {
    if (!canOperate) return;
    void connect();
    return disconnect;
  }, [canOperate, connect]);

  useEffect(() => {
    if (rfb.current) rfb.current.scaleViewport = fit;
  }, [fit, state]);

  const sendText = async () => {
    const r = rfb.current;
    if (!r || !text) return;
    const run = ++typing.current;
    setBusyTyping(true);
    try {
      await typeText(r, text, () => typing.current !== run);
    } finally {
      setBusyTyping(false);
    }
  };

  if (!canOperate)
    return <Notice tone="info">A console needs the operator role: what it shows can hold secrets.</Notice>;
  const open = state.kind === "open";
  return (
    <Panel className="p-2">
      <div className="mb-2 flex flex-wrap items-center gap-2 text-[13px]" data-testid="graphical-status">
        <GraphicalStatus state={state} refused={refused} />
        <Button disabled={!open} onClick={() => rfb.current?.sendCtrlAltDel()}>
          Ctrl-Alt-Del
        </Button>
        <Button disabled={!open} onClick={() => setFit((f) => !f)} aria-pressed={!fit}>
          {fit ? "1:1" : "Fit to window"}
        </Button>
        <Button disabled={!open} onClick={() => void frame.current?.requestFullscreen()}>
          Full screen
        </Button>
        {(state.kind === "ended" || refused) && <Button onClick={() => void connect()}>Open again</Button>}
      </div>
      <form
        className="mb-2 flex items-center gap-2 text-[13px]"
        onSubmit={(e) => {
          e.preventDefault();
          void sendText();
        }}
      >
        <label htmlFor="vnc-type-text">Type this text</label>
        <input
          id="vnc-type-text"
          className="h-7 min-w-0 flex-1 rounded border border-zinc-300 px-2 font-mono dark:border-zinc-700 dark:bg-zinc-900"
          value={text}
          onChange={(e) => setText(e.target.value)}
          placeholder="sent as keystrokes (a VNC display has no clipboard)"
          autoComplete="off"
        />
        <Button type="submit" disabled={!open || !text || busyTyping}>
          {busyTyping ? "Typing…" : "Type"}
        </Button>
        {busyTyping && <Button onClick={() => typing.current++}>Stop</Button>}
      </form>
      <div ref={frame} className="bg-black">
        <div
          ref={screen}
          className={fit ? "h-[32rem] w-full" : "h-[32rem] w-full overflow-auto"}
          data-testid="graphical-screen"
        />
      </div>
      <p className="mt-1 text-[11px] text-zinc-500">
        Display by{" "}
        <a className="underline" href="/licenses/noVNC-LICENSE.txt" target="_blank" rel="noreferrer">
          noVNC (MPL 2.0, license)
        </a>
      </p>
    </Panel>
  );
}

function GraphicalStatus({ state, refused }: { state: VncState; refused: string | null }) {
  if (refused) return <span className="text-red-700 dark:text-red-400">Console refused: {refused}</span>;
  switch (state.kind) {
    case "connecting":
      return <span>Connecting…</span>;
    case "open":
      return state.writer ? (
        <span className="text-emerald-700 dark:text-emerald-400">Connected: keyboard and mouse go to the VM</span>
      ) : (
        <span>Watching (read-only)</span>
      );
    case "ended":
      return (
        <span className="text-red-700 dark:text-red-400" data-testid="graphical-ended" data-reason={state.reason}>
          Display closed: {GRAPHICAL_ENDED[state.reason] ?? ENDED_BECAUSE[state.reason] ?? state.reason}
          {state.message ? ` (${state.message})` : ""}
        </span>
      );
  }
}
