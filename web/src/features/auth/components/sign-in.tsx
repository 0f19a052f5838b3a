// The sign-in form: takes a token, lets the caller check it, and hands it over only if it works.
import { useState, type FormEvent, type ReactNode } from "react";
import { Button } from "../../../components/ui/button.tsx";
import { inputClass, Notice } from "../../../components/ui/panel.tsx";
import { ApiError, errorMessage } from "../../../lib/api-client.ts";

export function SignIn({
  title,
  label,
  help,
  verify,
  onSignedIn,
}: {
  title: string;
  label: string;
  help: ReactNode;
  verify: (token: string) => Promise<unknown>;
  onSignedIn: (token: string) => void;
}) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const value = token.trim();
    setBusy(true);
    setError(null);
    try {
      await verify(value);
      onSignedIn(value);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? "That token was refused." : errorMessage(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="flex min-h-screen items-center justify-center p-4">
      <form
        onSubmit={(e) => void submit(e)}
        className="w-[24rem] max-w-full space-y-3 rounded-md border border-zinc-200 bg-white p-5 shadow-sm dark:border-zinc-800 dark:bg-zinc-900"
        data-testid="sign-in"
      >
        <div>
          <div className="text-[12px] font-semibold tracking-wider text-cyan-700 uppercase dark:text-cyan-400">
            Quantix Edge
          </div>
          <h1 className="text-lg font-semibold">{title}</h1>
        </div>
        <label className="block">
          <span className="mb-1 block text-[13px] text-zinc-600 dark:text-zinc-400">{label}</span>
          <input
            data-testid="sign-in-token"
            type="password"
            autoComplete="current-password"
            className={`${inputClass} w-full`}
            value={token}
            onChange={(e) => setToken(e.target.value)}
            required
            autoFocus
          />
        </label>
        {error && (
          <Notice tone="error" testId="sign-in-error">
            {error}
          </Notice>
        )}
        <Button type="submit" tone="primary" className="w-full justify-center" disabled={busy || !token.trim()}>
          {busy ? "Checking…" : "Sign in"}
        </Button>
        <div className="text-[12px] text-zinc-500 dark:text-zinc-400">{help}</div>
      </form>
    </main>
  );
}
