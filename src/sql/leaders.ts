/**
 * The statements of an election's record (issue #28): who leads, with what payload, in which term,
 * and until when the term lasts unless renewed, on the server's clock. Kept in the lease table, one
 * row per election, under a key no lock can have (`#leader <key identity>`):
 *
 *   lock_key   '#leader 123'
 *   holders    {"owner": "...", "payload": ..., "holder": "<backend pid, or lease holder id>", "since": <ms>}
 *   expires_at the end of the term, unless the leader renews it
 *   token      the term: the fencing token of the leader's grant
 *
 * A record counts only while its holder still holds the election's key: a session lock's holder in
 * pg_locks, a lease's holder as a live entry of the key's row. So a leader that died is not reported,
 * even before its term runs out.
 */
import type { LockKey } from "../key.js";
import { DURABLE_COMMIT, lockTag, type Statement } from "./advisory.js";

/** The row key of the election on `key`: `#` starts no lock's identity (digits, sign, comma). */
export function recordKey(key: LockKey): string {
  return `#leader ${key.identity}`;
}

/** The server's time in ms since the epoch. */
const NOW_MS = "(extract(epoch FROM now()) * 1000)::int8";
const MS = "* interval '1 millisecond'";

/** How a record's holder is found holding the key: in pg_locks, or in the lease table. */
export type HolderKind = "session" | "lease";

export interface LeaderStatements {
  /** Records the term `term` of `holder`; one row when recorded, none when a later term is recorded. */
  proclaim(key: LockKey, record: string, term: bigint, termMs: number): Statement;
  /** Extends the term by termMs; one row when renewed, none when the term is over or replaced. */
  renew(key: LockKey, term: bigint, termMs: number): Statement;
  /** Ends the term now (a resignation). */
  resign(key: LockKey, term: bigint): Statement;
  /** The record, when its term is alive and its holder still holds the key: `record` (json text), `term`. */
  read(key: LockKey): Statement;
  /**
   * Takes the key from a holder whose term ran out without a renewal (a frozen leader): ends its
   * session, or deletes its lease entry. One row per holder deposed.
   */
  depose(key: LockKey): Statement;
}

export function leaderStatements(table: string, kind: HolderKind): LeaderStatements {
  // `$2::text::jsonb`, not `$2::jsonb`: told the parameter is jsonb, postgres.js sends a string as a
  // JSON string, and the record became an array.
  // Whether the record `r`'s holder holds the key whose tag or identity is in $2.. .
  const holds =
    kind === "session"
      ? "EXISTS (SELECT 1 FROM pg_catalog.pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted " +
        "AND l.pid = (r.holders ->> 'holder')::int4 AND l.classid = $2::oid AND l.objid = $3::oid AND l.objsubid = $4::int2 " +
        "AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))"
      : `EXISTS (SELECT 1 FROM ${table} AS c WHERE c.lock_key = $2::text AND (c.holders ->> (r.holders ->> 'holder'))::int8 > ${NOW_MS})`;
  const keyValues = (key: LockKey): unknown[] => (kind === "session" ? lockTag(key) : [key.identity]);
  return {
    proclaim: (key, record, term, termMs) => ({
      text:
        `INSERT INTO ${table} AS l (lock_key, shared, holders, expires_at, token) ` +
        `SELECT $1::text, false, $2::text::jsonb || pg_catalog.jsonb_build_object('since', ${NOW_MS}), now() + $4::int8 ${MS}, $3::int8 ` +
        `FROM ${DURABLE_COMMIT} ` +
        "ON CONFLICT (lock_key) DO UPDATE SET holders = EXCLUDED.holders, expires_at = EXCLUDED.expires_at, token = EXCLUDED.token " +
        "WHERE l.token <= EXCLUDED.token RETURNING 1 AS proclaimed",
      values: [recordKey(key), record, String(term), termMs],
    }),
    renew: (key, term, termMs) => ({
      text:
        `UPDATE ${table} AS l SET expires_at = now() + $3::int8 ${MS} FROM ${DURABLE_COMMIT} ` +
        "WHERE l.lock_key = $1::text AND l.token = $2::int8 AND l.expires_at > now() RETURNING 1 AS renewed",
      values: [recordKey(key), String(term), termMs],
    }),
    resign: (key, term) => ({
      text: `DELETE FROM ${table} WHERE lock_key = $1::text AND token = $2::int8`,
      values: [recordKey(key), String(term)],
    }),
    read: (key) => ({
      text:
        `SELECT r.holders::text AS record, r.token::text AS term FROM ${table} AS r ` +
        `WHERE r.lock_key = $1::text AND r.expires_at > now() AND ${holds}`,
      values: [recordKey(key), ...keyValues(key)],
    }),
    depose: (key) => ({
      text:
        kind === "session"
          ? "SELECT pg_catalog.pg_terminate_backend(l.pid) AS deposed FROM pg_catalog.pg_locks AS l " +
            `JOIN ${table} AS r ON l.pid = (r.holders ->> 'holder')::int4 ` +
            "WHERE r.lock_key = $1::text AND r.expires_at <= now() AND l.locktype = 'advisory' AND l.granted " +
            "AND l.classid = $2::oid AND l.objid = $3::oid AND l.objsubid = $4::int2 " +
            "AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())"
          : `UPDATE ${table} AS c SET holders = c.holders - (r.holders ->> 'holder') FROM ${table} AS r ` +
            "WHERE r.lock_key = $1::text AND r.expires_at <= now() AND c.lock_key = $2::text " +
            "AND c.holders ? (r.holders ->> 'holder') RETURNING 1 AS deposed",
      values: [recordKey(key), ...keyValues(key)],
    }),
  };
}

/**
 * Every election whose term is alive, as recorded (its holder is not checked: the reader may not know
 * whether it is a session's or a lease's): `key` (the row's key), `record` (json text), `term`, `remaining` (ms).
 */
export function listLeaders(table: string): Statement {
  return {
    text:
      `SELECT r.lock_key AS key, r.holders::text AS record, r.token::text AS term, ` +
      `(extract(epoch FROM r.expires_at) * 1000)::int8 - ${NOW_MS} AS remaining FROM ${table} AS r ` +
      "WHERE r.lock_key LIKE '#leader %' AND r.expires_at > now() ORDER BY r.lock_key",
    values: [],
  };
}

/** The key of a record's row key (`#leader 123` → "123"), as an identity. */
export function keyOfRecord(rowKey: string): string {
  return rowKey.slice("#leader ".length);
}
