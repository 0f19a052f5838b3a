// The Logs tab (SPEC §5): line count, auto-refresh every 5 s, refresh, copy, download, highlighted
// lines, the file's facts and help on common issues. Runs against whichever API client it is given.
import { useMemo, useState } from "react";
import { Button } from "../../../components/ui/button.tsx";
import { CopyButton } from "../../../components/ui/copy-button.tsx";
import { Facts, inputClass, Notice } from "../../../components/ui/panel.tsx";
import { ApiError } from "../../../lib/api-client.ts";
import { formatBytes, formatDateTime, formatRelativeTime } from "../../../lib/format.ts";
import { LINE_CHOICES, useVMLogs } from "../api/logs.ts";
import { splitLines } from "../classify.ts";
import { detectIssues, LOG_ISSUES } from "../help.ts";
import { LogViewer } from "./log-viewer.tsx";
import { LOG_LINES_DEFAULT, LOG_LINES_MAX } from "../../../../../protocol/api.ts";

/** `?lines=` from the page URL when it is a valid count (deep links to e.g. 10,000 lines). */
export function initialLineCount(requested: string | null): number {
  const n = requested && /^\d{1,5}$/.test(requested) ? Number(requested) : NaN;
  return Number.isInteger(n) && n >= 1 && n <= LOG_LINES_MAX ? n : LOG_LINES_DEFAULT;
}

export function LogsPanel({ vm, initialLines = LOG_LINES_DEFAULT }: { vm: { id: string; name: string }; initialLines?: number }) {
  const [lines, setLines] = useState(initialLines);
  const [autoRefresh, setAutoRefresh] = useState(false);
  const logs = useVMLogs(vm.id, lines, autoRefresh);
  const text = logs.data?.qemuLog ?? "";
  const logLines = useMemo(() => splitLines(text), [text]);
  const issues = useMemo(() => detectIssues(text), [text]);
  const choices = (LINE_CHOICES as readonly number[]).includes(lines) ? LINE_CHOICES : [...LINE_CHOICES, lines].sort((a, b) => a - b);

  const download = () => {
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
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
          <select data-testid="log-lines" className={inputClass} value={lines} onChange={(e) => setLines(Number(e.target.value))}>
            {choices.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <label className="flex items-center gap-1.5 text-[13px]">
          <input data-testid="log-autorefresh" type="checkbox" checked={autoRefresh} onChange={(e) => setAutoRefresh(e.target.checked)} className="accent-cyan-700" />
          Auto-refresh (5 s)
        </label>
        <Button data-testid="log-refresh" onClick={() => logs.refetch()} disabled={logs.isFetching}>
          {logs.isFetching ? "Refreshing…" : "Refresh"}
        </Button>
        <CopyButton text={text} label="Copy" testId="log-copy" />
        <Button data-testid="log-download" onClick={download} disabled={!logs.data}>
          Download
        </Button>
        <span className="ml-auto text-[12px] text-zinc-500" data-testid="log-fetched-at">
          {logs.dataUpdatedAt ? `fetched ${formatDateTime(new Date(logs.dataUpdatedAt).toISOString())}` : ""}
        </span>
      </div>

      {logs.error && <LogsError error={logs.error} />}

      {logs.data && (
        <>
          <Facts
            items={[
              ["Path", <span className="font-mono" data-testid="log-path">{logs.data.logPath}</span>],
              ["Size", formatBytes(logs.data.logSizeBytes)],
              ["Last modified", logs.data.lastModified ? `${formatDateTime(logs.data.lastModified)} (${formatRelativeTime(logs.data.lastModified)})` : "—"],
              ["Lines", <span data-testid="log-lines-returned">{`${logs.data.linesReturned}${logs.data.truncated ? " (truncated: the file holds more)" : " (whole file)"}`}</span>],
            ]}
          />
          <LogHelp detected={issues.map((i) => i.id)} />
          <LogViewer lines={logLines} />
        </>
      )}
      {!logs.data && !logs.error && <div className="text-[13px] text-zinc-500">Reading the log from the host…</div>}
      {!logs.data && <LogHelp detected={[]} />}
    </div>
  );
}

function LogsError({ error }: { error: Error }) {
  if (error instanceof ApiError) {
    if (error.code === "node_offline")
      return (
        <Notice tone="warning" testId="logs-error">
          The node is offline, so its log cannot be read right now ({error.message}). The agent reconnects on its own; on the host itself the
          agent's local view (--listen) still reads logs.
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

function LogHelp({ detected }: { detected: string[] }) {
  return (
    <details className="rounded border border-zinc-200 px-3 py-1.5 text-[13px] dark:border-zinc-800" data-testid="log-help">
      <summary className="cursor-pointer">
        <span className="font-medium">Help on common issues</span>
        {detected.length > 0 && (
          <span className="ml-2 text-amber-700 dark:text-amber-400">
            seen in this log: {LOG_ISSUES.filter((i) => detected.includes(i.id)).map((i) => i.title).join(" · ")}
          </span>
        )}
      </summary>
      <ul className="mt-2 space-y-2">
        {LOG_ISSUES.map((issue) => (
          <li key={issue.id} data-issue={issue.id} data-detected={detected.includes(issue.id)}>
            <div className="font-medium">
              {issue.title}
              {detected.includes(issue.id) && <span className="ml-2 text-[12px] text-amber-700 dark:text-amber-400">seen in this log</span>}
            </div>
            <div className="text-zinc-600 dark:text-zinc-400">{issue.advice}</div>
          </li>
        ))}
      </ul>
    </details>
  );
}
