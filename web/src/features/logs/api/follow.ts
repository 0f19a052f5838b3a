// Live follow of a VM's QEMU log (`tail -F` on the host, relayed by the node's Durable Object) over
// `GET /api/vms/:id/logs/follow`. The token travels as a WebSocket subprotocol, never in the URL.
// Reconnects politely (full-jitter backoff, slower while the node is offline) and says when the
// server cannot follow at all, so the Logs tab falls back to auto-refresh.
import { useEffect, useState } from "react";
import {
  FOLLOW_CLOSE_NODE_OFFLINE,
  FOLLOW_STATUSES,
  FOLLOW_SUBPROTOCOL,
  FOLLOW_TOKEN_PREFIX,
  type FollowMessage,
  type FollowStatus,
} from "../../../../../protocol/api.ts";
import { ApiError } from "../../../lib/api-client.ts";
import { useApiClient } from "../../../lib/api-context.tsx";

export type FollowPhase =
  | "connecting"
  | "following"
  | "reconnecting" // link lost; next try at retryAt
  | "offline" // the VM's node is offline; next try at retryAt
  | "ended" // the server stopped the follow
  | "unavailable" // this server cannot follow logs: auto-refresh instead
  | "failed"; // refused for good (role, unknown VM, ...)

/** New text, in order, since the agent started watching (at the end of the file, like `tail -F`). */
export type LiveChunk = { text: string };

export type FollowState = {
  phase: FollowPhase;
  retryAt: number | null;
  /** What last happened to the file: rotated, truncated, appeared, missing. */
  lastEvent: { status: FollowStatus; at: number } | null;
  error: { code: string; message: string } | null;
  chunks: LiveChunk[];
  /** When the server last confirmed following (each (re)connect): the live text starts afresh
   *  there, and the snapshot is read again to close the gap. */
  followingSince: number | null;
};

const IDLE: FollowState = {
  phase: "connecting",
  retryAt: null,
  lastEvent: null,
  error: null,
  chunks: [],
  followingSince: null,
};

/** Live text kept on the page, like one log answer (at most 8 MiB); older chunks drop first. */
const MAX_LIVE_CHARS = 8 * 1024 * 1024;
const RETRY_BASE_MS = 1_000;
const RETRY_CAP_MS = 30_000;
const OFFLINE_RETRY_MIN_MS = 5_000;
/** A link that stayed up this long resets the backoff. */
const STABLE_MS = 10_000;
/** Connections refused before they opened, in a row, before giving up. */
const MAX_FAILED_OPENS = 5;

const UNAVAILABLE_CODE = /unavailable|unsupported|not_supported|not_implemented/;
const TRANSIENT_CODES = new Set(["node_offline", "agent_timeout", "internal", "expired"]);

