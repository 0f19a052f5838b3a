// The Logs tab: line count, auto-refresh every 5 s, live follow, refresh, copy,
// download, highlighted lines with the issues found and a jump to the first error, the file's
// facts, and the last-known log while the node is offline. Runs against whichever API client it
// is given; `live` (the control plane) adds follow and last-known, which an agent's local API lacks.
import { useEffect, useMemo, useState } from "react";
import { LOG_LINES_DEFAULT, LOG_LINES_MAX } from "../../../../../protocol/api.ts";
import { Button } from "../../../components/ui/button.tsx";
import { CopyButton } from "../../../components/ui/copy-button.tsx";
import { inputClass, Notice } from "../../../components/ui/panel.tsx";
import { ApiError } from "../../../lib/api-client.ts";
import { formatDateTime, formatRelativeTime } from "../../../lib/format.ts";
import { joinFollowed, useLogFollow } from "../api/follow.ts";
import { LINE_CHOICES, useLastKnownLog, useVMLogs } from "../api/logs.ts";
import { FollowStatusBar } from "./follow-status.tsx";
import { LogBody } from "./log-body.tsx";
import { LogHelp } from "./log-help.tsx";

/** `?lines=` from the page URL when it is a valid count (deep links to e.g. 10,000 lines). */
export function initialLineCount(requested: string | null): number {
  const n = requested && /^\d{1,5}$/.test(requested) ? Number(requested) : NaN;
  return Number.isInteger(n) && n >= 1 && n <= LOG_LINES_MAX ? n : LOG_LINES_DEFAULT;
}

