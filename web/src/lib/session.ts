// A token session shared by the dashboard and the host view: the token kept in web storage
// (token-store.ts), one API client that reads it, one query cache, and sign-out on any 401.
import { useCallback, useMemo, useRef, useState } from "react";
import { QueryClient } from "@tanstack/react-query";
import { ApiError, createApiClient, type ApiClient } from "./api-client.ts";
import { readToken, writeToken, type TokenKeeping } from "./token-store.ts";

export type TokenSession = {
  token: string | null;
  client: ApiClient;
  queryClient: QueryClient;
  signIn: (token: string) => void;
  signOut: () => void;
};

/** Client errors (4xx) will not change on retry; network trouble and 5xx get two more tries. */
const retry = (failures: number, err: unknown) =>
  !(err instanceof ApiError && err.status >= 400 && err.status < 500) && failures < 2;

export function useTokenSession(storageKey: string, prefix: string, keeping: TokenKeeping = "local"): TokenSession {
  const [token, setToken] = useState(() => readToken(storageKey, keeping));
  const tokenRef = useRef(token);
  tokenRef.current = token;
  const queryClient = useMemo(
    () => new QueryClient({ defaultOptions: { queries: { retry }, mutations: { retry: false } } }),
    [],
  );
  const signOut = useCallback(() => {
    writeToken(storageKey, null, keeping);
    tokenRef.current = null;
    setToken(null);
    queryClient.clear();
  }, [storageKey, keeping, queryClient]);
  const signIn = useCallback(
    (next: string) => {
      writeToken(storageKey, next, keeping);
      tokenRef.current = next;
      setToken(next);
    },
    [storageKey, keeping],
  );
  const client = useMemo(
    () => createApiClient({ prefix, getToken: () => tokenRef.current, onUnauthorized: signOut }),
    [prefix, signOut],
  );
  return { token, client, queryClient, signIn, signOut };
}
