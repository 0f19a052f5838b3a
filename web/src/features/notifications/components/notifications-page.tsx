// Notification targets (admin): add a webhook (its secret taken once), send a test, delete; and
// the last deliveries with their attempts.
import { useState, type FormEvent } from "react";
import { Badge } from "../../../components/ui/badge.tsx";
import { Button } from "../../../components/ui/button.tsx";
import { ConfirmDialog } from "../../../components/ui/dialog.tsx";
import {
  ActionsHeader,
  inputClass,
  Notice,
  PageHeader,
  Panel,
  Spinner,
  tableClass,
  tdClass,
  thClass,
} from "../../../components/ui/panel.tsx";
import { useToast } from "../../../components/ui/toast.tsx";
import { errorMessage } from "../../../lib/api-client.ts";
import { formatDateTime } from "../../../lib/format.ts";
import {
  NOTIFICATION_EVENTS,
  useCreateTarget,
  useDeleteTarget,
  useDeliveries,
  useTargets,
  useTestTarget,
  type DeliveryView,
  type NotificationEvent,
  type TargetView,
} from "../api/notifications.ts";

const statusTone = { delivered: "green", pending: "amber", failed: "red", cancelled: "zinc" } as const;

export function NotificationsPage() {
  const targets = useTargets();
  const deliveries = useDeliveries();
  const remove = useDeleteTarget();
  const test = useTestTarget();
  const toast = useToast();
  const [deleting, setDeleting] = useState<TargetView | null>(null);
  const names = new Map((targets.data ?? []).map((t) => [t.id, t.name]));

  const sendTest = (t: TargetView) =>
    test.mutate(t.id, {
      onSuccess: ({ delivery }) => {
        const last = delivery.attempts.at(-1);
        if (delivery.status === "delivered") toast.success(`${t.name} answered ${last?.httpStatus ?? "2xx"}.`);
        else toast.error(`${t.name}: ${last?.error ?? "not delivered"}`);
      },
      onError: (err) => toast.error(`Could not send the test: ${errorMessage(err)}`),
    });

  return (
    <div className="space-y-3">
      <PageHeader title="Notifications" />
      <NewTargetForm />
      {targets.error && <Notice tone="error">Could not list targets: {targets.error.message}</Notice>}
      <Panel className="overflow-x-auto">
        {targets.isPending ? (
          <Spinner />
        ) : !targets.data?.length ? (
          <div className="px-3 py-6 text-center text-[13px] text-zinc-500 dark:text-zinc-400">
            No targets yet: nothing is sent.
          </div>
        ) : (
          <table className={tableClass} data-testid="targets-table">
            <thead>
              <tr>
                <th className={thClass}>Name</th>
                <th className={thClass}>URL</th>
                <th className={thClass}>Events</th>
                <th className={thClass}>Format</th>
                <th className={thClass}>Created</th>
                <ActionsHeader />
              </tr>
            </thead>
            <tbody>
              {targets.data.map((t) => (
                <tr key={t.id} data-target-name={t.name}>
                  <td className={`${tdClass} font-medium`}>{t.name}</td>
                  <td className={`${tdClass} max-w-[22rem] truncate font-mono text-[12px]`} title={t.url}>
                    {t.url}
                  </td>
                  <td className={tdClass}>{t.events.join(", ")}</td>
                  <td className={tdClass}>{t.format}</td>
                  <td className={tdClass}>{formatDateTime(t.createdAt)}</td>
                  <td className={`${tdClass} space-x-1 text-right whitespace-nowrap`}>
                    <Button
                      tone="ghost"
                      onClick={() => sendTest(t)}
                      disabled={test.isPending}
                      data-testid="target-test"
                    >
                      Send test
                    </Button>
                    <Button tone="ghost" className="text-red-700 dark:text-red-400" onClick={() => setDeleting(t)}>
                      Delete
                    </Button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Panel>
      <h2 className="pt-2 text-[14px] font-semibold">Last deliveries</h2>
      {deliveries.error && <Notice tone="error">Could not list deliveries: {deliveries.error.message}</Notice>}
      <Panel className="overflow-x-auto">
        {deliveries.isPending ? <Spinner /> : <DeliveriesTable rows={deliveries.data ?? []} names={names} />}
      </Panel>
      <ConfirmDialog
        open={deleting !== null}
        title={`Delete target ${deleting?.name ?? ""}?`}
        confirmLabel="Delete"
        tone="danger"
        busy={remove.isPending}
        onConfirm={() =>
          deleting &&
          remove.mutate(deleting.id, {
            onSuccess: () => toast.success(`Target ${deleting.name} deleted.`),
            onError: (err) => toast.error(`Could not delete: ${errorMessage(err)}`),
            onSettled: () => setDeleting(null),
          })
        }
        onCancel={() => setDeleting(null)}
      >
        <p>Nothing more is sent to it, including deliveries still waiting for a retry.</p>
      </ConfirmDialog>
    </div>
  );
}

function DeliveriesTable({ rows, names }: { rows: DeliveryView[]; names: Map<string, string> }) {
  if (!rows.length)
    return <div className="px-3 py-6 text-center text-[13px] text-zinc-500 dark:text-zinc-400">Nothing sent yet.</div>;
  return (
    <table className={tableClass} data-testid="deliveries-table">
      <thead>
        <tr>
          <th className={thClass}>Queued</th>
          <th className={thClass}>Target</th>
          <th className={thClass}>Event</th>
          <th className={thClass}>Status</th>
          <th className={thClass}>Attempts</th>
          <th className={thClass}>Last answer</th>
          <th className={thClass}>Message</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((d) => (
          <tr key={d.id} data-delivery-event={d.event}>
            <td className={tdClass}>{formatDateTime(d.createdAt)}</td>
            <td className={tdClass}>{names.get(d.targetId) ?? "(deleted)"}</td>
            <td className={`${tdClass} font-mono text-[12px]`}>{d.event}</td>
            <td className={tdClass}>
              <Badge tone={statusTone[d.status]}>{d.status}</Badge>
              {d.status === "pending" && d.nextAttemptAt && (
                <span className="ml-1 text-[12px] text-zinc-500 dark:text-zinc-400">
                  next {formatDateTime(d.nextAttemptAt)}
                </span>
              )}
            </td>
            <td className={tdClass}>{d.attempts.length}</td>
            <td className={`${tdClass} max-w-[16rem] truncate`} title={d.lastError ?? undefined}>
              {d.lastError ?? (d.lastStatus !== null ? `HTTP ${d.lastStatus}` : "—")}
            </td>
            <td className={`${tdClass} max-w-[24rem] truncate`} title={d.payload?.message ?? d.payload?.text}>
              {d.payload?.message ?? d.payload?.text ?? ""}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function NewTargetForm() {
  const create = useCreateTarget();
  const toast = useToast();
  const [name, setName] = useState("");
  const [url, setUrl] = useState("");
  const [secret, setSecret] = useState("");
  const [format, setFormat] = useState<"json" | "slack">("json");
  const [events, setEvents] = useState<Set<NotificationEvent>>(new Set(NOTIFICATION_EVENTS));

  const toggle = (e: NotificationEvent) =>
    setEvents((prev) => {
      const next = new Set(prev);
      if (next.has(e)) next.delete(e);
      else next.add(e);
      return next;
    });

  const submit = (e: FormEvent) => {
    e.preventDefault();
    create.mutate(
      { name: name.trim(), url: url.trim(), secret, events: [...events], format },
      {
        onSuccess: ({ target }) => {
          toast.success(`Target ${target.name} added. Its secret is not shown again.`);
          setName("");
          setUrl("");
          setSecret("");
        },
        onError: (err) => toast.error(`Could not add the target: ${errorMessage(err)}`),
      },
    );
  };

  return (
    <Panel className="px-3 py-3">
      <form onSubmit={submit} className="flex flex-wrap items-end gap-2" data-testid="new-target">
        <input
          className={`${inputClass} w-40`}
          placeholder="name"
          aria-label="Target name"
          value={name}
          onChange={(e) => setName(e.target.value)}
          maxLength={100}
          required
        />
        <input
          className={`${inputClass} w-80`}
          placeholder="https://hooks.example.com/quantix"
          aria-label="Target URL"
          value={url}
          onChange={(e) => setUrl(e.target.value)}
          required
        />
        <input
          className={`${inputClass} w-48`}
          type="password"
          autoComplete="new-password"
          placeholder="signing secret"
          aria-label="Signing secret"
          value={secret}
          onChange={(e) => setSecret(e.target.value)}
          required
        />
        <select
          className={inputClass}
          value={format}
          onChange={(e) => setFormat(e.target.value as "json" | "slack")}
          aria-label="Format"
        >
          <option value="json">JSON</option>
          <option value="slack">Slack</option>
        </select>
        <Button
          type="submit"
          tone="primary"
          disabled={create.isPending || !name.trim() || !url.trim() || !secret || events.size === 0}
        >
          Add target
        </Button>
        <div className="flex w-full flex-wrap gap-3 text-[13px]">
          {NOTIFICATION_EVENTS.map((e) => (
            <label key={e} className="flex items-center gap-1">
              <input type="checkbox" checked={events.has(e)} onChange={() => toggle(e)} />{" "}
              <span className="font-mono text-[12px]">{e}</span>
            </label>
          ))}
        </div>
      </form>
    </Panel>
  );
}
