// The VM detail header: name, state with stuck / missing markers, a flag banner, facts, and (for
// operators) actions.
import type { ReactNode } from "react";
import type { VmView } from "../../../../../protocol/rest.ts";
import { Facts, PageHeader, Panel } from "../../../components/ui/panel.tsx";
import { MissingMarker, StateBadge, StuckMarker } from "../../../components/ui/state-badge.tsx";
import { formatDateTime, formatMemory, formatRelativeTime } from "../../../lib/format.ts";
import { useCan } from "../../../lib/permissions.tsx";
import { useNow } from "../../../lib/use-now.ts";
import { isStuck, useStuckAfterMs } from "../../../lib/vm-state.ts";
import { FlagBanner } from "./flag-banner.tsx";
import { VmActions } from "./vm-actions.tsx";

export function VmSummary({
  vm,
  nodeName,
  nodeOffline = false,
}: {
  vm: VmView;
  nodeName: ReactNode;
  nodeOffline?: boolean;
}) {
  const canOperate = useCan("operate");
  const now = useNow(5_000);
  const stuckAfterMs = useStuckAfterMs();
  const stuck = isStuck(vm, now, stuckAfterMs);
  return (
    <div className="mb-3">
      <PageHeader
        title={
          <span className="flex items-center gap-2">
            <span data-testid="vm-name">{vm.name}</span>
            <StateBadge state={vm.state} />
            {vm.missing && <MissingMarker />}
          </span>
        }
        subtitle={
          <>
            {/* Always in the page, so a VM turning stuck or changing state while looked at is read out;
                stable words only (the marker's relative time would be read again at every tick). */}
            <span role="status" className="sr-only" data-testid="vm-live-state">
              {vm.name} is {vm.state}
              {stuck ? `, stuck since ${formatDateTime(vm.stateUpdatedAt)}` : ""}.
            </span>
            {stuck && <StuckMarker since={vm.stateUpdatedAt} now={now} />}
          </>
        }
        actions={canOperate ? <VmActions vm={vm} nodeOffline={nodeOffline} /> : undefined}
      />
      {vm.flag && <FlagBanner vmId={vm.id} flag={vm.flag} />}
      <Panel className="px-3 py-2.5">
        <Facts
          items={[
            ["ID", <span className="font-mono text-[12px]">{vm.id}</span>],
            ["Node", nodeName],
            ["vCPUs", vm.vcpus],
            ["Memory", formatMemory(vm.memoryMiB)],
            ["State", vm.state],
            ["State since", `${formatDateTime(vm.stateUpdatedAt)} (${formatRelativeTime(vm.stateUpdatedAt, now)})`],
          ]}
        />
      </Panel>
    </div>
  );
}
