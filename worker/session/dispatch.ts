// What the Worker asks a node's session to do, and what comes back: one shape per kind of command
// (power action, state query, log read), each outcome carrying that kind's parsed agent answer.
import type { LogsResult, PowerResult, StateResult } from "../../protocol/wire.ts";
import type { PowerKind } from "../vm-state.ts";
import type { AgentFailure, RequestRow } from "../request-rows.ts";

type Target = { id: string; vmId: string; name: string };

/** A query whose request row does not exist yet: the session writes it, whole, once it has ended. */
export type NewRequest = { nodeId: string; params: Record<string, unknown>; requestedBy: string; createdAt: number };

/** A power action; its `requests` row (queued) exists already, written with the VM's transition. */
export type PowerDispatch = Target & {
  kind: PowerKind;
  /** the generation the transition set, and the state to go back to if it is never carried out */
  vmGeneration: number;
  prevState: string;
  /** resolve only with the final outcome (else as soon as the command is on the wire) */
  wait: boolean;
};

/** A route's vm.state; with `excerptLines` the agent also sends the log's last lines (for a reset's event). */
export type StateDispatch = Target & { kind: "vm.state"; excerptLines?: number; newRequest: NewRequest };

/** A route's vm.logs; with `keepAsLastKnown` its answer becomes the VM's last-known log. */
export type LogsDispatch = Target & {
  kind: "vm.logs";
  lines: number;
  keepAsLastKnown: boolean;
  newRequest: NewRequest;
};

export type QueryDispatch = StateDispatch | LogsDispatch;

type Failed = { status: "failed" | "expired"; error: AgentFailure };

export type PowerOutcome = { status: "sent" } | { status: "done"; result: PowerResult } | Failed;
/** A state query comes back with its request row, final, for the caller to write with its own D1
 *  write (calls.ts), so the object writes nothing as it answers; so does a query that never left.
 *  A log read's row is kept by the session with the log it read. */
type WithRow = { row?: RequestRow };
export type StateOutcome = ({ status: "done"; result: StateResult; at: number } | Failed) & WithRow;
export type LogsOutcome = ({ status: "done"; result: LogsResult; text: string; at: number } | Failed) & WithRow;

/** A failure before any answer (no link, session lost), which every kind of outcome can be. */
export const failed = (code: string, message: string): Failed => ({ status: "failed", error: { code, message } });
