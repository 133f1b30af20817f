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
    coverage: {
      provider: "v8",
      include: ["src/**/*.ts"],
      reporter: ["text-summary", "html"],
      reportsDirectory: "coverage",
    },
  },
});
