// Dashboard entry (index.html).
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { Dashboard } from "./app/dashboard.tsx";
import { applyInitialTheme } from "./lib/theme.ts";
import "./styles.css";

applyInitialTheme();
createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <Dashboard />
  </StrictMode>,
);
