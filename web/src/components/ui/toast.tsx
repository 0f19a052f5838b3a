// Toasts: short success / error messages in the corner, carrying the server's own words. They are
// added to live regions that are always in the page (a region inserted with its message is often
// not read): successes politely, errors at once. Neither takes focus from what the operator is doing.
import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { cn } from "./cn.ts";

type Toast = { id: number; tone: "success" | "error"; message: string };
type ToastApi = { success: (message: string) => void; error: (message: string) => void };

const ToastContext = createContext<ToastApi | null>(null);
let nextId = 1;

export function ToastProvider({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const dismiss = useCallback((id: number) => setToasts((ts) => ts.filter((t) => t.id !== id)), []);
  const push = useCallback(
    (tone: Toast["tone"], message: string) => {
      const id = nextId++;
      setToasts((ts) => [...ts.slice(-4), { id, tone, message }]);
      setTimeout(() => dismiss(id), tone === "error" ? 10_000 : 6_000);
    },
    [dismiss],
  );
  const api = useMemo<ToastApi>(() => ({ success: (m) => push("success", m), error: (m) => push("error", m) }), [push]);
  return (
    <ToastContext.Provider value={api}>
      {children}
      <div className="pointer-events-none fixed right-3 bottom-3 z-50 flex w-96 max-w-[calc(100vw-1.5rem)] flex-col gap-2">
        <ToastList
          role="status"
          label="Notices"
          toasts={toasts.filter((t) => t.tone === "success")}
          dismiss={dismiss}
        />
        <ToastList role="alert" label="Errors" toasts={toasts.filter((t) => t.tone === "error")} dismiss={dismiss} />
      </div>
    </ToastContext.Provider>
  );
}

function ToastList({
  role,
  label,
  toasts,
  dismiss,
}: {
  role: "status" | "alert";
  label: string;
  toasts: Toast[];
  dismiss: (id: number) => void;
}) {
  return (
    <div
      role={role}
      aria-label={label}
      aria-atomic="false"
      className="flex flex-col gap-2"
      data-testid={`toasts-${role}`}
    >
      {toasts.map((t) => (
        <div
          key={t.id}
          data-testid={`toast-${t.tone}`}
          className={cn(
            "pointer-events-auto flex items-start gap-2 rounded-md border px-3 py-2 text-[13px] shadow-lg",
            t.tone === "success"
              ? "border-emerald-300 bg-emerald-50 text-emerald-900 dark:border-emerald-800 dark:bg-emerald-950 dark:text-emerald-100"
              : "border-red-300 bg-red-50 text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100",
          )}
        >
          <span className="flex-1 break-words">{t.message}</span>
          <button type="button" aria-label="Dismiss" className="px-1" onClick={() => dismiss(t.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

export function useToast(): ToastApi {
  const api = useContext(ToastContext);
  if (!api) throw new Error("useToast outside ToastProvider");
  return api;
}
