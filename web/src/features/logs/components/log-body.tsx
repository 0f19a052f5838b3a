// One log answer on screen: its facts (path, size, files read and rotated ones not read, capture
// time), the issues found in it (each once, with its explanation and a jump to its first line), a
// jump to the first error, and the virtualized text. Used for the live answer and the last-known one.
import { useMemo, useRef, useState, type ReactNode } from "react";
import type { LogsResponse } from "../../../../../protocol/rest.ts";
import { classifyLine, findIssues, firstErrorLine, splitLines } from "../../../../../protocol/log-classify.ts";
import { Button } from "../../../components/ui/button.tsx";
import { Facts } from "../../../components/ui/panel.tsx";
import { formatBytes, formatDateTime, formatRelativeTime } from "../../../lib/format.ts";
import { LogHelp } from "./log-help.tsx";
import { LogViewer, type LogViewerHandle } from "./log-viewer.tsx";

const skipReasons: Record<string, string> = {
  compressed: "compressed",
  outside_log_dir: "points outside the log directory",
  unreadable: "unreadable",
};

export function LogBody({
  data,
  text,
  extraFacts = [],
}: {
  data: LogsResponse;
  text: string;
  extraFacts?: Array<[string, ReactNode]>;
}) {
  const viewer = useRef<LogViewerHandle>(null);
  const [highlighted, setHighlighted] = useState<number | null>(null);
  const lines = useMemo(() => splitLines(text), [text]);
  const classes = useMemo(() => lines.map(classifyLine), [lines]);
  const issues = useMemo(() => findIssues(classes), [classes]);
  const firstError = useMemo(() => firstErrorLine(classes), [classes]);
  const jump = (index: number) => {
    setHighlighted(index);
    viewer.current?.scrollToLine(index);
  };
  const files = data.files ?? [];

  return (
    <>
      <Facts
        items={[
          [
            "Path",
            <span className="font-mono" data-testid="log-path">
              {data.logPath}
            </span>,
          ],
          ["Size", formatBytes(data.logSizeBytes)],
          [
            "Last modified",
            data.lastModified ? `${formatDateTime(data.lastModified)} (${formatRelativeTime(data.lastModified)})` : "—",
          ],
          [
            "Lines",
            <span data-testid="log-lines-returned">{`${data.linesReturned}${data.truncated ? " (truncated: the file holds more)" : " (whole file)"}`}</span>,
          ],
          ...(files.length > 0
            ? ([
                [
                  "Files read",
                  <span className="font-mono" data-testid="log-files" title={files.join("\n")}>
                    {files.map((f) => f.split("/").pop()).join(", ")}
                  </span>,
                ],
              ] as Array<[string, ReactNode]>)
            : []),
          ...(data.skipped?.length
            ? ([
                [
                  "Not read",
                  <span className="text-amber-700 dark:text-amber-400" data-testid="log-skipped">
                    {data.skipped
                      .map((f) => `${f.file.split("/").pop()} (${skipReasons[f.reason] ?? f.reason})`)
                      .join(", ")}
                  </span>,
                ],
              ] as Array<[string, ReactNode]>)
            : []),
          ...(data.capturedAt
            ? ([
                [
                  "Captured",
                  <span data-testid="log-captured-at">{`${formatDateTime(data.capturedAt)} (${formatRelativeTime(data.capturedAt)})`}</span>,
                ],
              ] as Array<[string, ReactNode]>)
            : []),
          ...extraFacts,
        ]}
      />
      <div className="flex flex-wrap items-start gap-2" data-testid="log-issues">
        <Button
          data-testid="log-jump-error"
          onClick={() => jump(firstError)}
          disabled={firstError < 0}
          title={firstError < 0 ? "No error line in this log" : `Line ${firstError + 1}`}
        >
          Jump to first error
        </Button>
        {issues.length === 0 ? (
          <span className="py-1 text-[13px] text-zinc-500 dark:text-zinc-400">
            {firstError < 0 ? "No errors in these lines." : "No known issue recognised; errors are marked red."}
          </span>
        ) : (
          <ul className="min-w-0 flex-1 space-y-1 text-[13px]">
            {issues.map((issue) => (
              <li key={issue.id} data-found-issue={issue.id} className="flex flex-wrap items-baseline gap-x-2">
                <span
                  className={
                    classes[issue.firstLine]?.level === "error"
                      ? "font-semibold text-red-700 dark:text-red-400"
                      : "font-semibold text-amber-700 dark:text-amber-400"
                  }
                >
                  {issue.label}
                </span>
                <button
                  type="button"
                  className="text-[12px] text-cyan-700 hover:underline dark:text-cyan-400"
                  onClick={() => jump(issue.firstLine)}
                >
                  line {issue.firstLine + 1}
                  {issue.count > 1 ? ` (+${issue.count - 1} more)` : ""}
                </button>
                <span className="text-zinc-600 dark:text-zinc-400">{issue.explanation}</span>
              </li>
            ))}
          </ul>
        )}
      </div>
      <LogViewer ref={viewer} lines={lines} classes={classes} highlightedLine={highlighted} />
      <LogHelp detected={issues.map((i) => i.id)} />
    </>
  );
}
