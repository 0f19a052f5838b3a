// `?lines=` of every logs route (control plane and agent local API): its bounds and its one parser,
// without zod, which api.ts's LogLinesQuery and the agent's local API both use.
export const LOG_LINES_MIN = 1;
export const LOG_LINES_MAX = 10_000;
export const LOG_LINES_DEFAULT = 100;
export const LOG_LINES_RULE = `lines must be an integer from ${LOG_LINES_MIN} to ${LOG_LINES_MAX}`;

/** The number of lines asked for (absent or empty: the default); null when out of bounds or not digits. */
export function logLinesOf(v: string | undefined): number | null {
  if (v === undefined || v === "") return LOG_LINES_DEFAULT;
  const n = /^\d{1,6}$/.test(v) ? Number(v) : NaN;
  return Number.isInteger(n) && n >= LOG_LINES_MIN && n <= LOG_LINES_MAX ? n : null;
}
