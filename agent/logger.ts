// Structured JSON logs (pino) on stdout. Secrets never reach them: known fields are redacted and
// the code never logs tokens, credentials or Authorization headers in the first place.
import { pino, type Logger } from "pino";

export type { Logger };

const SECRET_FIELDS = ["token", "joinToken", "credential", "authorization", "password"];

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { svc: "quantix-agent" },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        ...SECRET_FIELDS,
        ...SECRET_FIELDS.map((f) => `*.${f}`),
        "headers.authorization",
        "req.headers.authorization",
      ],
      censor: "[redacted]",
    },
  });
}
