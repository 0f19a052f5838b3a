// libvirt's RPC numbers (virnetprotocol.x, virkeepaliveprotocol.x, remote_protocol.x): programs,
// packet types and statuses, the procedures this client calls, and the error codes callers act on.
// Procedure numbers never change upstream (new ones are appended), so these are safe to pin.

export const REMOTE_PROGRAM = 0x20008086;
export const REMOTE_VERSION = 1;
export const KEEPALIVE_PROGRAM = 0x6b656570;
export const KEEPALIVE_VERSION = 1;
export const KEEPALIVE_PING = 1;
export const KEEPALIVE_PONG = 2;

/** The length word counts itself; then the header of six 4-byte fields. */
export const LENGTH_BYTES = 4;
export const HEADER_BYTES = 24;
/** The largest packet libvirt's daemon sends (VIR_NET_MESSAGE_MAX); anything larger is refused. */
export const MAX_PACKET_BYTES = 16 * 1024 * 1024;
/** The largest stream payload libvirt itself puts in one packet (VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX). */
export const MAX_STREAM_CHUNK = 262_120;

export const PacketType = {
  call: 0,
  reply: 1,
  message: 2,
  stream: 3,
  callWithFds: 4,
  replyWithFds: 5,
  streamHole: 6,
} as const;
export const PacketStatus = { ok: 0, error: 1, continue: 2 } as const;

export const Proc = {
  CONNECT_OPEN: 1,
  CONNECT_CLOSE: 2,
  DOMAIN_CREATE: 9,
  DOMAIN_CREATE_XML: 10,
  DOMAIN_DEFINE_XML: 11,
  DOMAIN_DESTROY: 12,
  DOMAIN_GET_XML_DESC: 14,
  DOMAIN_GET_INFO: 16,
  DOMAIN_LOOKUP_BY_NAME: 23,
  DOMAIN_LOOKUP_BY_UUID: 24,
  DOMAIN_REBOOT: 27,
  DOMAIN_RESUME: 28,
  DOMAIN_SHUTDOWN: 33,
  DOMAIN_SUSPEND: 34,
  CONNECT_GET_HOSTNAME: 59,
  CONNECT_SUPPORTS_FEATURE: 60,
  AUTH_LIST: 66,
  AUTH_POLKIT: 70,
  CONNECT_GET_LIB_VERSION: 157,
  DOMAIN_OPEN_CONSOLE: 201,
  DOMAIN_GET_STATE: 212,
  DOMAIN_UNDEFINE_FLAGS: 231,
  DOMAIN_DESTROY_FLAGS: 234,
  DOMAIN_PM_WAKEUP: 267,
  CONNECT_LIST_ALL_DOMAINS: 273,
  CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY: 316,
  CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY: 317,
  DOMAIN_EVENT_CALLBACK_LIFECYCLE: 318,
  CONNECT_GET_ALL_DOMAIN_STATS: 344,
} as const;
export type ProcName = keyof typeof Proc;

/** remote_protocol.x's bounds on what the daemon may send. */
export const Limits = {
  string: 4 * 1024 * 1024,
  authTypes: 20,
  domainList: 16384,
  domainStats: 262144,
  typedParamString: 524288,
} as const;

export const AuthType = { none: 0, sasl: 1, polkit: 2 } as const;

/** virDrvFeature: the daemon starts its keepalive once asked about this one. */
export const FEATURE_PROGRAM_KEEPALIVE = 10;

/** virDomainEventID */
export const EVENT_ID_LIFECYCLE = 0;

/** virErrorNumber values callers branch on. */
export const ErrorCode = {
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  OPERATION_FAILED: 9,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  AUTH_FAILED: 45,
  OPERATION_INVALID: 55,
  OPERATION_TIMEOUT: 68,
} as const;

/** virErrorDomain values this client raises itself. */
export const ErrorDomain = { RPC: 7, REMOTE: 13, STREAMS: 38 } as const;
