// A secret shown once (a node's join token, an API token): its title, why it is shown only now,
// Done, and each value with a copy button. Nothing here keeps the secret once Done is pressed.
import type { ReactNode } from "react";
import { Button } from "./button.tsx";
import { CopyButton } from "./copy-button.tsx";
import { Panel } from "./panel.tsx";

export function SecretPanel({
  title,
  warning,
  onDone,
  children,
}: {
  title: ReactNode;
  warning: string;
  onDone: () => void;
  children: ReactNode;
}) {
  return (
    <Panel className="mb-3 space-y-2 border-cyan-300 px-3 py-3 dark:border-cyan-800">
      <div className="flex items-start justify-between gap-3">
        <div>
          <div className="font-semibold">{title}</div>
          <div className="text-[12px] text-amber-700 dark:text-amber-400">{warning}</div>
        </div>
        <Button tone="ghost" onClick={onDone}>
          Done
        </Button>
      </div>
      {children}
    </Panel>
  );
}

/** One value of the secret panel, as literal text, with its copy button. */
export function SecretLine({ label, text, testId }: { label?: string; text: string; testId: string }) {
  return (
    <div>
      {label && <div className="mb-0.5 text-[12px] text-zinc-500 dark:text-zinc-400">{label}</div>}
      <div className="flex items-center gap-2">
        <code
          data-testid={testId}
          className="block flex-1 overflow-x-auto rounded bg-zinc-100 px-2 py-1 font-mono text-[12px] whitespace-pre dark:bg-zinc-950"
        >
          {text}
        </code>
        <CopyButton text={text} />
      </div>
    </div>
  );
}
