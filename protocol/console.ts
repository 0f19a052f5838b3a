// A VM's console: the browser socket's messages as zod schemas, with the limits and the binary frames
// of console-frames.ts (re-exported here).
import { z } from "zod";
import { CONSOLE_MODES, CONSOLE_TYPES } from "./console-frames.ts";

export * from "./console-frames.ts";

export const ConsoleMode = z.enum(CONSOLE_MODES);
export type ConsoleMode = z.infer<typeof ConsoleMode>;

/** What a console shows: the serial port's text, or the graphical display over RFB (VNC). */
export const ConsoleType = z.enum(CONSOLE_TYPES);
export type ConsoleType = z.infer<typeof ConsoleType>;

/** `POST /api/vms/:id/console` (`type` defaults to serial) */
export const ConsoleRequest = z
  .object({ mode: ConsoleMode, force: z.boolean().optional(), type: ConsoleType.optional() })
  .strict();
export type ConsoleRequest = z.infer<typeof ConsoleRequest>;

/** Browser → control plane (text; input goes as binary frames). */
export const ConsoleClientMessage = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("hello"),
    ticket: z.string().min(1).max(200).optional(),
    resume: z.string().min(1).max(200).optional(),
    from: z.number().int().min(0).optional(),
  }),
  z.object({ type: z.literal("ack"), offset: z.number().int().min(0) }),
  z.object({ type: z.literal("take") }),
]);
export type ConsoleClientMessage = z.infer<typeof ConsoleClientMessage>;
