// A token session shared by the dashboard and the host view: the token kept in localStorage, one
// API client that reads it, one query cache, and sign-out on any 401.
import { useCallback, useMemo, useRef, useState } from "react";
import { QueryClient } from "@tanstack/react-query";
import { ApiError, createApiClient, type ApiClient } from "./api-client.ts";
import { readToken, writeToken } from "./token-store.ts";

export type TokenSession = {
  token: string | null;
  client: ApiClient;
  queryClient: QueryClient;
  signIn: (token: string) => void;
  signOut: () => void;
};

/** Client errors (4xx) will not change on retry; network trouble and 5xx get two more tries. */
const retry = (failures: number, err: unknown) => !(err instanceof ApiError && err.status >= 400 && err.status < 500) && failures < 2;

export function useTokenSession(storageKey: string, prefix: string): TokenSession {
  const [token, setToken] = useState(() => readToken(storageKey));
  const tokenRef = useRef(token);
  tokenRef.current = token;
  const queryClient = useMemo(() => new QueryClient({ defaultOptions: { queries: { retry }, mutations: { retry: false } } }), []);
  const signOut = useCallback(() => {
    writeToken(storageKey, null);
    tokenRef.current = null;
    setToken(null);
    queryClient.clear();
  }, [storageKey, queryClient]);
  const signIn = useCallback(
    (next: string) => {
      writeToken(storageKey, next);
      tokenRef.current = next;
      setToken(next);
    },
    [storageKey],
  );
  const client = useMemo(() => createApiClient({ prefix, getToken: () => tokenRef.current, onUnauthorized: signOut }), [prefix, signOut]);
  return { token, client, queryClient, signIn, signOut };
}
