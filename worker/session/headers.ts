// Headers through which the Worker tells a node's session what it has already checked: which node an
// authenticated agent socket is, and which VM a viewer's authorized follow socket is for.
/** The node an authenticated agent upgrade or poll belongs to. */
export const NODE_ID_HEADER = "x-quantix-node-id";
/** …and over how long its agent should spread its reconnects after losing the link (see Welcome). */
export const RECONNECT_SPREAD_HEADER = "x-quantix-reconnect-spread";
/** …and, on its liveness socket's upgrade (liveness-watch.ts), which of its links the socket watches. */
export const WATCH_CONN_HEADER = "x-quantix-watch-conn";
/** …and the name of the shard it goes to (its last signs of life are written under that name). */
export const WATCH_SHARD_HEADER = "x-quantix-watch-shard";
/** Headers of a viewer's follow upgrade, set by the Worker after authorizing it. */
export const FOLLOW_HEADERS = {
  vmId: "x-quantix-follow-vm",
  vmName: "x-quantix-follow-name",
  nodeId: "x-quantix-follow-node",
  subprotocol: "x-quantix-follow-subprotocol",
  /** the API token the follow was opened with: its revocation closes the follow */
  tokenId: "x-quantix-follow-token",
} as const;

/** Headers of a browser's console upgrade, set by the Worker after finding the VM on this node
 *  (the socket's own hello then carries the ticket that authorizes it). */
export const CONSOLE_HEADERS = { vmId: "x-quantix-console-vm", vmName: "x-quantix-console-name" } as const;

/** welcome.reconnectSpreadMs as the Worker passed it, if it is one. */
export const validSpread = (ms: number | undefined) =>
  ms !== undefined && Number.isInteger(ms) && ms >= 0 && ms <= 600_000 ? ms : undefined;
