// A tab strip per the ARIA tabs pattern: only the selected tab sits in the Tab order; arrow keys,
// Home and End move to another tab and select it (its click: a link navigates, a button selects).
import type { KeyboardEvent, ReactNode } from "react";
import { cn } from "./cn.ts";

const moves: Record<string, (at: number, count: number) => number> = {
  ArrowRight: (at, n) => (at + 1) % n,
  ArrowLeft: (at, n) => (at - 1 + n) % n,
  Home: () => 0,
  End: (_, n) => n - 1,
};

export function TabList({ label, className, children }: { label: string; className?: string; children: ReactNode }) {
  const onKeyDown = (e: KeyboardEvent<HTMLDivElement>) => {
    const move = moves[e.key];
    if (!move) return;
    const tabs = [...e.currentTarget.querySelectorAll<HTMLElement>('[role="tab"]')];
    const at = tabs.indexOf(document.activeElement as HTMLElement);
    if (at < 0) return;
    e.preventDefault();
    const next = tabs[move(at, tabs.length)];
    next.click();
    next.focus();
  };
  return (
    <div role="tablist" aria-label={label} className={cn("flex", className)} onKeyDown={onKeyDown}>
      {children}
    </div>
  );
}
