// The dashboard frame: top bar with navigation (by role), who is signed in, theme, sign out.
import type { ReactNode } from "react";
import { Button } from "../components/ui/button.tsx";
import { cn } from "../components/ui/cn.ts";
import { ThemeToggle } from "../components/ui/theme-toggle.tsx";
import { useCan } from "../lib/permissions.tsx";
import { Link, useLocation } from "../lib/router.tsx";

export function Shell({ who, onSignOut, children }: { who: ReactNode; onSignOut: () => void; children: ReactNode }) {
  const { pathname } = useLocation();
  const isAdmin = useCan("administer");
  const nav = [
    { to: "/vms", label: "VMs", active: pathname === "/" || pathname.startsWith("/vms") },
    { to: "/nodes", label: "Nodes", active: pathname.startsWith("/nodes") },
    ...(isAdmin
      ? [
          { to: "/tokens", label: "Tokens", active: pathname.startsWith("/tokens") },
          { to: "/notifications", label: "Notifications", active: pathname.startsWith("/notifications") },
        ]
      : []),
  ];
  return (
    <div className="min-h-screen">
      <header className="sticky top-0 z-10 border-b border-zinc-200 bg-white/90 backdrop-blur dark:border-zinc-800 dark:bg-zinc-900/90">
        <div className="mx-auto flex h-11 max-w-[1400px] items-center gap-4 px-4">
          <Link to="/" className="text-[14px] font-semibold tracking-tight">
            <span className="text-cyan-700 dark:text-cyan-400">Quantix</span> Edge
          </Link>
          <nav className="flex items-center gap-1">
            {nav.map((item) => (
              <Link
                key={item.to}
                to={item.to}
                className={cn(
                  "rounded px-2.5 py-1 text-[13px] font-medium",
                  item.active
                    ? "bg-zinc-200/80 text-zinc-900 dark:bg-zinc-800 dark:text-zinc-100"
                    : "text-zinc-600 hover:text-zinc-900 dark:text-zinc-400 dark:hover:text-zinc-100",
                )}
              >
                {item.label}
              </Link>
            ))}
          </nav>
          <div className="ml-auto flex items-center gap-2 text-[13px]">
            <span className="text-zinc-500 dark:text-zinc-400" data-testid="signed-in-as">
              {who}
            </span>
            <ThemeToggle />
            <Button tone="ghost" onClick={onSignOut} data-testid="sign-out">
              Sign out
            </Button>
          </div>
        </div>
      </header>
      {/* focusable from script only: where focus goes when what had it is gone (see ConfirmDialog) */}
      <main tabIndex={-1} className="mx-auto max-w-[1400px] px-4 py-4 outline-none">
        {children}
      </main>
    </div>
  );
}
