// The one HTTP client of the dashboard and the host view: JSON in and out, the token only ever in
// the Authorization header, `{success:false,error}` bodies turned into ApiError, 401 reported to the session.
import type { ErrorBody as ApiErrorBody } from "../../../protocol/rest.ts";

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export type RequestOptions = {
  method?: "GET" | "POST" | "DELETE";
  json?: unknown;
  signal?: AbortSignal;
  /** use this token instead of the session's (sign-in checks a token before keeping it; "" sends
   *  none, as the Access sign-in check does) */
  token?: string;
};

export type ApiClient = {
  /** "/api" against the control plane, "/api/v1" against an agent's local API */
  readonly prefix: string;
  request<T>(path: string, options?: RequestOptions): Promise<T>;
  /** The session's token, for the one place a header cannot carry it: a WebSocket's subprotocols. */
  token(): string | null;
};

export type ApiClientConfig = {
  prefix: string;
  getToken: () => string | null;
  onUnauthorized: () => void;
};

export function createApiClient(config: ApiClientConfig): ApiClient {
  return {
    prefix: config.prefix,
    token: config.getToken,
    async request<T>(path: string, options: RequestOptions = {}): Promise<T> {
      const headers = new Headers({ accept: "application/json" });
      const token = options.token ?? config.getToken();
      if (token) headers.set("authorization", `Bearer ${token}`);
      let body: string | undefined;
      if (options.json !== undefined) {
        headers.set("content-type", "application/json");
        body = JSON.stringify(options.json);
      }
      let res: Response;
      try {
        res = await fetch(config.prefix + path, {
          method: options.method ?? "GET",
          headers,
          body,
          signal: options.signal,
        });
      } catch (err) {
        if ((err as Error).name === "AbortError") throw err;
        throw new ApiError(0, "network_error", "The server could not be reached.");
      }
      const text = await res.text();
      let data: unknown = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        // not JSON: handled below
      }
      if (!res.ok) {
        const error = (data as Partial<ApiErrorBody> | null)?.error;
        const apiError = new ApiError(
          res.status,
          error?.code ?? `http_${res.status}`,
          error?.message ?? `The server answered ${res.status} ${res.statusText}.`,
        );
        // Only the session's own token being refused signs out; a token under test just fails.
        if (res.status === 401 && options.token === undefined) config.onUnauthorized();
        throw apiError;
      }
      if (data === null && text)
        throw new ApiError(res.status, "bad_response", "The server answered with something that is not JSON.");
      return data as T;
    },
  };
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
