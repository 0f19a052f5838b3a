// A client of libvirt's own RPC protocol, in TypeScript, with no native code: what callers import.
// This folder imports nothing from the rest of the agent, so it could be published on its own.
export {
  DestroyFlags,
  DomainState,
  LibvirtClient,
  LifecycleEventType,
  ListFlags,
  StatsFlags,
  StatsGroup,
  type ConnectOptions,
  type DomainInfo,
  type DomainLike,
  type DomainRef,
  type DomainStatsRecord,
  type LifecycleEvent,
  type Subscription,
} from "./client.ts";
export { LibvirtError } from "./error.ts";
export type { TypedParamValue } from "./procedures.ts";
export { ErrorCode, Proc } from "./protocol.ts";
export { ConsoleStream, type StreamEnd } from "./stream.ts";
export { UnsupportedUriError, resolveUri } from "./uri.ts";
