// Nodes: connected / offline, last seen, hostname, versions (agents older than the one this control
// plane serves are marked), VM count; admins enroll, rotate, update agents and delete. A join token and its install command are shown once, right after create or rotate.
import { useState, type FormEvent } from "react";
import { compareVersions } from "../../../../../protocol/install.ts";
import type { NodeView } from "../../../../../protocol/rest.ts";
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
import { SecretLine, SecretPanel } from "../../../components/ui/secret-panel.tsx";
import { useToast } from "../../../components/ui/toast.tsx";
import { errorMessage } from "../../../lib/api-client.ts";
import { formatDateTime, formatRelativeTime } from "../../../lib/format.ts";
import { useCan } from "../../../lib/permissions.tsx";
import { useNow } from "../../../lib/use-now.ts";
import {
  checkoutAgentCommand,
  useCreateNode,
  useDeleteNode,
  useNodes,
  useRotateNodeToken,
  useServedAgent,
  useUpdateNodeAgent,
  type Enrollment,
} from "../api/nodes.ts";

export function NodesPage({ vmsHref }: { vmsHref?: (node: NodeView) => string }) {
  const nodes = useNodes();
  const isAdmin = useCan("administer");
  const toast = useToast();
  const create = useCreateNode();
  const rotate = useRotateNodeToken();
  const remove = useDeleteNode();
  const update = useUpdateNodeAgent();
  const served = useServedAgent().data ?? null;
  const outdated = (node: NodeView) =>
    !!served && !!node.agentVersion && compareVersions(node.agentVersion, served.version) < 0;
  const updatable = nodes.data?.filter((n) => n.connected && outdated(n)) ?? [];
  const updateAgents = (targets: NodeView[]) => {
    for (const node of targets)
      update.mutate(node.id, {
        onSuccess: (res) =>
          toast.success(
            "upToDate" in res && res.upToDate
              ? `${node.name} runs agent ${res.targetVersion} already.`
              : `${node.name}: updating its agent to ${served?.version}; it restarts and reports back.`,
          ),
        onError: (err) => toast.error(`Could not update ${node.name}: ${errorMessage(err)}`),
      });
  };
  const [name, setName] = useState("");
  const [enrollment, setEnrollment] = useState<Enrollment | null>(null);
  const [confirm, setConfirm] = useState<{ kind: "rotate" | "delete"; node: NodeView } | null>(null);
  const now = useNow();

  const submit = (e: FormEvent) => {
    e.preventDefault();
    create.mutate(name.trim(), {
      onSuccess: (res) => {
        setEnrollment(res as Enrollment);
        setName("");
      },
      onError: (err) => toast.error(`Could not create the node: ${errorMessage(err)}`),
    });
  };

  const confirmAction = () => {
    if (!confirm) return;
    const { kind, node } = confirm;
    if (kind === "rotate")
      rotate.mutate(node.id, {
        onSuccess: (res) => {
          setEnrollment(res as Enrollment);
          toast.success(`New join token for ${node.name}; its old credential no longer works.`);
        },
        onError: (err) => toast.error(`Could not rotate: ${errorMessage(err)}`),
        onSettled: () => setConfirm(null),
      });
    else
      remove.mutate(node.id, {
        onSuccess: () => toast.success(`Node ${node.name} deleted.`),
        onError: (err) => toast.error(`Could not delete: ${errorMessage(err)}`),
        onSettled: () => setConfirm(null),
      });
  };

  return (
    <div>
      <PageHeader
        title="Nodes"
        subtitle={
          nodes.data ? `${nodes.data.filter((n) => n.connected).length} of ${nodes.data.length} connected` : undefined
        }
        actions={
          isAdmin && (
            <form onSubmit={submit} className="flex items-center gap-2">
              <input
                data-testid="node-name"
                className={`${inputClass} w-48`}
                placeholder="new node name"
                aria-label="New node name"
                value={name}
                onChange={(e) => setName(e.target.value)}
                maxLength={100}
                required
              />
              <Button type="submit" tone="primary" disabled={create.isPending || !name.trim()}>
                Create node
              </Button>
            </form>
          )
        }
      />
      {enrollment && <EnrollmentCard enrollment={enrollment} onDismiss={() => setEnrollment(null)} />}
      {served && (
        <div className="mb-2 flex items-center gap-3 text-[13px] text-zinc-600 dark:text-zinc-400">
          <span data-testid="served-agent-version">
            This control plane serves agent <span className="font-medium tabular-nums">{served.version}</span>
          </span>
          {isAdmin && updatable.length > 0 && (
            <Button tone="secondary" disabled={update.isPending} onClick={() => updateAgents(updatable)}>
              Update {updatable.length} outdated agent{updatable.length === 1 ? "" : "s"}
            </Button>
          )}
        </div>
      )}
      {nodes.error && <Notice tone="error">Could not list nodes: {nodes.error.message}</Notice>}
      <Panel className="overflow-x-auto">
        {nodes.isPending ? (
          <Spinner />
        ) : !nodes.data?.length ? (
          <div className="px-3 py-6 text-center text-[13px] text-zinc-500 dark:text-zinc-400">
            No nodes yet.{isAdmin ? " Create one to get its agent command." : ""}
          </div>
        ) : (
          <table className={tableClass} data-testid="nodes-table">
            <thead>
              <tr>
                <th className={thClass}>Name</th>
                <th className={thClass}>Status</th>
                <th className={thClass}>Last seen</th>
                <th className={thClass}>Hostname</th>
                <th className={thClass}>Agent</th>
                <th className={thClass}>libvirt</th>
                <th className={thClass}>VMs</th>
                {isAdmin && <ActionsHeader />}
              </tr>
            </thead>
            <tbody>
              {nodes.data.map((node) => (
                <tr key={node.id} data-node-name={node.name}>
                  <td className={`${tdClass} font-medium`}>
                    {vmsHref ? (
                      <a className="text-cyan-700 hover:underline dark:text-cyan-400" href={vmsHref(node)}>
                        {node.name}
                      </a>
                    ) : (
                      node.name
                    )}
                  </td>
                  <td className={tdClass}>
                    {node.connected ? (
                      <Badge tone="green" testId="node-status">
                        connected
                      </Badge>
                    ) : (
                      <Badge tone="red" testId="node-status">
                        offline
                      </Badge>
                    )}
                  </td>
                  <td className={tdClass} title={formatDateTime(node.lastSeenAt)}>
                    {formatRelativeTime(node.lastSeenAt, now)}
                  </td>
                  <td className={tdClass}>{node.hostname ?? "—"}</td>
                  <td className={`${tdClass} whitespace-nowrap`}>
                    <span data-testid="node-agent-version">{node.agentVersion ?? "—"}</span>
                    {outdated(node) && (
                      <span className="ml-1.5" title={`this control plane serves ${served?.version}`}>
                        <Badge tone="amber" testId="agent-outdated">
                          outdated
                        </Badge>
                      </span>
                    )}
                  </td>
                  <td className={tdClass}>{node.libvirtVersion ?? "—"}</td>
                  <td className={`${tdClass} tabular-nums`} data-testid="node-vm-count">
                    {node.vmCount}
                  </td>
                  {isAdmin && (
                    <td className={`${tdClass} text-right whitespace-nowrap`}>
                      {node.connected && outdated(node) && (
                        <Button tone="ghost" disabled={update.isPending} onClick={() => updateAgents([node])}>
                          Update agent
                        </Button>
                      )}
                      <Button tone="ghost" onClick={() => setConfirm({ kind: "rotate", node })}>
                        Rotate token
                      </Button>
                      <Button
                        tone="ghost"
                        className="text-red-700 dark:text-red-400"
                        onClick={() => setConfirm({ kind: "delete", node })}
                      >
                        Delete
                      </Button>
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Panel>
      <ConfirmDialog
        open={confirm !== null}
        title={
          confirm?.kind === "rotate"
            ? `Rotate the token of ${confirm.node.name}?`
            : `Delete node ${confirm?.node.name ?? ""}?`
        }
        confirmLabel={confirm?.kind === "rotate" ? "Rotate token" : "Delete node"}
        tone="danger"
        busy={rotate.isPending || remove.isPending}
        onConfirm={confirmAction}
        onCancel={() => setConfirm(null)}
      >
        {confirm?.kind === "rotate" ? (
          <p>
            Issues a fresh join token and revokes the node's current credential: its agent is disconnected until it
            enrolls again with the new token.
          </p>
        ) : (
          <p>
            Removes the node and disconnects its agent. Its VMs stay listed, on no node. The agent's credential stops
            working.
          </p>
        )}
      </ConfirmDialog>
    </div>
  );
}

function EnrollmentCard({ enrollment, onDismiss }: { enrollment: Enrollment; onDismiss: () => void }) {
  return (
    <SecretPanel
      title={`Join token for ${enrollment.node.name}`}
      warning="Shown once: copy it now. It is single-use and expires (1 h by default)."
      onDone={onDismiss}
    >
      <SecretLine
        label="On the host, as root: installs the agent, enrolls and starts it"
        text={enrollment.installCommand}
        testId="install-command"
      />
      <SecretLine label="Join token" text={enrollment.joinToken} testId="join-token" />
      <SecretLine
        label="From a checkout of this repository"
        text={checkoutAgentCommand(location.origin, enrollment.joinToken, enrollment.node.name)}
        testId="agent-command"
      />
    </SecretPanel>
  );
}
