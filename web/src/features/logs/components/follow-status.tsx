// One line saying what the live follow is doing: following, reconnecting, node offline, ended, and
// what last happened to the file (rotated, truncated, appeared, missing). The phase and the events
// are live regions (read out as they change); the retry countdown is not, or it would speak every second.
import type { FollowStatus } from "../../../../../protocol/api.ts";
import { cn } from "../../../components/ui/cn.ts";
import { formatDateTime } from "../../../lib/format.ts";
import { useNow } from "../../../lib/use-now.ts";
import type { FollowPhase, FollowState } from "../api/follow.ts";

const phaseText: Record<FollowPhase, string> = {
  connecting: "Connecting…",
  following: "Following live",
  reconnecting: "Connection lost, reconnecting",
  offline: "Node offline, waiting for it",
  ended: "The server ended the follow; turn Follow live off and on to start again",
  unavailable: "Live follow is not available",
  failed: "Live follow refused",
};

const eventText: Record<FollowStatus, string> = {
  following: "following",
  rotated: "log rotated: now reading the new file from its start",
  truncated: "log truncated: reading again from its start",
  appeared: "log file appeared",
  missing: "log file is gone: waiting for it to appear",
  node_offline: "node offline",
  stopped: "follow stopped",
};

const dot: Record<FollowPhase, string> = {
  connecting: "bg-zinc-400",
  following: "bg-emerald-500 animate-pulse",
  reconnecting: "bg-amber-500",
  offline: "bg-red-500",
  ended: "bg-zinc-400",
  unavailable: "bg-zinc-400",
  failed: "bg-red-500",
};

export function FollowStatusBar({ state }: { state: FollowState }) {
  const now = useNow(1_000);
  const wait = state.retryAt ? Math.max(0, Math.ceil((state.retryAt - now) / 1000)) : null;
  return (
    <div
      className="flex flex-wrap items-center gap-x-3 gap-y-1 text-[13px]"
      data-testid="follow-status"
      data-phase={state.phase}
    >
      <span className="flex items-center gap-1.5 font-medium">
        <span aria-hidden="true" className={cn("inline-block size-2 rounded-full", dot[state.phase])} />
        <span role="status" aria-label="Live follow">
          {phaseText[state.phase]}
        </span>
        {wait !== null && (state.phase === "reconnecting" || state.phase === "offline") ? (
          <span data-testid="follow-retry">(next try in {wait} s)</span>
        ) : null}
      </span>
      <span role="status" aria-label="Log file" className="flex flex-wrap items-center gap-x-3">
        {state.lastEvent && (
          <span
            className="text-amber-700 dark:text-amber-400"
            data-testid="follow-event"
            data-event={state.lastEvent.status}
          >
            {eventText[state.lastEvent.status]} at {formatDateTime(new Date(state.lastEvent.at).toISOString())}
          </span>
        )}
        {state.error && (
          <span className="text-red-700 dark:text-red-400" data-testid="follow-error">
            {state.error.message}
          </span>
        )}
      </span>
    </div>
  );
}
