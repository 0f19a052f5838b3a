// A tab strip per the ARIA tabs pattern: only the selected tab sits in the Tab order; arrow keys,
// Home and End move to another tab and select it (its click: a link navigates, a button selects).
import { useEffect, type KeyboardEvent, type ReactNode } from "react";
import { cn } from "./cn.ts";

// A tab that is a full page load (marked data-full-load: the console's, whose page has a CSP of its
// own) would drop the keyboard focus with the old page: the tab to focus is kept for the new page.
const FOCUS_AFTER_LOAD = "qx.focusTab";

const moves: Record<string, (at: number, count: number) => number> = {
  ArrowRight: (at, n) => (at + 1) % n,
  ArrowLeft: (at, n) => (at - 1 + n) % n,
  Home: () => 0,
  End: (_, n) => n - 1,
};

export function TabList({ label, className, children }: { label: string; className?: string; children: ReactNode }) {
  useEffect(() => {
    const id = sessionStorage.getItem(FOCUS_AFTER_LOAD);
    if (!id) return;
    sessionStorage.removeItem(FOCUS_AFTER_LOAD);
    document.getElementById(id)?.focus();
  }, []);
  const onKeyDown = (e: KeyboardEvent<HTMLDivElement>) => {
    const move = moves[e.key];
    if (!move) return;
    const tabs = [...e.currentTarget.querySelectorAll<HTMLElement>('[role="tab"]')];
    const at = tabs.indexOf(document.activeElement as HTMLElement);
    if (at < 0) return;
    e.preventDefault();
    const next = tabs[move(at, tabs.length)];
    if (next.dataset.fullLoad !== undefined && next.id) sessionStorage.setItem(FOCUS_AFTER_LOAD, next.id);
    next.click();
    next.focus();
  };
  return (
    <div role="tablist" aria-label={label} className={cn("flex", className)} onKeyDown={onKeyDown}>
      {children}
    </div>
  );
}
