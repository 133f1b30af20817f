import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// `npm run test:blackhole`: needs root (network namespaces, iptables); starts its own server.
export default defineConfig({
  resolve: { alias: { pglock: fileURLToPath(new URL("./src/index.ts", import.meta.url)) } },
  test: {
    include: ["test/blackhole/**/*.test.ts"],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: "forks",
  },
});