export function followSocketUrl(location: { protocol: string; host: string }, path: string): string {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${path}`;
}

export function parseFollowMessage(data: string): FollowMessage | null {
  let msg: unknown;
  try {
    msg = JSON.parse(data);
  } catch {
    return null;
  }
  if (!msg || typeof msg !== "object") return null;
  const m = msg as Record<string, unknown>;
  if (m.type === "append" && typeof m.text === "string") return { type: "append", text: m.text };
  if (m.type === "status" && (FOLLOW_STATUSES as readonly unknown[]).includes(m.status))
    return { type: "status", status: m.status as FollowStatus };
  if (m.type === "error" && typeof m.code === "string")
    return { type: "error", code: m.code, message: typeof m.message === "string" ? m.message : m.code };
  return null;
}

/** The snapshot followed by the live text, without the overlap: a snapshot read after the watch
 *  began already holds the live text's start. The overlap starts at a line start of `base` and is
 *  the longest suffix of `base` that `live` begins with; none (a gap, or a rotated file) → plain
 *  concatenation. Mismatches end within a few characters, so this stays cheap on big logs. */
export function joinFollowed(base: string, live: string): string {
  if (!live) return base;
  for (let i = Math.max(0, base.length - live.length); i < base.length; i++) {
    if (i > 0 && base.charCodeAt(i - 1) !== 10) continue;
    let j = 0;
    while (i + j < base.length && base.charCodeAt(i + j) === live.charCodeAt(j)) j++;
    if (i + j === base.length) return base + live.slice(j);
  }
  return base + live;
}

function appendChunk(chunks: LiveChunk[], chunk: LiveChunk): LiveChunk[] {
  const next = [...chunks, chunk];
  let total = next.reduce((n, c) => n + c.text.length, 0);
  while (total > MAX_LIVE_CHARS && next.length > 1) total -= next.shift()!.text.length;
  return next;
}

function backoff(attempt: number, min: number): number {
  const ceiling = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** attempt);
  return Math.max(min, Math.round(Math.random() * ceiling));
}

/** Follows `vmId`'s log while `enabled`; turning it off closes the socket and forgets the text. */
export function useLogFollow(vmId: string, enabled: boolean): FollowState {
  const client = useApiClient();
  const [state, setState] = useState<FollowState>(IDLE);

  useEffect(() => {
    setState(IDLE);
    if (!enabled) return;
    const path = `${client.prefix}/vms/${encodeURIComponent(vmId)}/logs/follow`;
    let disposed = false;
    let socket: WebSocket | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let attempt = 0;
    let failedOpens = 0;
    const update = (patch: Partial<FollowState> | ((s: FollowState) => Partial<FollowState>)) =>
      !disposed && setState((s) => ({ ...s, ...(typeof patch === "function" ? patch(s) : patch) }));

    const retry = (phase: "reconnecting" | "offline") => {
      const delay = backoff(attempt++, phase === "offline" ? OFFLINE_RETRY_MIN_MS : 500);
      update({ phase, retryAt: Date.now() + delay });
      timer = setTimeout(connect, delay);
    };
    const fail = (phase: "unavailable" | "failed", error: { code: string; message: string }) =>
      update({ phase, error, retryAt: null });

    function connect() {
      if (disposed) return;
      // Without a token the browser is signed in through Cloudflare Access: its cookie goes along.
      const token = client.token();
      update({ phase: "connecting", retryAt: null });
      const ws = new WebSocket(
        followSocketUrl(window.location, path),
        token ? [FOLLOW_SUBPROTOCOL, FOLLOW_TOKEN_PREFIX + token] : [FOLLOW_SUBPROTOCOL],
      );
      socket = ws;
      let openedAt = 0;
      let errorCode: string | null = null;
      let nodeOffline = false;
      let ended = false;
      ws.onopen = () => {
        openedAt = Date.now();
        failedOpens = 0;
      };
      ws.onmessage = (event) => {
        if (typeof event.data !== "string") return;
        const msg = parseFollowMessage(event.data);
        if (!msg) return;
        const now = Date.now();
        if (msg.type === "append") {
          if (msg.text) update((s) => ({ chunks: appendChunk(s.chunks, { text: msg.text }) }));
        } else if (msg.type === "status") {
          if (msg.status === "following") update({ phase: "following", error: null, followingSince: now, chunks: [] });
          else if (msg.status === "node_offline") {
            nodeOffline = true;
            update({ phase: "offline" });
          } else if (msg.status === "stopped") {
            ended = true;
            update({ phase: "ended" });
          } else update({ lastEvent: { status: msg.status, at: now } });
        } else {
          errorCode = msg.code;
          if (msg.code === "node_offline") nodeOffline = true;
          if (UNAVAILABLE_CODE.test(msg.code)) fail("unavailable", msg);
          else update({ error: msg });
        }
      };
      ws.onclose = (event) => {
        if (disposed || socket !== ws) return;
        socket = null;
        if (openedAt && Date.now() - openedAt > STABLE_MS) attempt = 0;
        if (errorCode && UNAVAILABLE_CODE.test(errorCode)) return;
        if (nodeOffline || event.code === FOLLOW_CLOSE_NODE_OFFLINE) return retry("offline");
        if (errorCode && !TRANSIENT_CODES.has(errorCode)) return update({ phase: "failed", retryAt: null });
        if (ended) return;
        if (openedAt) return retry("reconnecting");
        // Refused before it opened: the browser does not say why, so ask the same route over HTTP.
        void probe();
      };
    }

    async function probe() {
      try {
        await client.request(path.slice(client.prefix.length));
      } catch (err) {
        if (disposed) return;
        if (err instanceof ApiError) {
          if (err.status === 503 && err.code === "node_offline") return retry("offline");
          if (err.status === 404 && err.code !== "vm_not_found")
            return fail("unavailable", { code: err.code, message: "This server has no live log follow." });
          if (err.status === 501 || err.status === 405)
            return fail("unavailable", { code: err.code, message: err.message });
          if (err.status === 401 || err.status === 403 || err.status === 404 || err.status === 409)
            return fail("failed", { code: err.code, message: err.message });
        }
      }
      if (disposed) return;
      // The route exists (426 upgrade required) and yet the socket failed: try again, a few times.
      if (++failedOpens >= MAX_FAILED_OPENS)
        return fail("failed", { code: "connect_failed", message: "The live connection could not be opened." });
      retry("reconnecting");
    }

    connect();
    return () => {
      disposed = true;
      clearTimeout(timer);
      const ws = socket;
      socket = null;
      if (!ws) return;
      ws.onmessage = ws.onclose = null;
      // Closing a socket still connecting makes the browser log an error: let it open, then close.
      if (ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close(1000, "unfollow");
      else if (ws.readyState === WebSocket.OPEN) ws.close(1000, "unfollow");
    };
  }, [client, vmId, enabled]);

  return state;
}
