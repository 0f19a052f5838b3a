// A confirmation dialog on the native <dialog> element (focus trap, Escape to cancel for free).
// Closed, it hands focus back to what opened it, or to the page's main region when that is gone
// (a deleted row's button), so a keyboard user never lands at the top of the document.
import { useEffect, useRef, type ReactNode } from "react";
import { Button } from "./button.tsx";

export function ConfirmDialog(props: {
  open: boolean;
  title: string;
  children: ReactNode;
  confirmLabel: string;
  tone?: "primary" | "danger";
  busy?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const opener = useRef<HTMLElement | null>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (props.open && !dialog.open) {
      opener.current = document.activeElement instanceof HTMLElement ? document.activeElement : null;
      dialog.showModal();
    }
    if (!props.open && dialog.open) {
      dialog.close();
      const back = opener.current?.isConnected ? opener.current : document.querySelector<HTMLElement>("main");
      back?.focus();
      opener.current = null;
    }
  }, [props.open]);
  return (
    <dialog
      ref={ref}
      onCancel={(e) => {
        e.preventDefault();
        props.onCancel();
      }}
      aria-labelledby="confirm-title"
      className="m-auto w-[28rem] max-w-[calc(100vw-2rem)] rounded-md border border-zinc-200 bg-white p-0 text-zinc-900 shadow-xl dark:border-zinc-700 dark:bg-zinc-900 dark:text-zinc-100"
    >
      {props.open && (
        <form
          method="dialog"
          onSubmit={(e) => {
            e.preventDefault();
            props.onConfirm();
          }}
        >
          <div className="border-b border-zinc-200 px-4 py-2.5 dark:border-zinc-800">
            <h2 id="confirm-title" className="text-[15px] font-semibold">
              {props.title}
            </h2>
          </div>
          <div className="space-y-3 px-4 py-3 text-[13px]">{props.children}</div>
          <div className="flex justify-end gap-2 border-t border-zinc-200 px-4 py-2.5 dark:border-zinc-800">
            <Button onClick={props.onCancel}>Cancel</Button>
            <Button type="submit" tone={props.tone ?? "primary"} disabled={props.busy}>
              {props.busy ? "Working…" : props.confirmLabel}
            </Button>
          </div>
        </form>
      )}
    </dialog>
  );
}
