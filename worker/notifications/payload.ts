// What a notification says and how it is signed: the event names, the JSON (or Slack) body and the
// HMAC-SHA256 signature receivers check.
import { z } from "zod";

export const NOTIFICATION_EVENTS = [
  "vm.stuck",
  "vm.repaired",
  "vm.flagged",
  "node.offline",
  "node.online",
  "node.flagged",
] as const;
export const NotificationEvent = z.enum(NOTIFICATION_EVENTS);
export type NotificationEvent = z.infer<typeof NotificationEvent>;
/** What the dashboard's test button (and `qx notifications test`) sends. */
export const TEST_EVENT = "test";

export const NotificationFormat = z.enum(["json", "slack"]);
export type NotificationFormat = z.infer<typeof NotificationFormat>;

export const HEADER = {
  event: "X-Quantix-Event",
  delivery: "X-Quantix-Delivery",
  signature: "X-Quantix-Signature",
} as const;

export type Named = { id: string; name: string } | null;
export type NotificationPayload = { id: string; event: string; at: string; node: Named; vm: Named; message: string };

/** Text as Slack shows it literally: `&`, `<` and `>` are control characters of Slack's markup
 *  (`<!channel>`, `<mailto:a|b>`), so a host's text must never carry them raw. An `&` is escaped too,
 *  or a name holding `&lt;` would reach Slack as markup's `<`. */
export const slackEscape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** The exact bytes posted: kept with the delivery so every retry is identical. JSON carries every
 *  name and message exactly; the Slack text escapes each of them (names and messages come from
 *  hosts and admins, and a message quotes VM names), and adds no markup of its own. */
export function renderBody(format: NotificationFormat, p: NotificationPayload): string {
  if (format === "json") return JSON.stringify(p);
  const where = [p.node && `node ${slackEscape(p.node.name)}`, p.vm && `VM ${slackEscape(p.vm.name)}`]
    .filter(Boolean)
    .join(", ");
  return JSON.stringify({ text: `[${slackEscape(p.event)}]${where ? ` ${where}:` : ""} ${slackEscape(p.message)}` });
}

const hex = (bytes: ArrayBuffer) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

/** `sha256=<hex HMAC-SHA256 of the raw body keyed with the target's secret>`. */
export async function signature(secret: string, body: string): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return `sha256=${hex(await crypto.subtle.sign("HMAC", key, enc.encode(body)))}`;
}

/** A target must be reached over HTTPS; plain HTTP only on this machine (a local receiver). */
export function targetUrlProblem(raw: string): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "is not a URL";
  }
  if (url.username || url.password) return "must not carry a user name or password";
  if (url.protocol === "https:") return null;
  if (url.protocol !== "http:") return "must be https://";
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const loopback = host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  return loopback ? null : "must be https:// (plain http:// only for a loopback receiver)";
}
