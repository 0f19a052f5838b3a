// One VM: its summary and actions (vm-detail), then tabs for the events trail, its resource charts
// (metrics), the QEMU log (logs) and the serial console (console, loaded only on its tab). Composed
// here so that no feature imports another. A new tab is one more TabLink and one more branch in the
// tab panel.
import { lazy, Suspense } from "react";
import type { VmView } from "../../../protocol/rest.ts";
import { cn } from "../components/ui/cn.ts";
import { TabList } from "../components/ui/tabs.tsx";
import { Notice, Panel, Spinner } from "../components/ui/panel.tsx";
import { useNodes } from "../features/nodes/api/nodes.ts";
import { LogsPanel, initialLineCount } from "../features/logs/components/logs-panel.tsx";
import { MetricsPanel } from "../features/metrics/components/metrics-panel.tsx";
import { useVM } from "../features/vm-detail/api/vm.ts";
import { EventsTrail } from "../features/vm-detail/components/events-trail.tsx";
import { VmSummary } from "../features/vm-detail/components/vm-summary.tsx";
import { Link, useLocation } from "../lib/router.tsx";

export type VmTab = "events" | "monitoring" | "logs" | "console";

// The console's views (xterm.js, noVNC) come in chunks of their own, fetched when shown.
const ConsoleViews = lazy(() => import("../features/console/components/console-views.tsx"));

export function VmPage({ id, tab }: { id: string; tab: VmTab }) {
  const vm = useVM(id);
  const nodes = useNodes();
  const { search } = useLocation();
  if (vm.error) return <Notice tone="error">Could not load the VM: {vm.error.message}</Notice>;
  if (vm.isPending) return <Spinner />;
  const base = `/vms/${encodeURIComponent(id)}`;
  const nodeOffline = nodes.data?.find((n) => n.id === vm.data.node_id)?.connected === false;
  return (
    <div>
      <div className="mb-2 text-[13px]">
        <Link to="/vms" className="text-cyan-700 hover:underline dark:text-cyan-400">
          ← VMs
        </Link>
      </div>
      <VmSummary vm={vm.data} nodeName={<NodeName vm={vm.data} />} nodeOffline={nodeOffline} />
      <TabList label={`${vm.data.name}: views`} className="mb-2 gap-1 border-b border-zinc-200 dark:border-zinc-800">
        <TabLink tab="events" to={base} active={tab === "events"} label="Events" reload={tab === "console"} />
        <TabLink
          tab="monitoring"
          to={`${base}/monitoring`}
          active={tab === "monitoring"}
          label="Monitoring"
          reload={tab === "console"}
        />
        <TabLink tab="logs" to={`${base}/logs`} active={tab === "logs"} label="Logs" reload={tab === "console"} />
        <TabLink
          tab="console"
          to={`${base}/console`}
          active={tab === "console"}
          label="Console"
          reload={tab !== "console"}
        />
      </TabList>
      <div role="tabpanel" id="vm-tabpanel" aria-labelledby={`vm-tab-${tab}`}>
        {tab === "events" ? (
          <Panel className="overflow-x-auto">
            <EventsTrail vmId={id} />
          </Panel>
        ) : tab === "monitoring" ? (
          <MetricsPanel target={{ kind: "vms", id }} offline={nodeOffline} />
        ) : tab === "console" ? (
          <Suspense fallback={<Spinner />}>
            <ConsoleViews vmId={id} initial={search.get("view") === "graphical" ? "graphical" : "serial"} />
          </Suspense>
        ) : (
          <LogsPanel vm={vm.data} initialLines={initialLineCount(search.get("lines"))} live />
        )}
      </div>
    </div>
  );
}

function NodeName({ vm }: { vm: VmView }) {
  const nodes = useNodes();
  if (!vm.node_id) return <>—</>;
  const node = nodes.data?.find((n) => n.id === vm.node_id);
  if (!node) return <span className="font-mono text-[12px]">{vm.node_id}</span>;
  return (
    <span>
      {node.name}{" "}
      <span className={node.connected ? "text-emerald-700 dark:text-emerald-400" : "text-red-700 dark:text-red-400"}>
        ({node.connected ? "connected" : "offline"})
      </span>
    </span>
  );
}

/** `reload`: a full page load, not an in-page move. The console's page alone has a CSP that lets
 *  xterm.js add its <style> elements, and a document keeps the policy it was loaded with. */
function TabLink({
  tab,
  to,
  active,
  label,
  reload,
}: {
  tab: VmTab;
  to: string;
  active: boolean;
  label: string;
  reload?: boolean;
}) {
  const props = {
    role: "tab",
    id: `vm-tab-${tab}`,
    "aria-selected": active,
    "aria-controls": active ? "vm-tabpanel" : undefined,
    tabIndex: active ? 0 : -1,
    className: cn(
      "-mb-px border-b-2 px-3 py-1.5 text-[13px] font-medium",
      active
        ? "border-cyan-600 text-zinc-900 dark:text-zinc-100"
        : "border-transparent text-zinc-600 hover:text-zinc-900 dark:text-zinc-400 dark:hover:text-zinc-100",
    ),
  };
  return reload ? (
    <a href={to} data-full-load="" {...props}>
      {label}
    </a>
  ) : (
    <Link to={to} {...props}>
      {label}
    </Link>
  );
}
