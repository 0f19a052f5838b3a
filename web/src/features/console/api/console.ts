// A VM's serial console: the ticket (`POST <prefix>/vms/:id/console`) and the socket it opens, with
// the shared client doing offsets, acks, resume and paced input.
import { ConsoleClient, type ConsoleState } from "../../../../../protocol/console-client.ts";
import type { ConsoleMode, ConsoleTicketAnswer } from "../../../../../protocol/console.ts";
import type { ApiClient } from "../../../lib/api-client.ts";

export type { ConsoleState };

export type ConsoleHandlers = {
  onOutput: (bytes: Uint8Array) => void;
  onState: (state: ConsoleState) => void;
  onNotice: (message: string) => void;
};

/** Asks for a ticket, then opens the console with it. Throws ApiError when refused (403, 409, 429). */
export async function openConsole(
  api: ApiClient,
  vmId: string,
  mode: ConsoleMode,
  force: boolean,
  handlers: ConsoleHandlers,
): Promise<ConsoleClient> {
  const answer = await api.request<ConsoleTicketAnswer>(`/vms/${encodeURIComponent(vmId)}/console`, {
    method: "POST",
    json: force ? { mode, force } : { mode },
  });
  // The url is a path on this origin: a same-origin socket is all the page's CSP allows.
  const url = new URL(answer.url, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return new ConsoleClient({
    ticket: answer.ticket,
    connect: () => new WebSocket(url),
    onOutput: (bytes) => handlers.onOutput(bytes),
    onState: handlers.onState,
    onNotice: handlers.onNotice,
  });
}

/** What a user reads for each way a console ends. */
export const ENDED_BECAUSE: Record<string, string> = {
  host_offline: "The node's agent went offline. What it showed until then is above.",
  vm_stopped: "The VM is not running (or stopped), so its console closed.",
  taken_over: "Someone else forced this console open elsewhere.",
  idle_timeout: "The console was idle too long.",
  session_limit: "The console reached its longest session time.",
  revoked: "The token or role it was opened with was withdrawn.",
  too_slow: "This page fell too far behind.",
  console_busy: "Another client holds this console on the host (a virsh console?). Open with force to take it over.",
  no_console: "This VM has no serial console the agent can open.",
  needs_websocket: "The node's agent is connected over long-poll, which carries no console.",
  unsupported: "The node's agent is too old for consoles; update it.",
  too_many_viewers: "This console has as many viewers as it allows (8).",
  too_many_consoles: "This node has as many open consoles as it allows (16).",
  bad_hello: "The console's ticket was refused (expired or used); open it again.",
  disconnected: "The connection was lost.",
  error: "The console failed.",
};
