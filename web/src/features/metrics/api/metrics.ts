// Fetcher, query options and hook for a VM's or a node's metrics over a range (the same answer from
// the control plane and, for a VM, from an agent's local API).
import { queryOptions, useQuery } from "@tanstack/react-query";
import { METRICS_WATCH_POLL_MS, type MetricRange } from "../../../../../protocol/metrics.ts";
import type { MetricsResponse } from "../../../../../protocol/rest.ts";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

export const RANGES: MetricRange[] = ["1h", "24h", "7d", "30d"];
export type MetricsTarget = { kind: "vms" | "nodes"; id: string };

/** Ranges whose chart is watched while open: their steps are short enough for a new sample to show. */
const watchedRange = (range: MetricRange) => range === "1h";

export function fetchMetrics(
  client: ApiClient,
  target: MetricsTarget,
  range: MetricRange,
  signal?: AbortSignal,
): Promise<MetricsResponse> {
  const watch = watchedRange(range) ? "&watch=1" : "";
  return client.request<MetricsResponse>(
    `/${target.kind}/${encodeURIComponent(target.id)}/metrics?range=${range}${watch}`,
    { signal },
  );
}

export function metricsQuery(client: ApiClient, target: MetricsTarget, range: MetricRange) {
  return queryOptions({
    queryKey: [client.prefix, "metrics", target.kind, target.id, range],
    queryFn: ({ signal }) => fetchMetrics(client, target, range, signal),
    // While the 1 h chart is open and visible, each read asks for live samples (`watch=1`) and renews
    // that lease; a hidden tab stops polling (react-query's default) and the lease runs out on its
    // own. Longer ranges move by minutes: the agent's minute batches are soon enough for them.
    refetchInterval: watchedRange(range) ? METRICS_WATCH_POLL_MS : 60_000,
    placeholderData: (previous) => previous,
    retry: false,
  });
}

export function useMetrics(target: MetricsTarget, range: MetricRange) {
  return useQuery(metricsQuery(useApiClient(), target, range));
}
