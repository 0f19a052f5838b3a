// `qx notifications …`: webhook targets and their deliveries (admin), a thin client of
// /api/notifications.
export type Call = <T>(method: string, path: string, body?: unknown) => Promise<T>;
export type NotificationFlags = { secret?: string; events?: string; format?: string; target?: string };

export const NOTIFICATIONS_USAGE = `  notifications list                     webhook targets (admin)
  notifications add <name> <url> --secret S --events all|vm.stuck,node.offline,… [--format slack]
  notifications test <target-id>         post a test delivery now and show the receiver's answer
  notifications rm <target-id>           delete a target: nothing more is sent to it
  notifications deliveries [--target ID] the last deliveries with their attempts`;

const EVENTS = ["vm.stuck", "vm.repaired", "vm.flagged", "node.offline", "node.online", "node.flagged"];

type Target = { id: string; name: string; url: string; events: string[]; format: string };
type Delivery = {
  id: string;
  targetId: string;
  event: string;
  status: string;
  createdAt: string;
  attempts: { at: string; httpStatus: number | null; error: string | null }[];
};

const lastAnswer = (d: Delivery) => {
  const a = d.attempts.at(-1);
  return !a ? "-" : a.httpStatus !== null ? `HTTP ${a.httpStatus}` : (a.error ?? "-");
};

/** Runs `notifications <action> …`; throws a usage message (exit 2) for a bad one. */
export async function runNotifications(
  call: Call,
  positionals: string[],
  flags: NotificationFlags,
  print: (data: unknown, human: () => string) => void,
  table: (rows: string[][]) => string,
  usageError: (message: string) => Error,
): Promise<void> {
  const [, action, first, second] = positionals;
  const enc = encodeURIComponent;
  switch (action) {
    case "list": {
      const { targets } = await call<{ targets: Target[] }>("GET", "/api/notifications/targets");
      print(targets, () =>
        table([
          ["ID", "NAME", "URL", "FORMAT", "EVENTS"],
          ...targets.map((t) => [t.id, t.name, t.url, t.format, t.events.join(",")]),
        ]),
      );
      return;
    }
    case "add": {
      if (!first || !second) throw usageError("notifications add needs <name> <url>: see qx --help");
      if (!flags.secret)
        throw usageError("notifications add needs --secret (the receiver checks the signature with it)");
      if (!flags.events) throw usageError(`notifications add needs --events all or a list of: ${EVENTS.join(", ")}`);
      const events =
        flags.events === "all"
          ? EVENTS
          : flags.events
              .split(",")
              .map((e) => e.trim())
              .filter(Boolean);
      const { target } = await call<{ target: Target }>("POST", "/api/notifications/targets", {
        name: first,
        url: second,
        secret: flags.secret,
        events,
        ...(flags.format ? { format: flags.format } : {}),
      });
      print(target, () => `target ${target.id} added (${target.events.join(", ")}); its secret is not shown again`);
      return;
    }
    case "test": {
      if (!first) throw usageError("notifications test needs <target-id>");
      const { delivery } = await call<{ delivery: Delivery }>("POST", `/api/notifications/targets/${enc(first)}/test`);
      print(delivery, () => `test delivery ${delivery.id}: ${delivery.status} (${lastAnswer(delivery)})`);
      return;
    }
    case "rm": {
      if (!first) throw usageError("notifications rm needs <target-id>");
      await call("DELETE", `/api/notifications/targets/${enc(first)}`);
      print({ deleted: first }, () => `target ${first} deleted`);
      return;
    }
    case "deliveries": {
      const query = flags.target ? `?target_id=${enc(flags.target)}` : "";
      const { deliveries } = await call<{ deliveries: Delivery[] }>("GET", `/api/notifications/deliveries${query}`);
      print(deliveries, () =>
        table([
          ["ID", "TARGET", "EVENT", "STATUS", "TRIES", "LAST ANSWER", "QUEUED"],
          ...deliveries.map((d) => [
            d.id,
            d.targetId,
            d.event,
            d.status,
            String(d.attempts.length),
            lastAnswer(d),
            d.createdAt,
          ]),
        ]),
      );
      return;
    }
    default:
      throw usageError(`unknown command "notifications ${action ?? ""}": see qx --help`);
  }
}
