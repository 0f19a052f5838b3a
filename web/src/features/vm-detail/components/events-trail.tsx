// The VM's events, newest first: who did what, from which state to which, when; for verified resets
// and repairs also what the control plane expected, what the hypervisor said, the reason typed by
// the user and an excerpt of the VM's log at that moment.
import type { VmEventView } from "../../../../../protocol/rest.ts";
import { Notice, Spinner, tableClass, tdClass, thClass } from "../../../components/ui/panel.tsx";
import { formatDateTime } from "../../../lib/format.ts";
import { useVMEvents } from "../api/vm.ts";

export function EventsTrail({ vmId }: { vmId: string }) {
  const events = useVMEvents(vmId);
  if (events.error) return <Notice tone="error">Could not load events: {events.error.message}</Notice>;
  if (events.isPending) return <Spinner />;
  if (events.data.length === 0)
    return <div className="px-3 py-4 text-[13px] text-zinc-500 dark:text-zinc-400">No events yet.</div>;
  return (
    <table className={tableClass} data-testid="events-trail">
      <thead>
        <tr>
          <th className={thClass}>When</th>
          <th className={thClass}>Who</th>
          <th className={thClass}>Action</th>
          <th className={thClass}>State</th>
          <th className={thClass}>Expected / observed</th>
          <th className={thClass}>Source</th>
          <th className={thClass}>Message</th>
        </tr>
      </thead>
      <tbody>
        {events.data.map((e, i) => (
          <tr key={`${e.at}-${i}`} data-event-action={e.action} className="align-top">
            <td className={`${tdClass} whitespace-nowrap tabular-nums`}>{formatDateTime(e.at)}</td>
            <td className={tdClass}>{e.actor}</td>
            <td className={`${tdClass} font-medium`}>{e.action}</td>
            <td className={`${tdClass} whitespace-nowrap`}>
              {e.fromState || e.toState ? `${e.fromState ?? "—"} → ${e.toState ?? "—"}` : ""}
            </td>
            <td className={`${tdClass} whitespace-nowrap`} data-testid="event-verification">
              <Verification event={e} />
            </td>
            <td className={tdClass}>{e.source ?? ""}</td>
            <td className={`${tdClass} max-w-[36rem] text-zinc-600 dark:text-zinc-400`}>
              {e.message ?? ""}
              {e.reason && (
                <div className="mt-0.5 text-zinc-800 dark:text-zinc-200" data-testid="event-reason">
                  Reason: {e.reason}
                </div>
              )}
              {e.logExcerpt && (
                <details className="mt-1" data-testid="event-log-excerpt">
                  <summary className="cursor-pointer text-[12px] text-cyan-700 dark:text-cyan-400">
                    Log excerpt ({countLines(e.logExcerpt) === 1 ? "1 line" : `${countLines(e.logExcerpt)} lines`})
                  </summary>
                  <pre className="mt-1 max-h-64 overflow-auto rounded border border-zinc-200 bg-zinc-50 p-2 font-mono text-[11px] whitespace-pre text-zinc-800 dark:border-zinc-800 dark:bg-zinc-950 dark:text-zinc-200">
                    {e.logExcerpt}
                  </pre>
                </details>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Verification({ event }: { event: VmEventView }) {
  if (!event.expectedState && !event.observedState) return null;
  const agrees = event.expectedState && event.observedState && event.expectedState === event.observedState;
  return (
    <span className="text-[12px]">
      <span className="text-zinc-500 dark:text-zinc-400">expected</span> {event.expectedState ?? "—"}
      <span className="text-zinc-500 dark:text-zinc-400"> · hypervisor </span>
      {event.observedState ? (
        <span className={agrees ? "" : "font-semibold text-amber-700 dark:text-amber-400"}>{event.observedState}</span>
      ) : (
        <span className="text-zinc-500 dark:text-zinc-400 italic">not asked</span>
      )}
    </span>
  );
}

function countLines(text: string): number {
  return text.replace(/\n$/, "").split("\n").length;
}
