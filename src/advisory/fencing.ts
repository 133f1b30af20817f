/**
 * Fencing tokens: a number per key that strictly increases with every grant, so a resource can
 * refuse a write from a holder whose lock was lost meanwhile (a paused process, a cut connection).
 * The counter is a row per key, incremented by the holder while it holds the exclusive lock, on the
 * very session that holds it, so the order of tokens is the order of grants. Across a failover the
 * server's timeline, in the token's high bits, keeps them increasing (see next()). The table:
 *
 *   CREATE TABLE IF NOT EXISTS pglock_fencing (
 *     lock_key text PRIMARY KEY,          -- "123" for an int64 key, "1,2" for a pair
 *     token bigint NOT NULL
 *   );
 */

import { DatabaseError, PglockError, ReadOnlyServerError } from "../errors.js";
import type { LockKey } from "../key.js";
import { sqlState } from "../session/driver.js";
import type { Session } from "../session/session.js";
import { DURABLE_COMMIT, TIMELINE_SQL } from "../sql.js";
import { checkTableName } from "../validate.js";

/** The SQL that creates the fencing table, for those who create it by migration. */
export function fencingTableSql(table = "pglock_fencing"): string {
  checkTableName(table, "fencingTableSql", "table");
  return `CREATE TABLE IF NOT EXISTS ${table} (lock_key text PRIMARY KEY, token bigint NOT NULL)`;
}

/** A token is (timeline << 40) + n: 2^40 grants per key per timeline, timelines up to 2^23 - 1. */
export const TIMELINE_SHIFT = 40;

/** A failed token statement as a pglock error: the session's own loss stays what it is. */
function fencingError(error: unknown, key: LockKey): Error {
  if (error instanceof PglockError) return error as Error;
  const state = sqlState(error);
  if (state === "25006") return new ReadOnlyServerError("read-only", { cause: error });
  const message = error instanceof Error ? error.message : String(error);
  const hint =
    state === "42501"
      ? ": the role may not use the fencing table; create it as its owner (fencingTableSql()) and grant SELECT, INSERT, UPDATE on it"
      : "";
  return new DatabaseError(`lock ${key}: a fencing token could not be drawn: ${message}${hint}`, { cause: error });
}

export class FencingTokens {
  readonly #table: string;
  #created: Promise<void> | undefined;

  constructor(table: string) {
    this.#table = table;
  }

  /**
   * The next token for `key`, drawn on `session`. The table is created only when it is missing: a
   * least-privilege role may use a table its owner created (fencingTableSql) without CREATE on the
   * schema, which `CREATE TABLE IF NOT EXISTS` checks even when the table exists (PostgreSQL 15+).
   */
  async next(session: Session, key: LockKey): Promise<bigint> {
    try {
      return await this.#draw(session, key);
    } catch (error) {
      if (sqlState(error) !== "42P01") throw fencingError(error, key);
    }
    this.#created ??= this.#create(session).catch((error) => {
      this.#created = undefined;
      throw fencingError(error, key);
    });
    await this.#created;
    try {
      return await this.#draw(session, key);
    } catch (error) {
      throw fencingError(error, key);
    }
  }

  async #draw(session: Session, key: LockKey): Promise<bigint> {
    // Guarded like the lock statements (sql.ts, onOwnBackend): drawn only on the holding server session.
    // The floor is the server's timeline in the high bits: a promoted standby is on a higher timeline,
    // so its first token exceeds every token of the old primary, even the ones whose commits did not
    // reach it (asynchronous replication). The timeline is the first 8 hex digits of the WAL file name.
    // https://www.postgresql.org/docs/current/continuous-archiving.html#BACKUP-TIMELINES
    const rows = await session.query({
      text:
        `INSERT INTO ${this.#table} AS f (lock_key, token) ` +
        `SELECT $1, ((${TIMELINE_SQL}) << ${TIMELINE_SHIFT}) + 1 FROM ${DURABLE_COMMIT} ` +
        "WHERE pg_catalog.pg_backend_pid() = $2::int4 " +
        "ON CONFLICT (lock_key) DO UPDATE SET token = GREATEST(f.token + 1, EXCLUDED.token) " +
        "RETURNING token::text AS token, pg_catalog.pg_backend_pid() AS backend_pid",
      values: [key.identity],
      guarded: true,
    });
    return BigInt(rows[0]?.token as string);
  }

  async #create(session: Session) {
    try {
      await session.query({ text: fencingTableSql(this.#table), values: [] });
    } catch (error) {
      // Two processes creating it at once: one loses on the catalog's unique index; the table exists.
      if (sqlState(error) !== "23505" && sqlState(error) !== "42P07") throw error;
    }
  }
}
