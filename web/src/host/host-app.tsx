// The host view: on the host itself, against the agent's local API (/api/v1) with the agent's
// host token, the dashboard's own VM list, Monitoring and Logs tabs, so logs and the agent's last day
// of samples stay readable without the control plane. The token is kept for this browser session only (sessionStorage).
import { lazy, Suspense, useState } from "react";
import { QueryClientProvider } from "@tanstack/react-query";
import { Button } from "../components/ui/button.tsx";
import { PageHeader, Panel } from "../components/ui/panel.tsx";
import { StateBadge } from "../components/ui/state-badge.tsx";
import { TabList } from "../components/ui/tabs.tsx";
import { ThemeToggle } from "../components/ui/theme-toggle.tsx";
import { ToastProvider } from "../components/ui/toast.tsx";
import { SignIn } from "../features/auth/components/sign-in.tsx";
import { LogsPanel } from "../features/logs/components/logs-panel.tsx";
import { MetricsPanel } from "../features/metrics/components/metrics-panel.tsx";
import type { VmRow } from "../features/vms/api/vms.ts";
import { VmsPage } from "../features/vms/components/vms-page.tsx";
import { ApiClientProvider } from "../lib/api-context.tsx";
import { RoleProvider } from "../lib/permissions.tsx";
import { useTokenSession } from "../lib/session.ts";
import { HOST_TOKEN_KEY, writeToken } from "../lib/token-store.ts";

// The console views (serial in xterm.js, graphical in noVNC) come with chunks of their own. The console
// is its own page (/console#<vm id>, `?view=graphical` for the display): only that page's policy lets
// xterm.js add its <style> elements, and a document keeps the policy it loaded with.
const ConsoleViews = lazy(() => import("../features/console/components/console-views.tsx"));
const consoleVm = location.pathname === "/console" ? decodeURIComponent(location.hash.slice(1)) : null;
const consoleView = new URLSearchParams(location.search).get("view") === "graphical" ? "graphical" : "serial";

// Earlier versions kept the node credential here, in localStorage: it must not stay behind.
writeToken("qx.host.credential", null);

export function HostApp() {
  const session = useTokenSession(HOST_TOKEN_KEY, "/api/v1", "session");
  const [selected, setSelected] = useState<VmRow | null>(null);
  const [tab, setTab] = useState<"monitoring" | "logs">("logs");
  return (
    <QueryClientProvider client={session.queryClient}>
      <ApiClientProvider client={session.client}>
        <ToastProvider>
          {!session.token ? (
            <SignIn
              title="Host view"
              label="Host token"
              help={
                <>
                  The file <code className="font-mono">host-token</code> in the agent's state directory (e.g.{" "}
                  <code className="font-mono">sudo cat /var/lib/quantix-agent/host-token</code>). It is kept for this
                  browser tab only, until you sign out or close it.
                </>
              }
              verify={(token) => session.client.request("/vms?limit=1", { token })}
              onSignedIn={session.signIn}
            />
          ) : (
            <div className="min-h-screen">
              <header className="border-b border-zinc-200 bg-white dark:border-zinc-800 dark:bg-zinc-900">
                <div className="mx-auto flex h-11 max-w-[1400px] items-center gap-3 px-4">
                  <span className="text-[14px] font-semibold">
                    <span className="text-cyan-700 dark:text-cyan-400">Quantix</span> Edge · host view
                  </span>
                  <span className="text-[12px] text-zinc-500 dark:text-zinc-400">
                    local agent API, works without the control plane
                  </span>
                  <div className="ml-auto flex items-center gap-2">
                    <ThemeToggle />
                    <Button tone="ghost" onClick={session.signOut} data-testid="sign-out">
                      Sign out
                    </Button>
                  </div>
                </div>
              </header>
              {consoleVm ? (
                <main className="mx-auto max-w-[1400px] px-4 py-4">
                  <div className="mb-2 text-[13px]">
                    <a href="/" className="text-cyan-700 hover:underline dark:text-cyan-400">
                      ← VMs on this host
                    </a>
                  </div>
                  {/* The host token is this host's own key: whoever holds it operates its consoles. */}
                  <RoleProvider role="operator">
                    <Suspense fallback={<Panel className="p-3 text-[13px]">Loading the console…</Panel>}>
                      <ConsoleViews vmId={consoleVm} initial={consoleView} />
                    </Suspense>
                  </RoleProvider>
                </main>
              ) : (
                <main className="mx-auto grid max-w-[1400px] gap-4 px-4 py-4 xl:grid-cols-[minmax(0,2fr)_minmax(0,3fr)]">
                  <VmsPage
                    title="VMs on this host"
                    selectedId={selected?.id}
                    renderName={(vm) => (
                      <button
                        type="button"
                        className="text-cyan-700 hover:underline dark:text-cyan-400"
                        onClick={() => setSelected(vm)}
                      >
                        {vm.name}
                      </button>
                    )}
                  />
                  <div>
                    {selected ? (
                      <>
                        <PageHeader
                          title={
                            <span className="flex items-center gap-2">
                              <span data-testid="host-selected-vm">{selected.name}</span>
                              <StateBadge state={selected.state} />
                            </span>
                          }
                          subtitle={
                            <span className="flex items-center gap-2">
                              <TabList label={`${selected.name}: views`} className="gap-1">
                                {(["monitoring", "logs"] as const).map((t) => (
                                  <Button
                                    key={t}
                                    tone={t === tab ? "primary" : "ghost"}
                                    role="tab"
                                    id={`host-tab-${t}`}
                                    aria-selected={t === tab}
                                    aria-controls={t === tab ? "host-tabpanel" : undefined}
                                    tabIndex={t === tab ? 0 : -1}
                                    onClick={() => setTab(t)}
                                    data-testid={`host-tab-${t}`}
                                  >
                                    {t === "logs" ? "QEMU log" : "Monitoring"}
                                  </Button>
                                ))}
                              </TabList>
                              <a
                                href={`/console#${encodeURIComponent(selected.id)}`}
                                className="inline-flex h-7 items-center rounded px-2.5 text-[13px] font-medium text-zinc-700 hover:bg-zinc-200/70 dark:text-zinc-300 dark:hover:bg-zinc-800"
                                data-testid="host-console-link"
                              >
                                Console
                              </a>
                            </span>
                          }
                        />
                        <div role="tabpanel" id="host-tabpanel" aria-labelledby={`host-tab-${tab}`}>
                          {tab === "monitoring" ? (
                            <MetricsPanel key={selected.id} target={{ kind: "vms", id: selected.id }} />
                          ) : (
                            <LogsPanel key={selected.id} vm={selected} />
                          )}
                        </div>
                      </>
                    ) : (
                      <Panel className="px-3 py-6 text-center text-[13px] text-zinc-500 dark:text-zinc-400">
                        Pick a VM to read its QEMU log.
                      </Panel>
                    )}
                  </div>
                </main>
              )}
            </div>
          )}
        </ToastProvider>
      </ApiClientProvider>
    </QueryClientProvider>
  );
}
