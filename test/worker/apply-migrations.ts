// Applies migrations/ to the per-file isolated local D1 before each test file.
import { applyD1Migrations, env } from "cloudflare:test";

await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
