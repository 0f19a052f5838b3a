// Host view entry (host.html), served by the agent's local API (--listen).
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { HostApp } from "./host/host-app.tsx";
import { applyInitialTheme } from "./lib/theme.ts";
import "./styles.css";

applyInitialTheme();
createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <HostApp />
  </StrictMode>,
);
