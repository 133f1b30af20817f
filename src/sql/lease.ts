/**
 * The lease table and the four statements on it. Every statement is one short transaction of its own
 * (no session state, no prepared statement, no advisory lock), so any pooler or HTTP driver can run
 * it. Expiry is judged by the server's clock only (`now()` of the statement's transaction).
 *
 * One row per key that someone holds or held within its last TTL (a released row stays until its last
 * expiry has passed, see release):
 *
 *   CREATE SEQUENCE IF NOT EXISTS pglock_leases_token;
 *   CREATE TABLE IF NOT EXISTS pglock_leases (
 *     lock_key text PRIMARY KEY,      -- "123" for an int64 key, "1,2" for a pair (LockKey.identity)
 *     shared boolean NOT NULL,        -- the mode of the holders
 *     holders jsonb NOT NULL,         -- {"<holder id>": <expiry, ms since the epoch, server clock>}
 *     expires_at timestamptz NOT NULL,-- the latest expiry among the holders: for the clean-up
 *     token bigint NOT NULL           -- the fencing token of the latest grant
 *   );
 *
 * Why one row per key: `INSERT ... ON CONFLICT DO UPDATE ... WHERE` locks the key's row and judges
 * the newest committed version of it, so a grant is atomic in one statement, under READ COMMITTED,
 * with no lock held across statements. https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT
 */

import { checkTableName } from "../validate.js";
import { DURABLE_COMMIT, TIMELINE_SQL } from "./advisory.js";

/**
 * A token is (timeline << 48) + a value of the table's sequence. The sequence increases on every
 * grant, so tokens increase per key (and across keys). After a failover the promoted standby is on
 * a higher timeline, so its tokens exceed every token of the old primary, even those whose commits
 * never reached it, exactly as the session Locker's tokens do (advisory/fencing.ts). 2^48 grants per
 * timeline; timelines up to 2^15 - 1. The timeline is the first 8 hex digits of the WAL file name.
 * https://www.postgresql.org/docs/current/continuous-archiving.html#BACKUP-TIMELINES
 */
export const LEASE_TIMELINE_SHIFT = 48;

/** The SQL that creates the lease table and its token sequence, for those who create them by migration. */
export function leaseTableSql(table = "pglock_leases"): string {
  return createStatements(checkLeaseTable(table, "leaseTableSql", "table")).join(";\n");
}

/** The table name, checked: the sequence's name adds `_token` to it, and stays within 63 bytes. */
export function checkLeaseTable(table: unknown, where: string, name: string): string {
  const checked = checkTableName(table, where, name) as string;
  checkTableName(`${checked}_token`, where, name);
  return checked;
}

export function createStatements(table: string): string[] {
  return [
    `CREATE SEQUENCE IF NOT EXISTS ${table}_token`,
    `CREATE TABLE IF NOT EXISTS ${table} (lock_key text PRIMARY KEY, shared boolean NOT NULL, ` +
      "holders jsonb NOT NULL, expires_at timestamptz NOT NULL, token bigint NOT NULL)",
  ];
}

/**
 * The row that keeps the longest TTL used on the table (in `token`), which clean-up waits for. Its key
 * can be no lock's: a key's identity is digits, a sign and a comma.
 */
export const TTL_ROW = "#ttl";

/**
 * The holder entry of a run's `atLeastMs`: alive until the run's time is up, so every grant of the key
 * (a lease's, or a session lock's with `atLeastMs`) is refused until then. No holder id looks like it.
 */
export const AT_LEAST = "#at-least";

/** The row of a key's queue of waiters is this followed by the key's identity (no lock's key starts with #). */
export const QUEUE_ROW = "#queue ";

/** acquire's $5 for the first try of a wait: refused while anyone waits ("~" sorts after every ticket). */
export const QUEUE_ALL = "~";

/** acquire's $5 for a try-lock: takes a free key whether or not others wait (no ticket sorts before ""). */
export const QUEUE_NONE = "";

/** Rows one clean-up statement deletes at most; a full batch is followed by another (lease/locker.ts). */
export const CLEAN_UP_BATCH = 1_000;

/** The server's time in ms since the epoch, as the holders' expiries are written. */
const NOW_MS = "(extract(epoch FROM now()) * 1000)::int8";
/** Whether the holder entry `h` (from jsonb_each) is alive on the server's clock. */
const ALIVE = `(h.value #>> '{}')::int8 > ${NOW_MS}`;

