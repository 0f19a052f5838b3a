// The VM table: name, state badge with stuck / missing / flag markers, node, size. Names are React text.
import type { ReactNode } from "react";
import { FlagMarker, MissingMarker, StateBadge, StuckMarker } from "../../../components/ui/state-badge.tsx";
import { tableClass, tdClass, thClass } from "../../../components/ui/panel.tsx";
import { formatMemory, formatRelativeTime } from "../../../lib/format.ts";
import { useNow } from "../../../lib/use-now.ts";
import { isStuck, useStuckAfterMs } from "../../../lib/vm-state.ts";
import type { VmRow } from "../api/vms.ts";

export function VmTable({
  vms,
  nodeNames,
  renderName,
  selectedId,
}: {
  vms: VmRow[];
  /** node id → name; without it the node column is left out (host view) */
  nodeNames?: Map<string, string>;
  renderName: (vm: VmRow) => ReactNode;
  selectedId?: string;
}) {
  const now = useNow();
  const stuckAfterMs = useStuckAfterMs();
  // The agent's local API has no state history: leave the column out rather than fill it with dashes.
  const showSince = vms.some((vm) => vm.stateUpdatedAt);
  return (
    <table className={tableClass} data-testid="vm-table">
      <thead>
        <tr>
          <th className={thClass}>Name</th>
          <th className={thClass}>State</th>
          {nodeNames && <th className={thClass}>Node</th>}
          <th className={thClass}>vCPU</th>
          <th className={thClass}>Memory</th>
          {showSince && <th className={thClass}>State since</th>}
        </tr>
      </thead>
      <tbody>
        {vms.map((vm) => (
          <tr
            key={vm.id}
            data-vm-id={vm.id}
            data-vm-name={vm.name}
            className={
              vm.id === selectedId ? "bg-cyan-50 dark:bg-cyan-950/40" : "hover:bg-zinc-50 dark:hover:bg-zinc-800/40"
            }
          >
            <td className={`${tdClass} max-w-80 truncate font-medium`}>{renderName(vm)}</td>
            <td className={tdClass}>
              <div className="flex flex-wrap items-center gap-1.5">
                <StateBadge state={vm.state} />
                {vm.missing && <MissingMarker />}
                {vm.flag && <FlagMarker flag={vm.flag} />}
                {vm.stateUpdatedAt && isStuck(vm, now, stuckAfterMs) && (
                  <StuckMarker since={vm.stateUpdatedAt} now={now} />
                )}
              </div>
            </td>
            {nodeNames && (
              <td className={`${tdClass} text-zinc-600 dark:text-zinc-400`}>
                {vm.node_id ? (nodeNames.get(vm.node_id) ?? vm.node_id.slice(0, 8)) : "—"}
              </td>
            )}
            <td className={`${tdClass} tabular-nums`}>{vm.vcpus}</td>
            <td className={`${tdClass} tabular-nums`}>{formatMemory(vm.memoryMiB)}</td>
            {showSince && (
              <td className={`${tdClass} text-zinc-600 dark:text-zinc-400`}>
                {vm.stateUpdatedAt ? formatRelativeTime(vm.stateUpdatedAt, now) : "—"}
              </td>
            )}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
