// Vite build of the dashboard (index.html, served by the Worker) and the host view (host.html,
// served by the agent's local API), both from web/ into web/dist.
import { resolve } from "node:path";
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

const root = import.meta.dirname;

export default defineConfig({
  root,
  plugins: [react(), tailwindcss()],
  build: {
    outDir: resolve(root, "dist"),
    emptyOutDir: true,
    // The polyfill would be the only script not loaded from a file; CSP allows no inline script.
    modulePreload: { polyfill: false },
    rolldownOptions: {
      input: { index: resolve(root, "index.html"), host: resolve(root, "host.html") },
    },
  },
  server: {
    // `npx vite web` against a running `npm start`.
    proxy: { "/api": "http://127.0.0.1:8787" },
  },
});
