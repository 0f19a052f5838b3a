// Test-only bindings the vitest pool adds (vitest.config.ts) on top of wrangler's Env.
declare namespace Cloudflare {
  interface Env {
    TEST_MIGRATIONS: import("@cloudflare/vitest-plugin").D1Migration[];
  }
}
