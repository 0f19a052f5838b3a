// The whole suite (`npm test`): Worker tests inside workerd with local D1 (@cloudflare/vitest-plugin),
// and Node tests for the agent, the end-to-end loop and the dashboard in Chromium. The Node tests that
// need a real libvirtd + QEMU or Chromium are projects of their own (`hypervisor`, `browser`), so
// `npm run test:unit` (projects `worker` and `node`) runs on a machine without them.
import { configDefaults, defineConfig } from "vitest/config";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { SUITES_NEEDING } from "./scripts/test-prereq.mjs";

// Local runs never fetch request.cf data from the internet (wrangler would at start): loopback only.
process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";

// expect.poll waits up to 15 s (vitest's own default is 1 s): in the browser suites each poll may
// cross Chromium, wrangler dev and an agent on a loaded 2-core machine.
const nodeTests = {
  environment: "node",
  testTimeout: 60_000,
  hookTimeout: 120_000,
  expect: { poll: { timeout: 15_000 } },
} as const;

export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
          cloudflareTest(async () => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                ADMIN_TOKEN: "test-admin-token",
                // Short deadlines so deadline / liveness tests run on real alarms in seconds.
                QUERY_TIMEOUT_MS: "1000",
                ACK_TIMEOUT_MS: "1000",
                STOP_GRACE_MS: "1500",
                // A power action reporting progress stays in flight at most this long from its request.
                OPERATION_CAP_MS: "5000",
                OFFLINE_AFTER_MS: "4000",
                LAST_SEEN_WRITE_MS: "2000",
                // Frame delivery in the test pool is slow; a low limit keeps the flood test meaningful.
                FLOOD_FRAMES_PER_SECOND: "50",
                // A flapping VM's events are summed up per window: 3 s lets a test see a window end.
                EVENT_WINDOW_MS: "3000",
                // Console limits short enough to be seen in a test.
                CONSOLE_IDLE_MS: "6000",
                CONSOLE_LINGER_MS: "1500",
                TEST_MIGRATIONS: await readD1Migrations("./migrations"),
              },
            },
          })),
        ],
        test: {
          name: "worker",
          include: ["test/worker/**/*.test.ts"],
          // vitest's default 5 s is a bet on the machine's speed: a rate-limit loop of a few hundred
          // requests took longer on a loaded 2-core machine. A test waits for what it asserts instead.
          testTimeout: 30_000,
          setupFiles: ["./test/worker/apply-migrations.ts"],
        },
      },
      {
        test: {
          name: "node",
          include: [
            "test/agent/**/*.test.ts",
            "test/e2e/**/*.test.ts",
            "test/web/**/*.test.ts",
            "test/protocol/**/*.test.ts",
            "test/cli/**/*.test.ts",
            "test/faults/**/*.test.ts",
            "test/security/**/*.test.ts",
          ],
          exclude: [...configDefaults.exclude, ...SUITES_NEEDING.hypervisor, ...SUITES_NEEDING.browser],
          ...nodeTests,
          // Two files at a time even on 2 cores: these tests mostly wait on child processes and
          // sockets (wrangler, agents, libvirtd), so a second file fills the wait. Every file has
          // its own ports, data directory and test-driver host. A project of its own order, as
          // vitest asks of projects whose worker counts differ; the others keep one file at a time
          // (real QEMU guests on one daemon, Chromium).
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
      { test: { name: "hypervisor", include: SUITES_NEEDING.hypervisor, ...nodeTests } },
      { test: { name: "browser", include: SUITES_NEEDING.browser, ...nodeTests } },
    ],
  },
});
