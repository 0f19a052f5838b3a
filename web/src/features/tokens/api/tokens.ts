// Fetchers, query options and hooks for API tokens (admin): list, create (secret shown once), revoke.
import { queryOptions, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import type { Role } from "../../../../../protocol/api.ts";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

export type TokenView = { id: string; name: string; role: Role; createdAt: string | null; revokedAt: string | null };
export type CreatedToken = { token: string; id: string; name: string; role: Role };

export function tokensQuery(client: ApiClient) {
  return queryOptions({
    queryKey: [client.prefix, "tokens"],
    queryFn: ({ signal }) => client.request<{ tokens: TokenView[] }>("/tokens", { signal }).then((r) => r.tokens),
  });
}

export function useTokens() {
  return useQuery(tokensQuery(useApiClient()));
}

export function useCreateToken() {
  const client = useApiClient();
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (input: { name: string; role: Role }) =>
      client.request<CreatedToken>("/tokens", { method: "POST", json: input }),
    onSettled: () => queryClient.invalidateQueries({ queryKey: tokensQuery(client).queryKey }),
  });
}

export function useRevokeToken() {
  const client = useApiClient();
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      client.request<{ success: true }>(`/tokens/${encodeURIComponent(id)}`, { method: "DELETE" }),
    onSettled: () => queryClient.invalidateQueries({ queryKey: tokensQuery(client).queryKey }),
  });
}
