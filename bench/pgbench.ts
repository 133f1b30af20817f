/**
 * pgbench (PostgreSQL's C benchmark client, in Debian's postgresql-client package) on the same
 * statements, as the peer the targets compare with: `-M prepared` (named prepared statements), one
 * thread (`-j 1`, as Node is one thread), pinned like the Node process when the run pins.
 * https://www.postgresql.org/docs/current/pgbench.html
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Summary, summarize } from "./stats.js";

export interface PgbenchResult {
  /** Transactions per second (a transaction is one script run). */
  tps: number;
  /** Per-transaction latency, from pgbench's transaction log. */
  latency: Summary;
}

/** The pgbench version, or undefined when there is none on PATH. */
export function pgbenchVersion(): string | undefined {
  const found = spawnSync("pgbench", ["--version"], { encoding: "utf8" });
  return found.status === 0 ? found.stdout.trim() : undefined;
}

/** One try-lock and one unlock of a random key: two statements, one pair. */
export const PAIR_SCRIPT =
  "\\set k random(1, 1000000000)\nSELECT pg_try_advisory_lock(:k);\nSELECT pg_advisory_unlock(:k);\n";

/** `n` try-locks in one statement, then their `n` unlocks in another: the server's batched ceiling. */
export function batchScript(n: number): string {
  const keys = Array.from({ length: n }, (_, i) => `:b + ${i}`);
  return [
    "\\set b random(1, 1000000000)",
    `SELECT ${keys.map((k) => `pg_try_advisory_lock(${k})`).join(", ")};`,
    `SELECT ${keys.map((k) => `pg_advisory_unlock(${k})`).join(", ")};`,
    "",
  ].join("\n");
}

export function runPgbench(
  url: string,
  script: string,
  options: { clients: number; seconds: number; pin?: string },
): PgbenchResult {
  const dir = mkdtempSync(join(tmpdir(), "pglock-pgbench-"));
  try {
    writeFileSync(join(dir, "script.sql"), script);
    const target = new URL(url);
    const args = [
      "-n",
      "-M",
      "prepared",
      "-c",
      String(options.clients),
      "-j",
      "1",
      "-T",
      String(options.seconds),
      "-l",
      "-f",
      "script.sql",
      "-h",
      target.hostname,
      "-p",
      target.port || "5432",
      "-U",
      decodeURIComponent(target.username || "postgres"),
      target.pathname.slice(1) || "postgres",
    ];
    const command = options.pin ? "taskset" : "pgbench";
    const output = execFileSync(command, options.pin ? ["-c", options.pin, "pgbench", ...args] : args, {
      cwd: dir,
      encoding: "utf8",
      // The password goes by environment, never on a command line or in output.
      env: { ...process.env, PGPASSWORD: decodeURIComponent(target.password) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const tps = Number(/tps = ([\d.]+)/.exec(output)?.[1]);
    // Each log line: client_id transaction_no time(µs) script_no time_epoch time_us.
    const latencies = readdirSync(dir)
      .filter((file) => file.startsWith("pgbench_log"))
      .flatMap((file) =>
        readFileSync(join(dir, file), "utf8")
          .trim()
          .split("\n")
          .map((line) => Number(line.split(" ")[2]) / 1000),
      );
    return { tps, latency: summarize(latencies) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
