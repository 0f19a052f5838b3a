// The console's browser messages checked without zod (protocol/lean-check.ts), for the agent's host
// view: each accepts and returns what console.ts's schema of the same name does
// (test/protocol/server-frames.test.ts holds the two together).
import { CONSOLE_MODES, CONSOLE_TYPES } from "./console-frames.ts";
import type { ConsoleClientMessage as ClientMessage, ConsoleRequest as Request } from "./console.ts";
import { boolean, byType, literal, number, object, oneOf, optional, string, type Check } from "./lean-check.ts";

/** console.ts's ConsoleRequest. */
export const ConsoleRequest: Check<Request> = object(
  { mode: oneOf(CONSOLE_MODES), force: optional(boolean), type: optional(oneOf(CONSOLE_TYPES)) },
  { strict: true },
);
export const CONSOLE_REQUEST_RULE =
  'expected {mode: "rw" | "ro", force?: boolean, type?: "serial" | "vnc"} and no other key';

/** console.ts's ConsoleClientMessage. */
export const ConsoleClientMessage: Check<ClientMessage> = byType<ClientMessage>({
  hello: object({
    type: literal("hello"),
    ticket: optional(string({ min: 1, max: 200 })),
    resume: optional(string({ min: 1, max: 200 })),
    from: optional(number({ int: true, min: 0 })),
  }),
  ack: object({ type: literal("ack"), offset: number({ int: true, min: 0 }) }),
  take: object({ type: literal("take") }),
});
