// Who the signed-in token is (`GET /me` → {role, name, stuckAfterMs}), and the check a token passes before it
// is kept.
import { queryOptions, useQuery } from "@tanstack/react-query";
import type { MeResponse } from "../../../../../protocol/rest.ts";
import type { ApiClient } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

/** `stuckAfterMs` is absent from a control plane older than this dashboard. */
export type Me = Omit<MeResponse, "stuckAfterMs"> & Partial<Pick<MeResponse, "stuckAfterMs">>;

export function fetchMe(client: ApiClient, token?: string): Promise<Me> {
  return client.request<Me>("/me", { token });
}

export function meQuery(client: ApiClient, token: string) {
  return queryOptions({ queryKey: [client.prefix, "me", token], queryFn: () => fetchMe(client), staleTime: 60_000 });
}

export function useMe(token: string) {
  return useQuery(meQuery(useApiClient(), token));
}
