// The VM list page: filters by node and state, search by name, keyset paging with "Load more".
import { useState, type ReactNode } from "react";
import { VM_STATES, type VmState } from "../../../../../protocol/wire.ts";
import { Button } from "../../../components/ui/button.tsx";
import { inputClass, Notice, PageHeader, Panel, Spinner } from "../../../components/ui/panel.tsx";
import { useDebounced } from "../../../lib/use-debounced.ts";
import { useVMs, type VmRow } from "../api/vms.ts";
import { VmTable } from "./vm-table.tsx";

export function VmsPage({
  nodes,
  renderName,
  title = "Virtual machines",
  selectedId,
}: {
  /** nodes to filter by; omitted on the host view (one host) */
  nodes?: Array<{ id: string; name: string }>;
  renderName: (vm: VmRow) => ReactNode;
  title?: string;
  selectedId?: string;
}) {
  const [nodeId, setNodeId] = useState("");
  const [state, setState] = useState<VmState | "">("");
  const [search, setSearch] = useState("");
  const q = useDebounced(search.trim());
  const vms = useVMs({ nodeId: nodeId || undefined, state: state || undefined, q: q || undefined });
  const rows = vms.data?.pages.flatMap((p) => p.vms) ?? [];
  const nodeNames = nodes ? new Map(nodes.map((n) => [n.id, n.name])) : undefined;

  return (
    <div>
      <PageHeader title={title} subtitle={vms.data ? `${rows.length}${vms.hasNextPage ? "+" : ""} shown` : undefined} />
      <div className="mb-2 flex flex-wrap items-center gap-2">
        <input
          data-testid="vm-search"
          type="search"
          placeholder="Search by name"
          aria-label="Search VMs by name"
          className={`${inputClass} w-56`}
          value={search}
          onChange={(e) => setSearch(e.target.value)}
          maxLength={200}
        />
        {nodes && (
          <select
            data-testid="vm-node-filter"
            className={inputClass}
            value={nodeId}
            onChange={(e) => setNodeId(e.target.value)}
            aria-label="Node"
          >
            <option value="">All nodes</option>
            {nodes.map((n) => (
              <option key={n.id} value={n.id}>
                {n.name}
              </option>
            ))}
          </select>
        )}
        <select
          data-testid="vm-state-filter"
          className={inputClass}
          value={state}
          onChange={(e) => setState(e.target.value as VmState | "")}
          aria-label="State"
        >
          <option value="">All states</option>
          {VM_STATES.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </div>
      {vms.error && <Notice tone="error">Could not list VMs: {vms.error.message}</Notice>}
      <Panel className="overflow-x-auto">
        {vms.isPending ? (
          <Spinner />
        ) : rows.length === 0 ? (
          <div className="px-3 py-6 text-center text-[13px] text-zinc-500 dark:text-zinc-400">No VMs match.</div>
        ) : (
          <VmTable vms={rows} nodeNames={nodeNames} renderName={renderName} selectedId={selectedId} />
        )}
      </Panel>
      {vms.hasNextPage && (
        <div className="mt-2 flex justify-center">
          <Button data-testid="vm-load-more" onClick={() => void vms.fetchNextPage()} disabled={vms.isFetchingNextPage}>
            {vms.isFetchingNextPage ? "Loading…" : "Load more"}
          </Button>
        </div>
      )}
    </div>
  );
}
