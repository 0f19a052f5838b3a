// Small status pills.
import type { ReactNode } from "react";
import { cn } from "./cn.ts";

export type BadgeTone = "green" | "red" | "amber" | "blue" | "zinc" | "violet";

const tones: Record<BadgeTone, string> = {
  green: "bg-emerald-100 text-emerald-800 ring-emerald-600/25 dark:bg-emerald-500/15 dark:text-emerald-300",
  red: "bg-red-100 text-red-800 ring-red-600/25 dark:bg-red-500/15 dark:text-red-300",
  amber: "bg-amber-100 text-amber-900 ring-amber-600/30 dark:bg-amber-500/15 dark:text-amber-300",
  blue: "bg-sky-100 text-sky-800 ring-sky-600/25 dark:bg-sky-500/15 dark:text-sky-300",
  zinc: "bg-zinc-100 text-zinc-700 ring-zinc-500/25 dark:bg-zinc-500/15 dark:text-zinc-300",
  violet: "bg-violet-100 text-violet-800 ring-violet-600/25 dark:bg-violet-500/15 dark:text-violet-300",
};

export function Badge({
  tone,
  children,
  title,
  testId,
}: {
  tone: BadgeTone;
  children: ReactNode;
  title?: string;
  testId?: string;
}) {
  return (
    <span
      title={title}
      data-testid={testId}
      className={cn(
        "inline-flex items-center rounded px-1.5 py-px text-[11px] font-semibold tracking-wide ring-1 ring-inset",
        tones[tone],
      )}
    >
      {children}
    </span>
  );
}
