// Fetchers, query options and hooks for one VM: its record, its events trail and the actions on it
// (start / stop / force stop, reset_state, clear_flag). Every action refreshes the VM, its events
// and the list.
import { queryOptions, useMutation, useQuery, useQueryClient, type QueryClient } from "@tanstack/react-query";
import type { ResetStateResponse, VmEventView, VmView } from "../../../../../protocol/rest.ts";
import { TRANSITIONAL_STATES } from "../../../../../protocol/wire.ts";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

const vmPath = (id: string) => `/vms/${encodeURIComponent(id)}`;

export function vmQuery(client: ApiClient, id: string) {
  return queryOptions({
    queryKey: [client.prefix, "vm", id],
    queryFn: ({ signal }) => client.request<{ vm: VmView }>(vmPath(id), { signal }).then((r) => r.vm),
    // Follow a VM through STARTING / STOPPING quickly, otherwise now and then.
    refetchInterval: (q) => (q.state.data && TRANSITIONAL_STATES.includes(q.state.data.state) ? 2_000 : 10_000),
  });
}

export function useVM(id: string) {
  return useQuery(vmQuery(useApiClient(), id));
}

export function vmEventsQuery(client: ApiClient, id: string) {
  return queryOptions({
    queryKey: [client.prefix, "vm", id, "events"],
    queryFn: ({ signal }) =>
      client.request<{ events: VmEventView[] }>(`${vmPath(id)}/events`, { signal }).then((r) => r.events),
    refetchInterval: 10_000,
  });
}

export function useVMEvents(id: string) {
  return useQuery(vmEventsQuery(useApiClient(), id));
}

function refreshVm(queryClient: QueryClient, client: ApiClient, id: string) {
  return Promise.all([
    queryClient.invalidateQueries({ queryKey: [client.prefix, "vm", id] }),
    queryClient.invalidateQueries({ queryKey: [client.prefix, "vms"] }),
  ]);
}

export type PowerAction = "start" | "stop" | "forceStop";
export type PowerResponse = { success: true; vm: VmView; request: { id: string; status: string } };

export function requestPowerAction(client: ApiClient, id: string, action: PowerAction): Promise<PowerResponse> {
  const path = action === "start" ? "/start" : action === "stop" ? "/stop" : "/stop?force=true";
  return client.request<PowerResponse>(vmPath(id) + path, { method: "POST" });
}

export function usePowerAction(id: string) {
  const client = useApiClient();
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (action: PowerAction) => requestPowerAction(client, id, action),
    onSuccess: (res) => queryClient.setQueryData(vmQuery(client, id).queryKey, res.vm),
    onSettled: () => refreshVm(queryClient, client, id),
  });
}

export function resetVMState(
  client: ApiClient,
  id: string,
  force: boolean,
  reason: string,
): Promise<ResetStateResponse> {
  const trimmed = reason.trim();
  return client.request<ResetStateResponse>(`${vmPath(id)}/reset_state${force ? "?force=true" : ""}`, {
    method: "POST",
    json: trimmed ? { reason: trimmed } : {},
  });
}

export function useResetVMState(id: string) {
  const client = useApiClient();
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: ({ force, reason }: { force: boolean; reason: string }) => resetVMState(client, id, force, reason),
    onSettled: () => refreshVm(queryClient, client, id),
  });
}

export function clearVMFlag(client: ApiClient, id: string): Promise<{ vm: VmView }> {
  return client.request<{ vm: VmView }>(`${vmPath(id)}/clear_flag`, { method: "POST" });
}

export function useClearVMFlag(id: string) {
  const client = useApiClient();
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: () => clearVMFlag(client, id),
    onSuccess: (res) => {
      if (res?.vm) queryClient.setQueryData(vmQuery(client, id).queryKey, res.vm);
    },
    onSettled: () => refreshVm(queryClient, client, id), // the VM's key prefixes its events
  });
}
