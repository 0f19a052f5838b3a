// The VM's events, newest first: who did what, from which state to which, when.
import { Notice, Spinner, tableClass, tdClass, thClass } from "../../../components/ui/panel.tsx";
import { formatDateTime } from "../../../lib/format.ts";
import { useVMEvents } from "../api/vm.ts";

export function EventsTrail({ vmId }: { vmId: string }) {
  const events = useVMEvents(vmId);
  if (events.error) return <Notice tone="error">Could not load events: {events.error.message}</Notice>;
  if (events.isPending) return <Spinner />;
  if (events.data.length === 0) return <div className="px-3 py-4 text-[13px] text-zinc-500">No events yet.</div>;
  return (
    <table className={tableClass} data-testid="events-trail">
      <thead>
        <tr>
          <th className={thClass}>When</th>
          <th className={thClass}>Who</th>
          <th className={thClass}>Action</th>
          <th className={thClass}>State</th>
          <th className={thClass}>Source</th>
          <th className={thClass}>Message</th>
        </tr>
      </thead>
      <tbody>
        {events.data.map((e, i) => (
          <tr key={`${e.at}-${i}`} data-event-action={e.action}>
            <td className={`${tdClass} whitespace-nowrap tabular-nums`}>{formatDateTime(e.at)}</td>
            <td className={tdClass}>{e.actor}</td>
            <td className={`${tdClass} font-medium`}>{e.action}</td>
            <td className={`${tdClass} whitespace-nowrap`}>{e.fromState || e.toState ? `${e.fromState ?? "—"} → ${e.toState ?? "—"}` : ""}</td>
            <td className={tdClass}>{e.source ?? ""}</td>
            <td className={`${tdClass} text-zinc-600 dark:text-zinc-400`}>{e.message ?? ""}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
