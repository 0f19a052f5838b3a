// Fetcher, query options and hook for a VM's QEMU log (the logs route; the same shape from
// the control plane and from an agent's local API).
import { queryOptions, useQuery } from "@tanstack/react-query";
import type { LastKnownLogResponse, LogsResponse } from "../../../../../protocol/rest.ts";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

export const LINE_CHOICES = [50, 100, 200, 500, 1000] as const;
export const AUTO_REFRESH_MS = 5_000;

export function fetchVmLogs(
  client: ApiClient,
  vmId: string,
  lines: number,
  signal?: AbortSignal,
): Promise<LogsResponse> {
  return client.request<LogsResponse>(`/vms/${encodeURIComponent(vmId)}/logs?lines=${lines}`, { signal });
}

export function vmLogsQuery(client: ApiClient, vmId: string, lines: number, autoRefresh: boolean) {
  return queryOptions({
    queryKey: [client.prefix, "vm-logs", vmId, lines],
    queryFn: ({ signal }) => fetchVmLogs(client, vmId, lines, signal),
    refetchInterval: autoRefresh ? AUTO_REFRESH_MS : false,
    refetchOnWindowFocus: false,
    // A log read is a round-trip to the host: keep the last answer on screen while the next loads.
    placeholderData: (previous) => previous,
    retry: false,
  });
}

export function useVMLogs(vmId: string, lines: number, autoRefresh: boolean) {
  return useQuery(vmLogsQuery(useApiClient(), vmId, lines, autoRefresh));
}

/** The VM's last-known log: the latest answer the control plane kept, for when its node
 *  is offline. 404 `no_snapshot` when none was ever read. */
export function lastKnownLogQuery(client: ApiClient, vmId: string, enabled: boolean) {
  return queryOptions({
    queryKey: [client.prefix, "vm-logs", vmId, "last-known"],
    queryFn: ({ signal }) =>
      client.request<LastKnownLogResponse>(`/vms/${encodeURIComponent(vmId)}/logs/last_known`, { signal }),
    enabled,
    refetchOnWindowFocus: false,
    retry: false,
  });
}

export function useLastKnownLog(vmId: string, enabled: boolean) {
  return useQuery(lastKnownLogQuery(useApiClient(), vmId, enabled));
}