export function LogsPanel({
  vm,
  initialLines = LOG_LINES_DEFAULT,
  live = false,
}: {
  vm: { id: string; name: string };
  initialLines?: number;
  live?: boolean;
}) {
  const [lines, setLines] = useState(initialLines);
  const [autoRefresh, setAutoRefresh] = useState(false);
  const [follow, setFollow] = useState(false);
  const [followUnavailable, setFollowUnavailable] = useState<string | null>(null);
  const logs = useVMLogs(vm.id, lines, autoRefresh && !follow);
  const followed = useLogFollow(vm.id, live && follow);
  const nodeOffline = logs.error instanceof ApiError && logs.error.code === "node_offline";
  const lastKnown = useLastKnownLog(vm.id, live && nodeOffline);

  // Each (re)connect of the follow re-reads the snapshot, so nothing written meanwhile is missed.
  const { refetch } = logs;
  useEffect(() => {
    if (followed.followingSince) void refetch();
  }, [followed.followingSince, refetch]);

  // The server cannot follow: say so and poll every 5 s instead.
  useEffect(() => {
    if (followed.phase !== "unavailable" || !follow) return;
    setFollowUnavailable(followed.error?.message ?? "live follow is not available");
    setFollow(false);
    setAutoRefresh(true);
  }, [followed.phase, followed.error, follow]);

  const base = logs.data?.qemuLog ?? "";
  // The snapshot, then the live text past what the snapshot already holds (only a snapshot read
  // after the watch began can hold any of it).
  const text = useMemo(() => {
    if (!follow) return base;
    const liveText = followed.chunks.map((c) => c.text).join("");
    const readAfterWatch = followed.followingSince !== null && logs.dataUpdatedAt >= followed.followingSince;
    return readAfterWatch ? joinFollowed(base, liveText) : base + liveText;
  }, [base, follow, followed.chunks, followed.followingSince, logs.dataUpdatedAt]);
  // Copy and download take what is on screen: the live text, or the last-known copy while offline.
  const shown = live && nodeOffline ? lastKnown.data : logs.data;
  const shownText = shown === logs.data ? text : (shown?.qemuLog ?? "");
  const choices = (LINE_CHOICES as readonly number[]).includes(lines)
    ? LINE_CHOICES
    : [...LINE_CHOICES, lines].sort((a, b) => a - b);

  const download = () => {
    const url = URL.createObjectURL(new Blob([shownText], { type: "text/plain;charset=utf-8" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `${vm.name}-qemu.log`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };

  return (
    <div className="space-y-3" data-testid="logs-panel">
      <div className="flex flex-wrap items-center gap-2">
        <label className="flex items-center gap-1.5 text-[13px]">
          Lines
          <select
            data-testid="log-lines"
            className={inputClass}
            value={lines}
            onChange={(e) => setLines(Number(e.target.value))}
          >
            {choices.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <label className="flex items-center gap-1.5 text-[13px]" title={follow ? "Live follow is on" : undefined}>
          <input
            data-testid="log-autorefresh"
            type="checkbox"
            checked={autoRefresh && !follow}
            disabled={follow}
            onChange={(e) => setAutoRefresh(e.target.checked)}
            className="accent-cyan-700"
          />
          Auto-refresh (5 s)
        </label>
        {live && (
          <label className="flex items-center gap-1.5 text-[13px]">
            <input
              data-testid="log-follow"
              type="checkbox"
              checked={follow}
              onChange={(e) => {
                setFollow(e.target.checked);
                if (e.target.checked) setFollowUnavailable(null);
              }}
              className="accent-cyan-700"
            />
            Follow live
          </label>
        )}
        <Button data-testid="log-refresh" onClick={() => void logs.refetch()} disabled={logs.isFetching}>
          {logs.isFetching ? "Refreshing…" : "Refresh"}
        </Button>
        <CopyButton text={shownText} label="Copy" testId="log-copy" />
        <Button data-testid="log-download" onClick={download} disabled={!shown}>
          Download
        </Button>
        <span className="ml-auto text-[12px] text-zinc-500 dark:text-zinc-400" data-testid="log-fetched-at">
          {logs.dataUpdatedAt ? `fetched ${formatDateTime(new Date(logs.dataUpdatedAt).toISOString())}` : ""}
        </span>
      </div>

      {follow && <FollowStatusBar state={followed} />}
      {followUnavailable && (
        <Notice tone="info" testId="follow-unavailable">
          Live follow is not available from this server ({followUnavailable}). Auto-refreshing every 5 s instead.
        </Notice>
      )}

      {logs.error && <LogsError error={logs.error} />}

      {logs.data && !(live && nodeOffline) && <LogBody data={logs.data} text={text} />}
      {live && nodeOffline && <LastKnown query={lastKnown} />}
      {!logs.data && !logs.error && (
        <div className="text-[13px] text-zinc-500 dark:text-zinc-400">Reading the log from the host…</div>
      )}
      {!logs.data && !(live && nodeOffline && lastKnown.data) && <LogHelp detected={[]} />}
    </div>
  );
}

function LastKnown({ query }: { query: ReturnType<typeof useLastKnownLog> }) {
  if (query.isPending)
    return <div className="text-[13px] text-zinc-500 dark:text-zinc-400">Looking for the last known log…</div>;
  if (query.error) {
    if (query.error instanceof ApiError && query.error.code === "no_snapshot")
      return (
        <Notice tone="info" testId="last-known-none">
          No last known log is kept for this VM: the control plane keeps one from each log read, and none was read
          before the node went offline.
        </Notice>
      );
    return (
      <Notice tone="error" testId="last-known-none">
        Could not read the last known log: {query.error.message}
      </Notice>
    );
  }
  const snapshot = query.data;
  return (
    <div className="space-y-3" data-testid="last-known">
      <Notice tone="warning" testId="last-known-label">
        <b>Last known log, captured at {formatDateTime(snapshot.capturedAt)}</b> (
        {formatRelativeTime(snapshot.capturedAt)}): what the control plane read before the node went offline. The file
        on the host may have changed since.
      </Notice>
      <LogBody data={snapshot} text={snapshot.qemuLog} />
    </div>
  );
}

function LogsError({ error }: { error: Error }) {
  if (error instanceof ApiError) {
    if (error.code === "node_offline")
      return (
        <Notice tone="warning" testId="logs-error">
          The node is offline, so its log cannot be read right now ({error.message}). The agent reconnects on its own;
          on the host itself the agent's local view (--listen) still reads logs.
        </Notice>
      );
    if (error.code === "log_not_found")
      return (
        <Notice tone="info" testId="logs-error">
          No QEMU log for this VM on its host yet ({error.message}). libvirt writes it when the VM first starts.
        </Notice>
      );
    if (error.status === 403)
      return (
        <Notice tone="info" testId="logs-error">
          Reading logs needs the operator role ({error.message}).
        </Notice>
      );
  }
  return (
    <Notice tone="error" testId="logs-error">
      Could not read the log: {error.message}
    </Notice>
  );
}
