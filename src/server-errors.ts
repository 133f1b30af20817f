/**
 * A driver's error as a pglock error: the one mapping from SQLSTATE to pglock's typed errors, for
 * lock statements, lease statements and fencing tokens alike. The driver's error stays the `cause`.
 * https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
import {
  ConnectionError,
  DatabaseError,
  DeadlockError,
  LockTableFullError,
  PglockError,
  ReadOnlyServerError,
} from "./errors.js";

/**
 * SQLSTATE classes start with a digit, or are F0, HV, P0 or XX; a socket's EPIPE or EPERM, five
 * capitals too, is none.
 */
const SQLSTATE = /^(?:[0-9][0-9A-Z]|F0|HV|P0|XX)[0-9A-Z]{3}$/;

/** The SQLSTATE of a driver error, when it has one: in `code` (pg, postgres.js) or `errno` (Bun's SQL). */
export function sqlState(error: unknown): string | undefined {
  const { code, errno } = (error ?? {}) as { code?: unknown; errno?: unknown };
  for (const candidate of [code, errno]) {
    if (typeof candidate === "string" && SQLSTATE.test(candidate)) return candidate;
  }
  return undefined;
}

/**
 * Whether a statement's error means the session itself is gone or unusable: a connection exception
 * (SQLSTATE class 08), an operator intervention that ends the backend (57P01-57P05: terminate,
 * shutdown), or an error with no SQLSTATE at all, which comes from the socket, not the server.
 */
export function endsSession(error: unknown): boolean {
  const state = sqlState(error);
  return state === undefined || state.startsWith("08") || state.startsWith("57P");
}

/**
 * `error`, from a statement about `subject` ("lock 42", "a lease statement"), as a pglock error. A
 * pglock error (a session's own loss, say) stays what it is. `hints` add what to do for a SQLSTATE.
 */
export function serverError(
  error: unknown,
  subject: string,
  options: { key?: string; hints?: Record<string, string> } = {},
): Error {
  if (error instanceof PglockError) return error;
  const state = sqlState(error);
  const message = error === undefined ? "no answer" : error instanceof Error ? error.message : String(error);
  if (state === "40P01" && options.key !== undefined) return new DeadlockError(options.key, { cause: error });
  if (state === "53200") return new LockTableFullError({ cause: error });
  if (state === "25006") return new ReadOnlyServerError("read-only", { cause: error });
  if (endsSession(error)) {
    return new ConnectionError(`${subject}: the connection to PostgreSQL failed: ${message}`, { cause: error });
  }
  const hint = (state && options.hints?.[state]) ?? "";
  return new DatabaseError(`${subject}: PostgreSQL answered (SQLSTATE ${state}): ${message}${hint}`, { cause: error });
}
