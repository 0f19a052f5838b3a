// API tokens (admin): create one (its secret shown once), list them, revoke.
import { useState, type FormEvent } from "react";
import { ROLES, type Role } from "../../../../../protocol/api.ts";
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
import { formatDateTime } from "../../../lib/format.ts";
import { useCreateToken, useRevokeToken, useTokens, type CreatedToken, type TokenView } from "../api/tokens.ts";

export function TokensPage() {
  const tokens = useTokens();
  const create = useCreateToken();
  const revoke = useRevokeToken();
  const toast = useToast();
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [created, setCreated] = useState<CreatedToken | null>(null);
  const [revoking, setRevoking] = useState<TokenView | null>(null);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    create.mutate(
      { name: name.trim(), role },
      {
        onSuccess: (res) => {
          setCreated(res);
          setName("");
        },
        onError: (err) => toast.error(`Could not create the token: ${errorMessage(err)}`),
      },
    );
  };

  return (
    <div>
      <PageHeader
        title="API tokens"
        actions={
          <form onSubmit={submit} className="flex items-center gap-2">
            <input
              data-testid="token-name"
              className={`${inputClass} w-48`}
              placeholder="token name"
              aria-label="New token name"
              value={name}
              onChange={(e) => setName(e.target.value)}
              maxLength={100}
              required
            />
            <select
              data-testid="token-role"
              className={inputClass}
              value={role}
              onChange={(e) => setRole(e.target.value as Role)}
              aria-label="Role"
            >
              {ROLES.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
            <Button type="submit" tone="primary" disabled={create.isPending || !name.trim()}>
              Create token
            </Button>
          </form>
        }
      />
      {created && (
        <SecretPanel
          title={`Token ${created.name} (${created.role})`}
          warning="Shown once: only its hash is kept."
          onDone={() => setCreated(null)}
        >
          <SecretLine text={created.token} testId="created-token" />
        </SecretPanel>
      )}
      {tokens.error && <Notice tone="error">Could not list tokens: {tokens.error.message}</Notice>}
      <Panel className="overflow-x-auto">
        {tokens.isPending ? (
          <Spinner />
        ) : !tokens.data?.length ? (
          <div className="px-3 py-6 text-center text-[13px] text-zinc-500 dark:text-zinc-400">
            No tokens yet (the admin token is a Worker secret, not listed).
          </div>
        ) : (
          <table className={tableClass} data-testid="tokens-table">
            <thead>
              <tr>
                <th className={thClass}>Name</th>
                <th className={thClass}>Role</th>
                <th className={thClass}>Created</th>
                <th className={thClass}>Status</th>
                <ActionsHeader />
              </tr>
            </thead>
            <tbody>
              {tokens.data.map((t) => (
                <tr key={t.id} data-token-name={t.name}>
                  <td className={`${tdClass} font-medium`}>{t.name}</td>
                  <td className={tdClass}>{t.role}</td>
                  <td className={tdClass}>{formatDateTime(t.createdAt)}</td>
                  <td className={tdClass}>
                    {t.revokedAt ? (
                      <Badge tone="zinc">revoked {formatDateTime(t.revokedAt)}</Badge>
                    ) : (
                      <Badge tone="green">active</Badge>
                    )}
                  </td>
                  <td className={`${tdClass} text-right`}>
                    {!t.revokedAt && (
                      <Button tone="ghost" className="text-red-700 dark:text-red-400" onClick={() => setRevoking(t)}>
                        Revoke
                      </Button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Panel>
      <ConfirmDialog
        open={revoking !== null}
        title={`Revoke token ${revoking?.name ?? ""}?`}
        confirmLabel="Revoke"
        tone="danger"
        busy={revoke.isPending}
        onConfirm={() =>
          revoking &&
          revoke.mutate(revoking.id, {
            onSuccess: () => toast.success(`Token ${revoking.name} revoked.`),
            onError: (err) => toast.error(`Could not revoke: ${errorMessage(err)}`),
            onSettled: () => setRevoking(null),
          })
        }
        onCancel={() => setRevoking(null)}
      >
        <p>Anything using this token gets 401 from now on. This cannot be undone.</p>
      </ConfirmDialog>
    </div>
  );
}