export interface LeaseStatements {
  /**
   * $1 key, $2 holder, $3 shared, $4 ttl ms, $5 the requester's place in the key's queue, $6 how long
   * that place lasts: one row, `token` when granted (null when refused) and `ahead`, how many live
   * waiters queued before the requester. $5 is a ticket of `enqueue`
   * (refused while an older waiter's ticket is alive; renewed when refused, taken out when granted),
   * `QUEUE_ALL` (refused while anyone waits: the first try of a wait), or `QUEUE_NONE` (a try-lock).
   */
  readonly acquire: string;
  /** $1 key, $2 holder, $3 ms the place lasts unless renewed: a place in the key's queue; one row, `ticket`. */
  readonly enqueue: string;
  /** $1 key, $2 ticket: leaves the key's queue. */
  readonly dequeue: string;
  /**
   * $1 keys, $2 holders (text arrays of one length), $3 ttl ms: renews many leases in one statement,
   * one row `{ renewed: "<key> <holder>" }` per lease renewed; a lease gone or expired has no row.
   */
  readonly renew: string;
  /** $1 key, $2 holder: `released` is 1 when the holder had an entry (alive or not), else 0; the row stays. */
  readonly release: string;
  /**
   * $1 this Locker's ttl ms: deletes up to CLEAN_UP_BATCH rows whose every holder expired longer ago
   * than the longest TTL used on the table; `deleted` says how many.
   */
  readonly cleanUp: string;
  /** $1 ttl ms: records it as the longest TTL used on the table, if it is (the TTL_ROW row). */
  readonly announceTtl: string;
  /**
   * $1 key, $2 at-least ms: records a run of the key, which keeps it taken for $2 ms by the server's
   * clock (the AT_LEAST entry among its holders), unless an earlier run keeps it still. One row:
   * `reserved` 1 or 0, and `kept_ms`, how long the earlier run keeps it (null if unknown).
   */
  readonly reserve: string;
  /**
   * $1 key: frees it at once for everyone (an operator's `pglock release`): every holder entry goes,
   * a run's AT_LEAST entry too. One row, `revoked`: how many holders were alive.
   */
  readonly revoke: string;
  /**
   * $1 a key's identity, or null for every key: one row per live holder (a run's AT_LEAST entry too):
   * `key` (the identity), `shared`, `holder`, `remaining` (ms until it expires, server clock), `token`.
   */
  readonly inspect: string;
  /** $1 keys (text array): one row per live holder of any of them, `key` (the identity) and `holder` (runs not counted). */
  readonly holders: string;
  readonly create: readonly string[];
}

