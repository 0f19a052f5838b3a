// A VM flagged for the operator (e.g. found running after a forced reset; never stopped
// by us): what and since when, and for operators a "Clear flag" once they have looked.
import type { VmFlag } from "../../../../../protocol/rest.ts";
import { Button } from "../../../components/ui/button.tsx";
import { useToast } from "../../../components/ui/toast.tsx";
import { errorMessage } from "../../../lib/api-client.ts";
import { formatDateTime, formatRelativeTime } from "../../../lib/format.ts";
import { useCan } from "../../../lib/permissions.tsx";
import { useClearVMFlag } from "../api/vm.ts";

const flagTitles: Record<string, string> = {
  running_after_forced_reset: "Running after a forced reset",
};

export function FlagBanner({ vmId, flag }: { vmId: string; flag: VmFlag }) {
  const canOperate = useCan("operate");
  const clear = useClearVMFlag(vmId);
  const toast = useToast();
  return (
    <div
      role="alert"
      data-testid="flag-banner"
      data-flag-code={flag.code}
      className="mb-3 flex flex-wrap items-start gap-3 rounded border border-red-300 bg-red-50 px-3 py-2 text-[13px] text-red-900 dark:border-red-800 dark:bg-red-950/40 dark:text-red-200"
    >
      <div className="min-w-0 flex-1">
        <div className="font-semibold">
          ⚑ {flagTitles[flag.code] ?? flag.code}{" "}
          <span className="font-normal opacity-80">
            · flagged {formatDateTime(flag.at)} ({formatRelativeTime(flag.at)})
          </span>
        </div>
        <div data-testid="flag-message">{flag.message}</div>
      </div>
      {canOperate && (
        <Button
          data-testid="flag-clear"
          disabled={clear.isPending}
          // mutateAsync, not mutate's callbacks: the banner unmounts as soon as the flag is gone.
          onClick={() =>
            void clear.mutateAsync().then(
              () => toast.success("Flag cleared; the events keep the record."),
              (err) => toast.error(`Clear flag failed: ${errorMessage(err)}`),
            )
          }
        >
          {clear.isPending ? "Clearing…" : "Clear flag"}
        </Button>
      )}
    </div>
  );
}
