// The one way agent modules put a frame on the control-plane link, whichever transport carries it.
import type { AgentMessage } from "../../protocol/wire.ts";

/** Puts one frame on the agent's link; false when the link is down. */
export type Send = (msg: AgentMessage) => boolean;