export function leaseStatements(table: string): LeaseStatements {
  const token = `((${TIMELINE_SQL}) << ${LEASE_TIMELINE_SHIFT}) + pg_catalog.nextval('${table}_token')`;
  // Conflicting holders: alive, not the requester itself (a retried grant of the same holder id is
  // the same lease), and not both shared.
  const conflicts = (row: string, shared: string) =>
    `SELECT 1 FROM pg_catalog.jsonb_each(${row}.holders) AS h WHERE h.key <> $2::text AND ${ALIVE} AND NOT (${row}.shared AND ${shared})`;
  return {
    acquire:
      // Fair waits (issue #28): the grant is refused while a waiter that queued earlier is alive, so
      // waiters are granted in the order they queued, across processes. The queue is a row of its own
      // (QUEUE_ROW): {"<ticket>": <alive until, ms>}, a ticket being the server's time of queueing,
      // zero-padded, then the holder id, so that tickets sort in queueing order.
      `WITH g AS (INSERT INTO ${table} AS l (lock_key, shared, holders, expires_at, token) ` +
      `SELECT $1::text, $3::bool, pg_catalog.jsonb_build_object($2::text, ${NOW_MS} + $4::int8), ` +
      `now() + $4::int8 * interval '1 millisecond', ${token} FROM ${DURABLE_COMMIT} ` +
      // Refused at once when this statement's snapshot already shows a conflict: no sequence value is
      // spent on a poll. The ON CONFLICT condition below is what decides, on the newest row version.
      `WHERE NOT EXISTS (SELECT 1 FROM ${table} AS c WHERE c.lock_key = $1::text AND EXISTS (${conflicts("c", "$3::bool")})) ` +
      `AND NOT EXISTS (SELECT 1 FROM ${table} AS q, pg_catalog.jsonb_each(q.holders) AS h WHERE q.lock_key = '${QUEUE_ROW}' || $1::text ` +
      `AND ${ALIVE} AND h.key COLLATE "C" < $5::text COLLATE "C") ` +
      "ON CONFLICT (lock_key) DO UPDATE SET shared = EXCLUDED.shared, " +
      // The new holder joins the live holders; expired entries are dropped on the way.
      `holders = (SELECT coalesce(pg_catalog.jsonb_object_agg(h.key, h.value), '{}'::jsonb) FROM pg_catalog.jsonb_each(l.holders) AS h ` +
      `WHERE h.key <> $2::text AND ${ALIVE}) || EXCLUDED.holders, ` +
      // The key's last token is a floor: tokens of a key never go back, whatever an operator did to
      // the sequence (issue #26).
      `expires_at = GREATEST(l.expires_at, EXCLUDED.expires_at), token = GREATEST(l.token + 1, ${token}) ` +
      `WHERE NOT EXISTS (${conflicts("l", "EXCLUDED.shared")}) ` +
      "RETURNING l.token::text AS token), " +
      // The requester's place: taken out when granted, kept alive when refused.
      `queued AS (UPDATE ${table} AS q SET holders = CASE WHEN EXISTS (SELECT 1 FROM g) THEN q.holders - $5::text ` +
      `ELSE q.holders || pg_catalog.jsonb_build_object($5::text, ${NOW_MS} + $6::int8) END, ` +
      "expires_at = GREATEST(q.expires_at, now() + $6::int8 * interval '1 millisecond') " +
      `WHERE q.lock_key = '${QUEUE_ROW}' || $1::text AND q.holders ? $5::text) ` +
      // One row: the token when granted (else null), and how many live waiters are ahead of the requester.
      "SELECT (SELECT g.token FROM g) AS token, " +
      `(SELECT count(*) FROM ${table} AS q, pg_catalog.jsonb_each(q.holders) AS h WHERE q.lock_key = '${QUEUE_ROW}' || $1::text ` +
      `AND ${ALIVE} AND h.key COLLATE "C" < $5::text COLLATE "C")::int4 AS ahead`,
    enqueue:
      `WITH tk AS (SELECT pg_catalog.lpad((${NOW_MS})::text, 16, '0') || ' ' || $2::text AS ticket) ` +
      `INSERT INTO ${table} AS l (lock_key, shared, holders, expires_at, token) ` +
      `SELECT '${QUEUE_ROW}' || $1::text, false, pg_catalog.jsonb_build_object(tk.ticket, ${NOW_MS} + $3::int8), ` +
      "now() + $3::int8 * interval '1 millisecond', 0 FROM tk " +
      // Places whose waiter stopped renewing them (it died, or gave up without a word) go on the way.
      `ON CONFLICT (lock_key) DO UPDATE SET holders = (SELECT coalesce(pg_catalog.jsonb_object_agg(h.key, h.value), '{}'::jsonb) ` +
      `FROM pg_catalog.jsonb_each(l.holders) AS h WHERE ${ALIVE}) || EXCLUDED.holders, ` +
      "expires_at = GREATEST(l.expires_at, EXCLUDED.expires_at) RETURNING (SELECT tk.ticket FROM tk) AS ticket",
    dequeue: `UPDATE ${table} SET holders = holders - $2::text WHERE lock_key = '${QUEUE_ROW}' || $1::text AND holders ? $2::text`,
    renew:
      // Many leases in one statement (issue #26: one statement each fell behind at 10,000 leases).
      // Grouped by key, so that shared holders of one key renew in the one update of its row. Only a
      // live entry of a holder is renewed: never one that expired (someone may hold the key since),
      // and never re-inserted (openbao/openbao#2100 is that bug).
      // Multi-argument unnest exists only unqualified; ROWS FROM is its schema-qualified spelling.
      "WITH r AS (SELECT u.lock_key, u.holder FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) " +
      "AS u(lock_key, holder)), " +
      `renewed AS (UPDATE ${table} AS l SET holders = l.holders || (SELECT pg_catalog.jsonb_object_agg(r.holder, ${NOW_MS} + $3::int8) ` +
      `FROM r WHERE r.lock_key = l.lock_key AND (l.holders ->> r.holder)::int8 > ${NOW_MS}), ` +
      "expires_at = GREATEST(l.expires_at, now() + $3::int8 * interval '1 millisecond') " +
      `FROM ${DURABLE_COMMIT} ` +
      `WHERE EXISTS (SELECT 1 FROM r WHERE r.lock_key = l.lock_key AND (l.holders ->> r.holder)::int8 > ${NOW_MS}) ` +
      "RETURNING l.lock_key, l.holders) " +
      // One column of a one-word name: drivers may rename columns (postgres.js's camel transform).
      `SELECT r.lock_key || ' ' || r.holder AS renewed FROM r JOIN renewed ON renewed.lock_key = r.lock_key ` +
      `WHERE (renewed.holders ->> r.holder)::int8 > ${NOW_MS}`,
    release:
      // The row stays, even with no holder left, until its last expiry has passed (then cleanUp
      // deletes it): a grant then always finds the row and draws its token under the row's lock (the
      // ON CONFLICT path). Deleted at once, a grant whose INSERT had drawn its token before a stall
      // could insert a new row after a later holder's grant, with a lower token (seen: tokens out of
      // grant order with 4 test files at a time on 2 CPUs). cleanUp deletes a row only after its last
      // expiry, later than a TTL after any grant it saw: an INSERT stalled that long answers after its
      // holder's deadline, and the Locker does not take it for a grant.
      `WITH u AS (UPDATE ${table} AS l SET holders = l.holders - $2::text WHERE l.lock_key = $1::text ` +
      "AND l.holders ? $2::text RETURNING 1) SELECT count(*)::int4 AS released FROM u",
    cleanUp:
      // A row goes only once its last expiry is older than the longest TTL any Locker uses on the
      // table: a grant whose INSERT drew its token and then stalled answers after its own TTL by
      // then, and is not taken for a grant. With one retention for all, a short-TTL Locker's
      // clean-up let a long-TTL grant land with a token below a later grant's (issue #26).
      // SKIP LOCKED: clean-ups of several processes never wait for each other or for a grant.
      `WITH retention AS (SELECT coalesce((SELECT token FROM ${table} WHERE lock_key = '${TTL_ROW}'), $1::int8) ` +
      "* interval '1 millisecond' AS span), " +
      `d AS (DELETE FROM ${table} AS l WHERE l.lock_key IN (SELECT c.lock_key FROM ${table} AS c, retention ` +
      `WHERE c.expires_at < now() - retention.span LIMIT ${CLEAN_UP_BATCH} FOR UPDATE OF c SKIP LOCKED) ` +
      "AND l.expires_at < now() RETURNING 1) SELECT count(*)::int4 AS deleted FROM d",
    reserve:
      `WITH r AS (INSERT INTO ${table} AS l (lock_key, shared, holders, expires_at, token) ` +
      `SELECT $1::text, false, pg_catalog.jsonb_build_object('${AT_LEAST}', ${NOW_MS} + $2::int8), ` +
      `now() + $2::int8 * interval '1 millisecond', ${token} FROM ${DURABLE_COMMIT} ` +
      "ON CONFLICT (lock_key) DO UPDATE SET holders = l.holders || EXCLUDED.holders, " +
      "expires_at = GREATEST(l.expires_at, EXCLUDED.expires_at) " +
      `WHERE NOT coalesce((l.holders ->> '${AT_LEAST}')::int8 > ${NOW_MS}, false) RETURNING 1) ` +
      // The earlier run, as this statement's snapshot shows it (the CTE's own write is not in it).
      "SELECT (SELECT count(*) FROM r)::int4 AS reserved, " +
      `(SELECT (c.holders ->> '${AT_LEAST}')::int8 - ${NOW_MS} FROM ${table} AS c WHERE c.lock_key = $1::text)::int8 AS kept_ms`,
    announceTtl:
      `INSERT INTO ${table} AS l (lock_key, shared, holders, expires_at, token) ` +
      `VALUES ('${TTL_ROW}', false, '{}'::jsonb, 'infinity', $1::int8) ` +
      "ON CONFLICT (lock_key) DO UPDATE SET token = EXCLUDED.token WHERE l.token < EXCLUDED.token",
    revoke:
      `UPDATE ${table} AS l SET holders = '{}'::jsonb FROM (SELECT c.lock_key, c.holders FROM ${table} AS c ` +
      "WHERE c.lock_key = $1::text FOR UPDATE) AS old WHERE l.lock_key = old.lock_key " +
      `RETURNING (SELECT count(*) FROM pg_catalog.jsonb_each(old.holders) AS h WHERE ${ALIVE})::int4 AS revoked`,
    // One-word column names here and below: drivers may rename columns (postgres.js's camel transform).
    inspect:
      `SELECT l.lock_key AS key, l.shared, h.key AS holder, (h.value #>> '{}')::int8 - ${NOW_MS} AS remaining, l.token::text AS token ` +
      `FROM ${table} AS l, pg_catalog.jsonb_each(l.holders) AS h WHERE l.lock_key NOT LIKE '#%' AND ${ALIVE} ` +
      "AND ($1::text IS NULL OR l.lock_key = $1::text) ORDER BY l.lock_key, h.key",
    holders:
      `SELECT l.lock_key AS key, h.key AS holder FROM ${table} AS l, pg_catalog.jsonb_each(l.holders) AS h ` +
      `WHERE l.lock_key = ANY($1::text[]) AND h.key <> '${AT_LEAST}' AND ${ALIVE} ORDER BY l.lock_key, h.key`,
    create: createStatements(table),
  };
}
