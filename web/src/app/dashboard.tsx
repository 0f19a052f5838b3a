// The dashboard: sign-in with an API token, then the routed pages for the token's role.
import { QueryClientProvider } from "@tanstack/react-query";
import { Notice, Spinner } from "../components/ui/panel.tsx";
import { ToastProvider } from "../components/ui/toast.tsx";
import { fetchMe, useMe } from "../features/auth/api/session.ts";
import { SignIn } from "../features/auth/components/sign-in.tsx";
import { useNodes } from "../features/nodes/api/nodes.ts";
import { NodesPage } from "../features/nodes/components/nodes-page.tsx";
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
            <SignIn
              title="Sign in to the dashboard"
              label="API token"
              help="Use the admin token (ADMIN_TOKEN; npm start prints it) or a token an admin created for you. It stays in this browser until you sign out."
              verify={(token) => fetchMe(session.client, token)}
              onSignedIn={session.signIn}
            />
          )}
        </ToastProvider>
      </ApiClientProvider>
    </QueryClientProvider>
  );
}

function SignedIn({ token, onSignOut }: { token: string; onSignOut: () => void }) {
  const me = useMe(token);
  if (me.error) return <div className="p-4"><Notice tone="error">Could not check the token: {me.error.message}</Notice></div>;
  if (me.isPending) return <Spinner label="Signing in…" />;
  return (
    <RoleProvider role={me.data.role}>
      <StuckAfterContext.Provider value={me.data.stuckAfterMs ?? STUCK_AFTER_MS}>
        <Shell who={`${me.data.name} · ${me.data.role}`} onSignOut={onSignOut}>
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
  if (pathname === "/nodes") return <NodesPage />;
  if (pathname === "/tokens") return isAdmin ? <TokensPage /> : <Notice tone="info">Tokens are managed by admins.</Notice>;
  if ((params = matchPath("/vms/:id", pathname))) return <VmPage key={params.id} id={params.id} tab="events" />;
  if ((params = matchPath("/vms/:id/logs", pathname))) return <VmPage key={params.id} id={params.id} tab="logs" />;
  return <Notice tone="info">No page at {pathname}.</Notice>;
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
