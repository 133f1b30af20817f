import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// `npm run test:pgbouncer`: the tests that need the pgbouncer executable, apart from `npm test`,
// which must pass on a machine that has nothing but Node.
export default defineConfig({
  resolve: { alias: { pglock: fileURLToPath(new URL("./src/index.ts", import.meta.url)) } },
  test: { include: ["test/pgbouncer/**/*.test.ts"], testTimeout: 60_000, hookTimeout: 60_000 },
});
