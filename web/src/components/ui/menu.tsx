// A small dropdown menu behind a button (the VM detail's "…" menu), keyboard-operable as a menu
// button: opening moves focus to the first item, arrows / Home / End move between items, Escape
// and Tab close it, and focus goes back to the button when it closes from the keyboard or an item
// is chosen (a dialog the item opens then returns focus there too).
import { useEffect, useRef, useState, type KeyboardEvent, type ReactNode } from "react";
import { Button } from "./button.tsx";

export type MenuItem = { label: string; description?: string; danger?: boolean; onSelect: () => void };

export function Menu({ label, items, buttonLabel }: { label: string; items: MenuItem[]; buttonLabel: ReactNode }) {
  const [open, setOpen] = useState(false);
  const root = useRef<HTMLDivElement>(null);
  const trigger = useRef<HTMLButtonElement>(null);
  const list = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (!open) return;
    list.current?.querySelector<HTMLElement>('[role="menuitem"]')?.focus();
    const onDown = (e: PointerEvent) => {
      if (!root.current?.contains(e.target as Node)) setOpen(false);
    };
    document.addEventListener("pointerdown", onDown);
    return () => document.removeEventListener("pointerdown", onDown);
  }, [open]);

  const close = (refocus: boolean) => {
    setOpen(false);
    if (refocus) trigger.current?.focus();
  };

  const onMenuKey = (e: KeyboardEvent<HTMLDivElement>) => {
    const entries = [...(list.current?.querySelectorAll<HTMLElement>('[role="menuitem"]') ?? [])];
    const at = entries.indexOf(document.activeElement as HTMLElement);
    const moveTo = (i: number) => entries[(i + entries.length) % entries.length]?.focus();
    if (e.key === "ArrowDown") moveTo(at + 1);
    else if (e.key === "ArrowUp") moveTo(at - 1);
    else if (e.key === "Home") moveTo(0);
    else if (e.key === "End") moveTo(entries.length - 1);
    else if (e.key === "Escape") close(true);
    else if (e.key === "Tab")
      return close(false); // let Tab move on from the menu button
    else return;
    e.preventDefault();
  };

  return (
    <div ref={root} className="relative">
      <Button
        ref={trigger}
        aria-label={label}
        aria-haspopup="menu"
        aria-expanded={open}
        onClick={() => setOpen((o) => !o)}
        onKeyDown={(e) => {
          if (e.key === "ArrowDown" && !open) {
            e.preventDefault();
            setOpen(true);
          }
        }}
      >
        {buttonLabel}
      </Button>
      {open && (
        <div
          ref={list}
          role="menu"
          aria-label={label}
          onKeyDown={onMenuKey}
          className="absolute right-0 z-20 mt-1 w-72 rounded-md border border-zinc-200 bg-white py-1 shadow-lg dark:border-zinc-700 dark:bg-zinc-900"
        >
          {items.map((item) => (
            <button
              key={item.label}
              role="menuitem"
              type="button"
              tabIndex={-1}
              className="block w-full px-3 py-1.5 text-left hover:bg-zinc-100 focus-visible:bg-zinc-100 focus-visible:-outline-offset-2 dark:hover:bg-zinc-800 dark:focus-visible:bg-zinc-800"
              onClick={() => {
                close(true);
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
                <div className="text-[12px] text-zinc-600 dark:text-zinc-400">{item.description}</div>
              )}
            </button>
          ))}
        </div>
      )}
    </div>
  );
}
