/**
 * The connection for the CLI: --database, else DATABASE_URL, else libpq's PG* variables (which pg
 * reads itself). The URL never reaches output: errors are reduced to their message, and pg's
 * messages do not contain the password.
 */
import { createRequire } from "node:module";
import { redact } from "../redact.js";

export interface PgModule {
  Pool: new (
    config: Record<string, unknown>,
  ) => {
    on(event: "error" | "connect", listener: (error: Error) => void): unknown;
    connect(): Promise<unknown>;
    readonly totalCount: number;
    end(): Promise<void>;
    query(text: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>;
  };
}

/** The command talks to PostgreSQL through `pg`, an optional peer dependency of the library. */
export class MissingPgError extends Error {}

/** EX_CONFIG: something the command needs is not installed. */
export const EXIT_MISSING_PG = 78;

export function loadPg(): PgModule {
  try {
    const require = createRequire(import.meta.url);
    return require("pg") as PgModule;
  } catch {
    throw new MissingPgError("the pglock command needs the pg package: npm install pg");
  }
}

/**
 * How long the command waits for a connection (TCP connect and start-up): a server whose SYNs are
 * dropped would otherwise take the kernel's 2 minutes, and one that accepts and never answers forever
 * (issue #26). `--timeout` bounds it further.
 */
export const CONNECT_TIMEOUT_MS = 10_000;

export function makePool(database: string | undefined, max = 3, connectTimeoutMs = CONNECT_TIMEOUT_MS) {
  const pg = loadPg();
  const url = database ?? process.env.DATABASE_URL;
  const pool = new pg.Pool({
    ...(url ? { connectionString: url } : {}),
    max,
    application_name: "pglock",
    connectionTimeoutMillis: Math.max(1, Math.min(connectTimeoutMs, CONNECT_TIMEOUT_MS)),
  });
  pool.on("error", () => {}); // an idle connection that dies is the Locker's concern, not a crash
  return pool;
}

/** One line for a failure to reach the database, with no stack and no password. */
export function describeFailure(error: unknown): string {
  const cause = (error as { cause?: unknown })?.cause;
  const message = error instanceof Error ? error.message : String(error);
  const detail = cause instanceof Error && !message.includes(cause.message) ? `: ${cause.message}` : "";
  return redact(`${message}${detail}`);
}
