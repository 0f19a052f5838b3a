// Buttons in four tones; small and dense by default.
import type { ComponentProps } from "react";
import { cn } from "./cn.ts";

type Tone = "primary" | "secondary" | "danger" | "ghost";

const tones: Record<Tone, string> = {
  primary: "bg-cyan-700 text-white hover:bg-cyan-800 border-cyan-700 dark:border-cyan-600",
  secondary:
    "bg-white text-zinc-800 border-zinc-300 hover:bg-zinc-100 dark:bg-zinc-900 dark:text-zinc-100 dark:border-zinc-700 dark:hover:bg-zinc-800",
  danger: "bg-red-600 text-white border-red-600 hover:bg-red-700",
  ghost: "border-transparent text-zinc-700 hover:bg-zinc-200/70 dark:text-zinc-300 dark:hover:bg-zinc-800",
};

export function Button({
  tone = "secondary",
  className,
  type = "button",
  ...rest
}: ComponentProps<"button"> & { tone?: Tone }) {
  return (
    <button
      type={type}
      className={cn(
        "inline-flex h-7 items-center gap-1.5 rounded border px-2.5 text-[13px] font-medium whitespace-nowrap transition-colors",
        "disabled:cursor-not-allowed disabled:opacity-45",
        tones[tone],
        className,
      )}
      {...rest}
    />
  );
}
