// Layout pieces: a bordered panel, a page header, a definition list of facts, notices.
import type { ReactNode } from "react";
import { cn } from "./cn.ts";

export function Panel({ children, className }: { children: ReactNode; className?: string }) {
  return (
    <section
      className={cn("rounded-md border border-zinc-200 bg-white dark:border-zinc-800 dark:bg-zinc-900", className)}
    >
      {children}
    </section>
  );
}

export function PageHeader({
  title,
  actions,
  subtitle,
}: {
  title: ReactNode;
  actions?: ReactNode;
  subtitle?: ReactNode;
}) {
  return (
    <div className="mb-3 flex flex-wrap items-end justify-between gap-2">
      <div className="min-w-0">
        <h1 className="truncate text-lg font-semibold">{title}</h1>
        {subtitle && <div className="text-[13px] text-zinc-500 dark:text-zinc-400">{subtitle}</div>}
      </div>
      {actions && <div className="flex flex-wrap items-center gap-2">{actions}</div>}
    </div>
  );
}

export function Facts({ items }: { items: Array<[string, ReactNode]> }) {
  return (
    <dl className="grid grid-cols-[max-content_1fr] gap-x-4 gap-y-1 text-[13px] sm:grid-cols-[max-content_1fr_max-content_1fr]">
      {items.map(([label, value]) => (
        <div key={label} className="contents">
          <dt className="text-zinc-500 dark:text-zinc-400">{label}</dt>
          <dd className="min-w-0 truncate font-medium" data-fact={label}>
            {value}
          </dd>
        </div>
      ))}
    </dl>
  );
}

export function Notice({
  tone = "info",
  children,
  testId,
}: {
  tone?: "info" | "error" | "warning";
  children: ReactNode;
  testId?: string;
}) {
  const tones = {
    info: "border-sky-300 bg-sky-50 text-sky-900 dark:border-sky-800 dark:bg-sky-950/40 dark:text-sky-200",
    error: "border-red-300 bg-red-50 text-red-900 dark:border-red-800 dark:bg-red-950/40 dark:text-red-200",
    warning:
      "border-amber-300 bg-amber-50 text-amber-900 dark:border-amber-800 dark:bg-amber-950/40 dark:text-amber-200",
  };
  return (
    <div
      role={tone === "error" ? "alert" : "status"}
      data-testid={testId}
      className={cn("rounded border px-3 py-2 text-[13px]", tones[tone])}
    >
      {children}
    </div>
  );
}

export function Spinner({ label = "Loading…" }: { label?: string }) {
  return <div className="px-3 py-6 text-center text-[13px] text-zinc-500 dark:text-zinc-400">{label}</div>;
}

export const inputClass =
  "h-7 rounded border border-zinc-300 bg-white px-2 text-[13px] text-zinc-900 placeholder:text-zinc-500 focus:border-cyan-600 dark:border-zinc-700 dark:placeholder:text-zinc-400 dark:bg-zinc-950 dark:text-zinc-100";

export const tableClass = "w-full border-collapse text-left text-[13px]";
export const thClass =
  "border-b border-zinc-200 px-3 py-1.5 text-[11px] font-semibold tracking-wide text-zinc-500 uppercase dark:border-zinc-800 dark:text-zinc-400";
/** The header of a column holding only buttons: named for screen readers, blank on screen. */
export function ActionsHeader() {
  return (
    <th className={thClass}>
      <span className="sr-only">Actions</span>
    </th>
  );
}

export const tdClass = "border-b border-zinc-100 px-3 py-1.5 align-middle dark:border-zinc-800/70";
