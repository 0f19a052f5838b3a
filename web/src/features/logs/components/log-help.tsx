// Help on the common QEMU / libvirt log issues, each with its one-line explanation from
// the shared classifier; the ones seen in this log are marked.
import { ISSUE_IDS, ISSUES, type IssueId } from "../../../../../protocol/log-classify.ts";

export function LogHelp({ detected }: { detected: IssueId[] }) {
  return (
    <details
      className="rounded border border-zinc-200 px-3 py-1.5 text-[13px] dark:border-zinc-800"
      data-testid="log-help"
    >
      <summary className="cursor-pointer">
        <span className="font-medium">Help on common issues</span>
      </summary>
      <ul className="mt-2 space-y-2">
        {ISSUE_IDS.map((id) => (
          <li key={id} data-issue={id} data-detected={detected.includes(id)}>
            <div className="font-medium">
              {ISSUES[id].label}
              {detected.includes(id) && (
                <span className="ml-2 text-[12px] text-amber-700 dark:text-amber-400">seen in this log</span>
              )}
            </div>
            <div className="text-zinc-600 dark:text-zinc-400">{ISSUES[id].explanation}</div>
          </li>
        ))}
      </ul>
    </details>
  );
}
