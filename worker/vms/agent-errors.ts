// An agent-side failure (from a node's session) as the HTTP error a route answers with.
import type { AgentFailure } from "../request-rows.ts";
import { ApiError } from "../errors.ts";

export function agentFailureError(o: { status: "failed" | "expired"; error: AgentFailure }): ApiError {
  const { code, message } = o.error;
  if (code === "node_offline" || code === "agent_disconnected") return new ApiError(503, "node_offline", message);
  if (code === "agent_timeout" || code === "session_lost" || o.status === "expired")
    return new ApiError(504, "agent_timeout", message);
  if (code === "log_not_found") return new ApiError(404, "log_not_found", message);
  if (code === "vm_not_found")
    return new ApiError(404, "vm_not_found", `the hypervisor does not know this domain: ${message}`);
  if (code === "not_allowed") return new ApiError(409, "invalid_state", message);
  if (code === "overridden") return new ApiError(409, "overridden", message);
  return new ApiError(502, "agent_error", `${code}: ${message}`);
}
