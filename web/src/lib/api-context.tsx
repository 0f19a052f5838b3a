// Hands the API client to feature components, so the same VM list and Logs tab run against the
// control plane (dashboard) and against an agent's local API (host view).
import { createContext, useContext, type ReactNode } from "react";
import type { ApiClient } from "./api-client.ts";

const ApiClientContext = createContext<ApiClient | null>(null);

export function ApiClientProvider({ client, children }: { client: ApiClient; children: ReactNode }) {
  return <ApiClientContext.Provider value={client}>{children}</ApiClientContext.Provider>;
}

export function useApiClient(): ApiClient {
  const client = useContext(ApiClientContext);
  if (!client) throw new Error("useApiClient outside ApiClientProvider");
  return client;
}
