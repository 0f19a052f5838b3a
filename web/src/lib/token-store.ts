// Keeps a sign-in token in web storage: localStorage so a reload stays signed in (the dashboard), or
// sessionStorage for a token that must not outlive the browser session (the host view). It never
// goes into a URL.
export const DASHBOARD_TOKEN_KEY = "qx.token";
export const HOST_TOKEN_KEY = "qx.host.token";

/** Where a token is kept: "local" survives the browser closing, "session" ends with the tab. */
export type TokenKeeping = "local" | "session";

const storage = (keeping: TokenKeeping) => (keeping === "session" ? sessionStorage : localStorage);

export function readToken(key: string, keeping: TokenKeeping = "local"): string | null {
  try {
    return storage(keeping).getItem(key);
  } catch {
    return null;
  }
}

export function writeToken(key: string, token: string | null, keeping: TokenKeeping = "local"): void {
  try {
    if (token) storage(keeping).setItem(key, token);
    else storage(keeping).removeItem(key);
  } catch {
    // storage unavailable (private mode): the session lasts until reload
  }
}
