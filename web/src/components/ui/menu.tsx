// A small dropdown menu behind a button (the VM detail's "…" menu).
import { useEffect, useRef, useState, type ReactNode } from "react";
import { Button } from "./button.tsx";

export type MenuItem = { label: string; description?: string; danger?: boolean; onSelect: () => void };

export function Menu({ label, items, buttonLabel }: { label: string; items: MenuItem[]; buttonLabel: ReactNode }) {
  const [open, setOpen] = useState(false);
  const root = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!open) return;
    const onDown = (e: PointerEvent) => {
      if (!root.current?.contains(e.target as Node)) setOpen(false);
    };
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && setOpen(false);
    document.addEventListener("pointerdown", onDown);
    document.addEventListener("keydown", onKey);
    return () => {
      document.removeEventListener("pointerdown", onDown);
      document.removeEventListener("keydown", onKey);
    };
  }, [open]);
  return (
    <div ref={root} className="relative">
      <Button aria-label={label} aria-haspopup="menu" aria-expanded={open} onClick={() => setOpen((o) => !o)}>
        {buttonLabel}
      </Button>
      {open && (
        <div
          role="menu"
          className="absolute right-0 z-20 mt-1 w-72 rounded-md border border-zinc-200 bg-white py-1 shadow-lg dark:border-zinc-700 dark:bg-zinc-900"
        >
          {items.map((item) => (
            <button
              key={item.label}
              role="menuitem"
              type="button"
              className="block w-full px-3 py-1.5 text-left hover:bg-zinc-100 dark:hover:bg-zinc-800"
              onClick={() => {
                setOpen(false);
                item.onSelect();
              }}
            >
              <div
                className={
                  item.danger ? "text-[13px] font-medium text-red-700 dark:text-red-400" : "text-[13px] font-medium"
                }
              >
                {item.label}
              </div>
              {item.description && (
                <div className="text-[12px] text-zinc-500 dark:text-zinc-400">{item.description}</div>
              )}
            </button>
          ))}
        </div>
      )}
    </div>
  );
}
