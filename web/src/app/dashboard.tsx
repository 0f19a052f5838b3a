// The dashboard: signed in through Cloudflare Access when it is on, else with an API token; then
// the routed pages for the role.
import { QueryClientProvider } from "@tanstack/react-query";
import { useState } from "react";
import { inputClass, Notice, PageHeader, Spinner } from "../components/ui/panel.tsx";
import { ToastProvider } from "../components/ui/toast.tsx";
import { fetchMe, useAccessMe, useMe, type Me } from "../features/auth/api/session.ts";
import { SignIn } from "../features/auth/components/sign-in.tsx";
import { useNodes } from "../features/nodes/api/nodes.ts";
import { NodesPage } from "../features/nodes/components/nodes-page.tsx";
import { MetricsPanel } from "../features/metrics/components/metrics-panel.tsx";
import { NotificationsPage } from "../features/notifications/components/notifications-page.tsx";
import { TokensPage } from "../features/tokens/components/tokens-page.tsx";
import { VmsPage } from "../features/vms/components/vms-page.tsx";
import { ApiClientProvider } from "../lib/api-context.tsx";
import { RoleProvider, useCan } from "../lib/permissions.tsx";
import { Link, matchPath, useLocation } from "../lib/router.tsx";
import { useTokenSession } from "../lib/session.ts";
import { DASHBOARD_TOKEN_KEY } from "../lib/token-store.ts";
import { STUCK_AFTER_MS, StuckAfterContext } from "../lib/vm-state.ts";
import { Shell } from "./shell.tsx";
import { VmPage } from "./vm-page.tsx";

export function Dashboard() {
  const session = useTokenSession(DASHBOARD_TOKEN_KEY, "/api");
  return (
    <QueryClientProvider client={session.queryClient}>
      <ApiClientProvider client={session.client}>
        <ToastProvider>
          {session.token ? (
            <SignedIn token={session.token} onSignOut={session.signOut} />
          ) : (
            <AccessOrToken onSignedIn={session.signIn} verify={(token) => fetchMe(session.client, token)} />
          )}
        </ToastProvider>
      </ApiClientProvider>
    </QueryClientProvider>
  );
}

/** Signed in through Cloudflare Access already? Then no token is asked for; else the token form
 *  (saying why, when Access refused the browser's sign-in). */
function AccessOrToken({
  verify,
  onSignedIn,
}: {
  verify: (token: string) => Promise<unknown>;
  onSignedIn: (token: string) => void;
}) {
  const access = useAccessMe();
  if (access.isPending) return <Spinner label="Checking sign-in…" />;
  if (access.data) return <Pages me={access.data} onSignOut={() => window.location.assign("/cdn-cgi/access/logout")} />;
  const refused = access.error?.message.startsWith("Cloudflare Access") ? access.error.message : null;
  return (
    <SignIn
      title="Sign in to the dashboard"
      label="API token"
      help={
        <>
          {refused && (
            <span className="mb-2 block text-red-700 dark:text-red-400" data-testid="access-refused">
              {refused}
            </span>
          )}
          Use the admin token (ADMIN_TOKEN; npm start prints it) or a token an admin created for you. It stays in this
          browser until you sign out. Behind Cloudflare Access you are signed in without a token.
        </>
      }
      verify={verify}
      onSignedIn={onSignedIn}
    />
  );
}

function SignedIn({ token, onSignOut }: { token: string; onSignOut: () => void }) {
  const me = useMe(token);
  if (me.error)
    return (
      <div className="p-4">
        <Notice tone="error">Could not check the token: {me.error.message}</Notice>
      </div>
    );
  if (me.isPending) return <Spinner label="Signing in…" />;
  return <Pages me={me.data} onSignOut={onSignOut} />;
}

function Pages({ me, onSignOut }: { me: Me; onSignOut: () => void }) {
  const who =
    me.via === "access" ? `${me.email ?? me.name} · ${me.role} · Cloudflare Access` : `${me.name} · ${me.role}`;
  return (
    <RoleProvider role={me.role}>
      <StuckAfterContext.Provider value={me.stuckAfterMs ?? STUCK_AFTER_MS}>
        <Shell who={who} onSignOut={onSignOut}>
          <Routes />
        </Shell>
      </StuckAfterContext.Provider>
    </RoleProvider>
  );
}

function Routes() {
  const { pathname } = useLocation();
  const isAdmin = useCan("administer");
  let params: Record<string, string> | null;
  if (pathname === "/" || pathname === "/vms") return <VmList />;
  if (pathname === "/nodes") return <NodesWithTotals />;
  if (pathname === "/tokens")
    return isAdmin ? <TokensPage /> : <Notice tone="info">Tokens are managed by admins.</Notice>;
  if (pathname === "/notifications")
    return isAdmin ? <NotificationsPage /> : <Notice tone="info">Notifications are managed by admins.</Notice>;
  if ((params = matchPath("/vms/:id", pathname))) return <VmPage key={params.id} id={params.id} tab="events" />;
  if ((params = matchPath("/vms/:id/monitoring", pathname)))
    return <VmPage key={params.id} id={params.id} tab="monitoring" />;
  if ((params = matchPath("/vms/:id/logs", pathname))) return <VmPage key={params.id} id={params.id} tab="logs" />;
  if ((params = matchPath("/vms/:id/console", pathname)))
    return <VmPage key={params.id} id={params.id} tab="console" />;
  return (
    <>
      <PageHeader title="Page not found" />
      <Notice tone="info">No page at {pathname}.</Notice>
    </>
  );
}

/** The nodes, then the chosen node's totals (composed here: the features do not import each other). */
function NodesWithTotals() {
  const nodes = useNodes();
  const [chosen, setChosen] = useState<string | null>(null);
  const node = nodes.data?.find((n) => n.id === chosen) ?? nodes.data?.[0];
  return (
    <>
      <NodesPage />
      {node && (
        <section className="mt-4" data-testid="node-totals">
          <div className="mb-2 flex items-center gap-2 text-[13px]">
            <h2 className="font-semibold">Node totals</h2>
            <select
              className={inputClass}
              value={node.id}
              onChange={(e) => setChosen(e.target.value)}
              aria-label="Node"
            >
              {nodes.data!.map((n) => (
                <option key={n.id} value={n.id}>
                  {n.name}
                </option>
              ))}
            </select>
          </div>
          <MetricsPanel key={node.id} target={{ kind: "nodes", id: node.id }} offline={!node.connected} />
        </section>
      )}
    </>
  );
}

function VmList() {
  const nodes = useNodes();
  return (
    <VmsPage
      nodes={nodes.data ?? []}
      renderName={(vm) => (
        <Link to={`/vms/${encodeURIComponent(vm.id)}`} className="text-cyan-700 hover:underline dark:text-cyan-400">
          {vm.name}
        </Link>
      )}
    />
  );
}
