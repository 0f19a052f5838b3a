// The log text, virtualized (10,000 lines scroll smoothly), each line a React text node coloured by
// its level. Stays pinned to the bottom on new text only while the reader is at the bottom.
import { useEffect, useLayoutEffect, useMemo, useRef } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import { cn } from "../../../components/ui/cn.ts";
import { classifyLine, type LineLevel } from "../classify.ts";

const LINE_HEIGHT = 18;
const AT_BOTTOM_SLACK = 24;

const levelClass: Record<LineLevel, string> = {
  error: "bg-red-500/10 text-red-700 dark:text-red-400",
  warning: "bg-amber-400/10 text-amber-700 dark:text-yellow-300",
  normal: "",
};

export function LogViewer({ lines }: { lines: string[] }) {
  const scroller = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const levels = useMemo(() => lines.map(classifyLine), [lines]);
  const virtualizer = useVirtualizer({
    count: lines.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => LINE_HEIGHT,
    overscan: 30,
  });

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
        <div className="p-3 text-zinc-500">The log is empty.</div>
      ) : (
        <div className="relative w-max min-w-full" style={{ height: virtualizer.getTotalSize() }}>
          {virtualizer.getVirtualItems().map((row) => (
            <div
              key={row.index}
              data-line={row.index + 1}
              data-level={levels[row.index]}
              className={cn("absolute left-0 flex w-max min-w-full whitespace-pre", levelClass[levels[row.index]])}
              style={{ top: row.start, height: LINE_HEIGHT, lineHeight: `${LINE_HEIGHT}px` }}
            >
              <span className="sticky left-0 shrink-0 bg-inherit pr-3 pl-2 text-right text-zinc-400 select-none dark:text-zinc-600" style={{ width: `${gutter + 2}ch` }}>
                {row.index + 1}
              </span>
              <span className="pr-4">{lines[row.index]}</span>
            </div>
          ))}
        </div>
      )}
    </div>
  );
}
