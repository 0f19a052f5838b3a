// The log text, virtualized (10,000 lines scroll smoothly), each line a React text node coloured by
// its level and marked E / W in the gutter (and "error:" / "warning:" for screen readers), so the
// level does not rest on colour alone. Stays pinned to the bottom on new text only while the reader is at the bottom, and
// scrolls to a given line on request (jump to first error) with that line highlighted.
import { useEffect, useImperativeHandle, useLayoutEffect, useRef, type Ref } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import type { LineClass, LineLevel } from "../../../../../protocol/log-classify.ts";
import { cn } from "../../../components/ui/cn.ts";

const LINE_HEIGHT = 18;
const AT_BOTTOM_SLACK = 24;

const levelClass: Record<LineLevel, string> = {
  error: "bg-red-500/10 text-red-700 dark:text-red-400",
  warning: "bg-amber-400/10 text-amber-700 dark:text-yellow-300",
  normal: "",
};

const levelMark: Record<LineLevel, string> = { error: "E", warning: "W", normal: "" };

export type LogViewerHandle = { scrollToLine: (index: number) => void };

export function LogViewer({
  lines,
  classes,
  highlightedLine,
  ref,
}: {
  lines: string[];
  classes: LineClass[];
  /** 0-based line to mark (the one jumped to) */
  highlightedLine?: number | null;
  ref?: Ref<LogViewerHandle>;
}) {
  const scroller = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const virtualizer = useVirtualizer({
    count: lines.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => LINE_HEIGHT,
    overscan: 30,
  });

  useImperativeHandle(
    ref,
    () => ({
      scrollToLine: (index) => {
        atBottom.current = false; // a jump is a reader's choice: new text must not pull them away
        virtualizer.scrollToIndex(index, { align: "center" });
        scroller.current?.focus({ preventScroll: true });
      },
    }),
    [virtualizer],
  );

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const onScroll = () => {
      atBottom.current = el.scrollTop + el.clientHeight >= el.scrollHeight - AT_BOTTOM_SLACK;
    };
    el.addEventListener("scroll", onScroll, { passive: true });
    return () => el.removeEventListener("scroll", onScroll);
  }, []);

  // New text: follow it only if the reader was at the bottom (a reader scrolled up keeps their place).
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el || lines.length === 0 || !atBottom.current) return;
    el.scrollTop = el.scrollHeight;
    virtualizer.scrollToIndex(lines.length - 1, { align: "end" });
  }, [lines, virtualizer]);

  const gutter = String(lines.length).length;
  return (
    <div
      ref={scroller}
      data-testid="log-view"
      tabIndex={0}
      aria-label="QEMU log"
      className="h-[60vh] min-h-64 overflow-auto rounded border border-zinc-200 bg-zinc-50 font-mono text-[12px] dark:border-zinc-800 dark:bg-zinc-950"
    >
      {lines.length === 0 ? (
        <div className="p-3 text-zinc-500 dark:text-zinc-400">The log is empty.</div>
      ) : (
        <div className="relative w-max min-w-full" style={{ height: virtualizer.getTotalSize() }}>
          {virtualizer.getVirtualItems().map((row) => {
            const level = classes[row.index]?.level ?? "normal";
            const highlighted = row.index === highlightedLine;
            return (
              <div
                key={row.index}
                data-line={row.index + 1}
                data-level={level}
                data-line-issue={classes[row.index]?.issue ?? undefined}
                data-highlighted={highlighted || undefined}
                className={cn(
                  "absolute left-0 flex w-max min-w-full whitespace-pre",
                  levelClass[level],
                  highlighted && "bg-red-500/15 outline-2 -outline-offset-2 outline-red-500 dark:bg-red-500/30",
                )}
                style={{ top: row.start, height: LINE_HEIGHT, lineHeight: `${LINE_HEIGHT}px` }}
              >
                <span
                  className="sticky left-0 shrink-0 bg-zinc-50 pr-2 pl-2 text-right text-zinc-600 select-none dark:bg-zinc-950 dark:text-zinc-400"
                  style={{ width: `${gutter + 5}ch` }}
                >
                  {row.index + 1}
                  <span aria-hidden="true" className="inline-block w-[2ch] text-center font-bold">
                    {levelMark[level]}
                  </span>
                </span>
                {level !== "normal" && <span className="sr-only select-none">{level}: </span>}
                <span className="pr-4">{lines[row.index]}</span>
              </div>
            );
          })}
        </div>
      )}
    </div>
  );
}
