/**
 * The fencing table's statements. A token is (timeline << 40) + n: 2^40 grants per key per timeline,
 * timelines up to 2^23 - 1. The table:
 *
 *   CREATE TABLE IF NOT EXISTS pglock_fencing (
 *     lock_key text PRIMARY KEY,          -- "123" for an int64 key, "1,2" for a pair
 *     token bigint NOT NULL
 *   );
 */
import type { LockKey } from "../key.js";
import { checkTableName } from "../validate.js";
import { DURABLE_COMMIT, type Statement, TIMELINE_SQL } from "./advisory.js";

export const TIMELINE_SHIFT = 40;

/** The SQL that creates the fencing table, for those who create it by migration. */
export function fencingTableSql(table = "pglock_fencing"): string {
  checkTableName(table, "fencingTableSql", "table");
  return `CREATE TABLE IF NOT EXISTS ${table} (lock_key text PRIMARY KEY, token bigint NOT NULL)`;
}

/**
 * The next token for `key`, guarded like the lock statements (advisory.ts, onOwnBackend): drawn only
 * on the server session that holds the lock. The floor is the server's timeline in the high bits: a
 * promoted standby is on a higher timeline, so its first token exceeds every token of the old
 * primary, even the ones whose commits did not reach it (asynchronous replication).
 * https://www.postgresql.org/docs/current/continuous-archiving.html#BACKUP-TIMELINES
 */
export function nextToken(table: string, key: LockKey): Statement {
  return {
    text:
      `INSERT INTO ${table} AS f (lock_key, token) ` +
      `SELECT $1, ((${TIMELINE_SQL}) << ${TIMELINE_SHIFT}) + 1 FROM ${DURABLE_COMMIT} ` +
      "WHERE pg_catalog.pg_backend_pid() = $2::int4 " +
      "ON CONFLICT (lock_key) DO UPDATE SET token = GREATEST(f.token + 1, EXCLUDED.token) " +
      "RETURNING token::text AS token, pg_catalog.pg_backend_pid() AS backend_pid",
    values: [key.identity],
    guarded: true,
  };
}
