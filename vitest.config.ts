import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    alias: [
      { find: /^pglock$/, replacement: fileURLToPath(new URL("./src/index.ts", import.meta.url)) },
      {
        find: /^pglock\/opentelemetry$/,
        replacement: fileURLToPath(new URL("./src/opentelemetry.ts", import.meta.url)),
      },
    ],
  },
  test: {
    globalSetup: ["test/support/global-setup.ts"],
    include: ["test/**/*.test.ts"],
    // test/bun/ needs Bun's built-in SQL: `npm run test:runtimes` runs it on Bun.
    exclude: [
      "test/pgbouncer/**",
      "test/blackhole/**",
      "**/node_modules/**",
      ...("bun" in process.versions ? [] : ["test/bun/**"]),
    ],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // The files spend their time waiting on PostgreSQL, on timers and on child processes, not on CPU:
    // vitest's default (one fewer than the CPUs) ran them one by one on a 2-CPU machine (200 s, where
    // four at a time take about half that).
    maxWorkers: Math.max(4, availableParallelism() - 1),
    coverage: {
      provider: "v8",
      include: ["src/**/*.ts"],
      reporter: ["text-summary", "html"],
      reportsDirectory: "coverage",
    },
  },
});
