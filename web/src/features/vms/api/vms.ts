// Fetcher, query options and hook for the VM list: keyset pages of `GET /vms` with filters. The
// agent's local API answers the same route with one page and no cursor.
import { infiniteQueryOptions, useInfiniteQuery } from "@tanstack/react-query";
import type { VmView } from "../../../../../protocol/rest.ts";
import type { VmState } from "../../../../../protocol/wire.ts";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

export const VM_PAGE_SIZE = 100;

export type VmFilters = { nodeId?: string; state?: VmState; q?: string };
/** What the agent's local API sends lacks the control-plane fields; the list copes. */
export type VmRow = Pick<VmView, "id" | "name" | "state" | "vcpus" | "memoryMiB"> &
  Partial<Omit<VmView, "id" | "name" | "state" | "vcpus" | "memoryMiB">>;
export type VmPage = { vms: VmRow[]; nextCursor?: string | null };

export function fetchVMs(
  client: ApiClient,
  filters: VmFilters,
  cursor: string | null,
  signal?: AbortSignal,
): Promise<VmPage> {
  const params = new URLSearchParams({ limit: String(VM_PAGE_SIZE) });
  if (filters.nodeId) params.set("node_id", filters.nodeId);
  if (filters.state) params.set("state", filters.state);
  if (filters.q) params.set("q", filters.q);
  if (cursor) params.set("cursor", cursor);
  return client.request<VmPage>(`/vms?${params}`, { signal });
}

export function vmsQuery(client: ApiClient, filters: VmFilters, refetchMs: number | false) {
  return infiniteQueryOptions({
    queryKey: [client.prefix, "vms", filters],
    queryFn: ({ pageParam, signal }) => fetchVMs(client, filters, pageParam, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.nextCursor ?? null,
    refetchInterval: refetchMs,
    placeholderData: (previous) => previous,
  });
}

export function useVMs(filters: VmFilters, refetchMs: number | false = 15_000) {
  return useInfiniteQuery(vmsQuery(useApiClient(), filters, refetchMs));
}
