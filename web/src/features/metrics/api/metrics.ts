// Fetcher, query options and hook for a VM's or a node's metrics over a range (the same answer from
// the control plane and, for a VM, from an agent's local API).
import { queryOptions, useQuery } from "@tanstack/react-query";
import type { MetricRange } from "../../../../../protocol/metrics.ts";
import type { MetricsResponse } from "../../../../../protocol/rest.ts";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

export const RANGES: MetricRange[] = ["1h", "24h", "7d", "30d"];
export type MetricsTarget = { kind: "vms" | "nodes"; id: string };

export function fetchMetrics(
  client: ApiClient,
  target: MetricsTarget,
  range: MetricRange,
  signal?: AbortSignal,
): Promise<MetricsResponse> {
  return client.request<MetricsResponse>(`/${target.kind}/${encodeURIComponent(target.id)}/metrics?range=${range}`, {
    signal,
  });
}

export function metricsQuery(client: ApiClient, target: MetricsTarget, range: MetricRange) {
  return queryOptions({
    queryKey: [client.prefix, "metrics", target.kind, target.id, range],
    queryFn: ({ signal }) => fetchMetrics(client, target, range, signal),
    // New samples arrive every 10 s; longer ranges move by minutes.
    refetchInterval: range === "1h" ? 10_000 : 60_000,
    placeholderData: (previous) => previous,
    retry: false,
  });
}

export function useMetrics(target: MetricsTarget, range: MetricRange) {
  return useQuery(metricsQuery(useApiClient(), target, range));
}
