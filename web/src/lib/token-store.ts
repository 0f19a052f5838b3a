// Keeps a sign-in token in localStorage so a reload stays signed in. It never goes into a URL.
export const DASHBOARD_TOKEN_KEY = "qx.token";
export const HOST_CREDENTIAL_KEY = "qx.host.credential";

export function readToken(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

export function writeToken(key: string, token: string | null): void {
  try {
    if (token) localStorage.setItem(key, token);
    else localStorage.removeItem(key);
  } catch {
    // storage unavailable (private mode): the session lasts until reload
  }
}
