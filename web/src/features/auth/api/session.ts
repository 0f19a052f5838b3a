// Who is signed in (`GET /me` → {role, name, stuckAfterMs}, plus `via: "access"` and the email for a
// person signed in through Cloudflare Access), and the check a token passes before it is kept.
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

/** Behind Cloudflare Access the browser is signed in already (Access's cookie): `/me` without a
 *  token says as whom. A 401 means it is not (Access off, or its assertion refused). */
export function accessMeQuery(client: ApiClient) {
  return queryOptions({
    queryKey: [client.prefix, "me", "access"],
    queryFn: () => fetchMe(client, ""),
    staleTime: 60_000,
    retry: false,
  });
}

export function useAccessMe() {
  return useQuery(accessMeQuery(useApiClient()));
}
