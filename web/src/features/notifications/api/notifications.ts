// Fetchers, query options and hooks for notification targets and their deliveries (admin).
import { queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

export const NOTIFICATION_EVENTS = [
  "vm.stuck",
  "vm.repaired",
  "vm.flagged",
  "node.offline",
  "node.online",
  "node.flagged",
] as const;
export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number];

export type TargetView = {
  id: string;
  name: string;
  url: string;
  events: NotificationEvent[];
  format: "json" | "slack";
  createdBy: string;
  createdAt: string;
};
export type AttemptView = { at: string; httpStatus: number | null; error: string | null; durationMs: number };
export type DeliveryView = {
  id: string;
  targetId: string;
  event: string;
  status: "pending" | "delivered" | "failed" | "cancelled";
  payload: { message?: string; text?: string } | null;
  createdAt: string;
  deliveredAt: string | null;
  nextAttemptAt: string | null;
  lastStatus: number | null;
  lastError: string | null;
  attempts: AttemptView[];
};
export type NewTarget = {
  name: string;
  url: string;
  secret: string;
  events: NotificationEvent[];
  format: "json" | "slack";
};

export function targetsQuery(client: ApiClient) {
  return queryOptions({
    queryKey: [client.prefix, "notifications", "targets"],
    queryFn: ({ signal }) =>
      client.request<{ targets: TargetView[] }>("/notifications/targets", { signal }).then((r) => r.targets),
  });
}

export function deliveriesQuery(client: ApiClient) {
  return queryOptions({
    queryKey: [client.prefix, "notifications", "deliveries"],
    queryFn: ({ signal }) =>
      client
        .request<{ deliveries: DeliveryView[] }>("/notifications/deliveries?limit=30", { signal })
        .then((r) => r.deliveries),
    refetchInterval: 5_000,
  });
}

export const useTargets = () => useQuery(targetsQuery(useApiClient()));
export const useDeliveries = () => useQuery(deliveriesQuery(useApiClient()));

function useInvalidateNotifications() {
  const client = useApiClient();
  const queryClient = useQueryClient();
  return () => queryClient.invalidateQueries({ queryKey: [client.prefix, "notifications"] });
}

export function useCreateTarget() {
  const client = useApiClient();
  const invalidate = useInvalidateNotifications();
  return useMutation({
    mutationFn: (input: NewTarget) =>
      client.request<{ target: TargetView }>("/notifications/targets", { method: "POST", json: input }),
    onSettled: invalidate,
  });
}

export function useDeleteTarget() {
  const client = useApiClient();
  const invalidate = useInvalidateNotifications();
  return useMutation({
    mutationFn: (id: string) =>
      client.request<{ success: true }>(`/notifications/targets/${encodeURIComponent(id)}`, { method: "DELETE" }),
    onSettled: invalidate,
  });
}

export function useTestTarget() {
  const client = useApiClient();
  const invalidate = useInvalidateNotifications();
  return useMutation({
    mutationFn: (id: string) =>
      client.request<{ delivery: DeliveryView }>(`/notifications/targets/${encodeURIComponent(id)}/test`, {
        method: "POST",
      }),
    onSettled: invalidate,
  });
}
