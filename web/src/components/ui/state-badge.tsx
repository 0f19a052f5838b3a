// A VM state as a coloured badge, plus the stuck, missing and flag markers shown beside it.
import type { VmState } from "../../../../protocol/wire.ts";
import { formatDateTime, formatRelativeTime } from "../../lib/format.ts";
import { Badge, type BadgeTone } from "./badge.tsx";

const stateTone: Record<VmState, BadgeTone> = {
  RUNNING: "green",
  STOPPED: "zinc",
  PAUSED: "blue",
  SUSPENDED: "blue",
  CREATING: "violet",
  STARTING: "violet",
  STOPPING: "violet",
  ERROR: "red",
  UNKNOWN: "amber",
};

export function StateBadge({ state }: { state: VmState }) {
  return (
    <Badge tone={stateTone[state] ?? "zinc"} testId="vm-state">
      {state}
    </Badge>
  );
}

export function StuckMarker({ since, now }: { since: string; now: number }) {
  return (
    <span
      data-testid="stuck-marker"
      title={`In this state since ${formatDateTime(since)}`}
      className="text-[12px] font-medium text-amber-700 dark:text-amber-400"
    >
      ⚠ stuck since {formatDateTime(since)} ({formatRelativeTime(since, now).replace(/ ago$/, "")})
    </span>
  );
}

export function MissingMarker() {
  return (
    <Badge tone="amber" title="The host no longer reports this domain" testId="missing-marker">
      missing
    </Badge>
  );
}

/** A VM flagged for the operator (e.g. found running after a forced reset). */
export function FlagMarker({ flag }: { flag: { code: string; message: string; at: string } }) {
  return (
    <Badge tone="red" title={`${flag.message} (${formatDateTime(flag.at)})`} testId="flag-marker">
      ⚑ flagged
    </Badge>
  );
}
