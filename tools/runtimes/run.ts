/**
 * `npm run test:runtimes`: the examples, the CLI checks and the library suites under Bun and Deno,
 * whose binaries come from devDependencies (the `bun` and `deno` npm packages), so nothing is
 * downloaded outside npm. Each runtime runs vitest itself, and the tests start their programs (the
 * examples, `pglock`) on that same runtime (test/support/run.ts). The package test stays Node's: it
 * drives npm. Uses DATABASE_URL, or one throwaway PostgreSQL for both runtimes.
 */
import { spawn } from "node:child_process";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../throwaway-postgres.js";

const SUITES = [
  "test/examples.test.ts",
  "test/cli.test.ts",
  "test/lock.test.ts",
  "test/locker.test.ts",
  "test/contract.test.ts",
  "test/lease.test.ts",
  "test/patterns.test.ts",
  "test/postgres-js.test.ts",
  "test/key.test.ts",
  "test/properties.test.ts",
  "test/server.test.ts",
];
/** Suites for one runtime only: Bun's built-in SQL driver. */
const ONLY_ON: Record<string, string[]> = { bun: ["test/bun/bun-sql.test.ts"], deno: [] };
const VITEST = "node_modules/vitest/vitest.mjs";
const RUNTIMES: Record<string, string[]> = {
  // --bun: vitest's worker processes run on Bun too, not on the node its shebang names.
  bun: ["node_modules/.bin/bun", "--bun", VITEST, "run", ...SUITES, ...(ONLY_ON.bun ?? [])],
  deno: ["node_modules/.bin/deno", "run", "-A", VITEST, "run", ...SUITES],
};

function exec(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: "inherit", env: { ...process.env, ...env } });
    child.on("error", (error) => {
      console.error(`cannot run ${command}: ${error.message}`);
      resolve(127);
    });
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

const only = process.argv.slice(2);
for (const name of only) if (!(name in RUNTIMES)) throw new Error(`unknown runtime ${name}: use bun or deno`);
// Deno resolves `import "pglock"` through package.json to dist/, as a Deno user's project would.
if ((await exec("node_modules/.bin/tsdown", [])) !== 0) process.exit(1);
let server: ThrowawayPostgres | undefined;
if (!process.env.DATABASE_URL) server = await startThrowawayPostgres();
const results: string[] = [];
let failed = 0;
try {
  for (const [name, [command, ...args]] of Object.entries(RUNTIMES)) {
    if (only.length > 0 && !only.includes(name)) continue;
    const version = await new Promise<string>((resolve) => {
      const child = spawn(command as string, ["--version"], { stdio: ["ignore", "pipe", "ignore"] });
      let out = "";
      child.stdout.on("data", (chunk) => {
        out += chunk;
      });
      child.on("close", () => resolve(out.split("\n")[0]?.trim() ?? "?"));
      child.on("error", () => resolve("not installed"));
    });
    console.log(`\n## ${name} (${version})`);
    const started = performance.now();
    const code = await exec(command as string, args, server ? { DATABASE_URL: server.url } : {});
    const seconds = ((performance.now() - started) / 1000).toFixed(0);
    results.push(`${name} ${version}: ${code === 0 ? "passed" : `FAILED (exit ${code})`} in ${seconds} s`);
    if (code !== 0) failed++;
  }
} finally {
  await server?.stop();
}
console.log(`\n${results.join("\n")}`);
process.exit(failed === 0 ? 0 : 1);
