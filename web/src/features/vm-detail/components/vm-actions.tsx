// Start / Stop / Force stop and the "…" menu with Reset State and Force Reset State, each behind a
// confirmation; toasts carry the server's message. Rendered only for operators and admins.
import { useState } from "react";
import type { VmView } from "../../../../../protocol/rest.ts";
import { canStart, canStop } from "../../../../../protocol/wire.ts";
import { Button } from "../../../components/ui/button.tsx";
import { ConfirmDialog } from "../../../components/ui/dialog.tsx";
import { Menu } from "../../../components/ui/menu.tsx";
import { inputClass } from "../../../components/ui/panel.tsx";
import { useToast } from "../../../components/ui/toast.tsx";
import { errorMessage } from "../../../lib/api-client.ts";
import { usePowerAction, useResetVMState, type PowerAction } from "../api/vm.ts";

type Pending = { kind: "power"; action: PowerAction } | { kind: "reset"; force: boolean } | null;

const powerLabels: Record<PowerAction, string> = { start: "Start", stop: "Stop", forceStop: "Force stop" };

/** `nodeOffline`: start and stop need the node's agent, so they wait for it; the "…" menu's resets
 *  stay (Force Reset State is what an unreachable node's stuck VM needs). */
export function VmActions({ vm, nodeOffline = false }: { vm: VmView; nodeOffline?: boolean }) {
  const toast = useToast();
  const power = usePowerAction(vm.id);
  const reset = useResetVMState(vm.id);
  const [pending, setPending] = useState<Pending>(null);
  const [reason, setReason] = useState("");

  const runPower = (action: PowerAction) =>
    power.mutate(action, {
      onSuccess: (res) => toast.success(`${powerLabels[action]} requested for ${vm.name}: now ${res.vm.state}.`),
      onError: (err) => toast.error(`${powerLabels[action]} failed: ${errorMessage(err)}`),
      onSettled: () => setPending(null),
    });

  const runReset = (force: boolean) =>
    reset.mutate(
      { force, reason },
      {
        onSuccess: (res) => toast.success(`${res.vm.name}: ${res.previousState} → ${res.vm.state}. ${res.message}`),
        onError: (err) => toast.error(`${force ? "Force reset" : "Reset"} state failed: ${errorMessage(err)}`),
        onSettled: () => {
          setPending(null);
          setReason("");
        },
      },
    );

  const busy = power.isPending || reset.isPending;
  const offlineTitle = nodeOffline
    ? "The node is offline: power actions need its agent. Force Reset State is in the … menu."
    : undefined;
  return (
    <div
      className="flex items-center gap-2"
      data-testid="vm-actions"
      data-node-offline={nodeOffline ? "true" : undefined}
    >
      <Button
        tone="primary"
        disabled={!canStart(vm.state) || busy || nodeOffline}
        title={offlineTitle}
        onClick={() => runPower("start")}
      >
        Start
      </Button>
      <Button
        disabled={!canStop(vm.state) || busy || nodeOffline}
        title={offlineTitle}
        onClick={() => runPower("stop")}
      >
        Stop
      </Button>
      {/* Also while STOPPING: a force stop overrides a graceful stop still waiting for the guest (the
          control plane answers 409 when the node's agent cannot). */}
      <Button
        tone="danger"
        disabled={!(canStop(vm.state) || vm.state === "STOPPING") || busy || nodeOffline}
        title={offlineTitle}
        onClick={() => setPending({ kind: "power", action: "forceStop" })}
      >
        Force stop
      </Button>
      <Menu
        label="More actions"
        buttonLabel="…"
        items={[
          {
            label: "Reset State",
            description: "Ask the hypervisor for the real state and adopt it.",
            onSelect: () => setPending({ kind: "reset", force: false }),
          },
          {
            label: "Force Reset State",
            description: "Mark the VM STOPPED without asking (unreachable node).",
            danger: true,
            onSelect: () => setPending({ kind: "reset", force: true }),
          },
        ]}
      />

      <ConfirmDialog
        open={pending?.kind === "power"}
        title={`Force stop ${vm.name}?`}
        confirmLabel="Force stop"
        tone="danger"
        busy={power.isPending}
        onConfirm={() => runPower("forceStop")}
        onCancel={() => setPending(null)}
      >
        <p>
          This pulls the plug on the guest (virsh destroy): unsaved data in the guest is lost and its filesystems may
          need a check.
        </p>
      </ConfirmDialog>

      <ConfirmDialog
        open={pending?.kind === "reset"}
        title={
          pending?.kind === "reset" && pending.force
            ? `Force reset the state of ${vm.name}?`
            : `Reset the state of ${vm.name}?`
        }
        confirmLabel={pending?.kind === "reset" && pending.force ? "Force Reset State" : "Reset State"}
        tone={pending?.kind === "reset" && pending.force ? "danger" : "primary"}
        busy={reset.isPending}
        onConfirm={() => pending?.kind === "reset" && runReset(pending.force)}
        onCancel={() => setPending(null)}
      >
        {pending?.kind === "reset" && pending.force ? (
          <>
            <p>
              Sets the VM to <b>STOPPED</b> without asking its host. Use it when the node is unreachable and the VM is
              stuck in <b>{vm.state}</b>.
            </p>
            <p className="rounded border border-red-300 bg-red-50 px-2 py-1.5 text-red-900 dark:border-red-800 dark:bg-red-950/50 dark:text-red-200">
              Risk: if the VM is in fact still running on its host, it will be shown as STOPPED, and starting it again
              elsewhere or on the same host may run two copies or fail. Prefer Reset State when the node is online.
            </p>
          </>
        ) : (
          <p>
            Asks the hypervisor on the VM's node for the domain's real state and adopts it (now <b>{vm.state}</b>). If
            the node does not answer in time, the VM is set to STOPPED and the answer says why.
          </p>
        )}
        <label className="block">
          <span className="mb-1 block text-zinc-600 dark:text-zinc-400">Reason (optional, kept in the events)</span>
          <input
            data-testid="reset-reason"
            className={`${inputClass} w-full`}
            maxLength={500}
            value={reason}
            onChange={(e) => setReason(e.target.value)}
          />
        </label>
      </ConfirmDialog>
    </div>
  );
}
