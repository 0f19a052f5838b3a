// Fetchers, query options and hooks for nodes: list, enroll (join token), rotate, update the agent,
// delete; and the agent version this control plane serves.
import { queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { INSTALL_MANIFEST_PATH, InstallManifest } from "../../../../../protocol/install.ts";
import type { NodeUpdateResponse, NodeView } from "../../../../../protocol/rest.ts";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

/** The answer to create / rotate: the join token and the one-line install command, shown once. */
export type Enrollment = { node: NodeView; joinToken: string; installCommand: string };

export function nodesQuery(client: ApiClient) {
  return queryOptions({
    queryKey: [client.prefix, "nodes"],
    queryFn: ({ signal }) => client.request<{ nodes: NodeView[] }>("/nodes", { signal }).then((r) => r.nodes),
    refetchInterval: 10_000,
  });
}

export function useNodes() {
  return useQuery(nodesQuery(useApiClient()));
}

function useNodeMutation<TArg>(
  run: (client: ApiClient, arg: TArg) => Promise<Enrollment | NodeUpdateResponse | { success: true }>,
) {
  const client = useApiClient();
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (arg: TArg) => run(client, arg),
    onSettled: () => queryClient.invalidateQueries({ queryKey: nodesQuery(client).queryKey }),
  });
}

export function useCreateNode() {
  return useNodeMutation((client, name: string) =>
    client.request<Enrollment>("/nodes", { method: "POST", json: { name } }),
  );
}

export function useRotateNodeToken() {
  return useNodeMutation((client, id: string) =>
    client.request<Enrollment>(`/nodes/${encodeURIComponent(id)}/rotate_token`, { method: "POST" }),
  );
}

/** The agent bundle this control plane serves (none where it serves none, e.g. the host view). */
export function useServedAgent() {
  return useQuery({
    queryKey: ["served-agent"],
    queryFn: async ({ signal }) => {
      const res = await fetch(INSTALL_MANIFEST_PATH, { signal });
      if (!res.ok) return null;
      const parsed = InstallManifest.safeParse(await res.json().catch(() => null));
      return parsed.success ? parsed.data : null;
    },
    retry: false,
    staleTime: 60_000,
  });
}

export function useUpdateNodeAgent() {
  return useNodeMutation((client, id: string) =>
    client.request<NodeUpdateResponse>(`/nodes/${encodeURIComponent(id)}/update`, { method: "POST" }),
  );
}

export function useDeleteNode() {
  return useNodeMutation((client, id: string) =>
    client.request<{ success: true }>(`/nodes/${encodeURIComponent(id)}`, { method: "DELETE" }),
  );
}

/** The command that runs an agent from a checkout of this repository (development). */
export function checkoutAgentCommand(origin: string, joinToken: string, nodeName: string): string {
  const stateDir = `./.state/${nodeName.replace(/[^A-Za-z0-9._-]/g, "_")}`;
  return `npm run agent -- --server ${origin} --token ${joinToken} --state-dir ${stateDir}`;
}
