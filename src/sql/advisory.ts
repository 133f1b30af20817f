/**
 * The advisory-lock SQL, one function per statement, for both key spaces. Every statement is
 * parameterized and schema-qualified, so a user's search_path cannot shadow a function.
 * https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS
 */
import type { LockKey, LockMode } from "../key.js";

export interface Statement {
  readonly text: string;
  readonly values: readonly unknown[];
  /**
   * The text has one parameter more than `values`: the backend pid the statement may act on, which
   * the Session supplies. See {@link onOwnBackend}.
   */
  readonly guarded?: boolean;
  /**
   * Worth a named prepared statement: a lock statement that runs again and again on the same
   * session. The server then parses and plans it once per connection. Drivers that cannot keep a
   * server session per connection (a caller's client, maybe behind a transaction pooler) ignore it.
   */
  readonly prepare?: boolean;
}

/**
 * `SELECT <expr> AS <name>`, evaluated only when the statement reaches the server session pglock
 * opened (else NULL), plus that session's pid as `backend_pid`. A pooler in transaction mode
 * (PgBouncer pool_mode = transaction) can send each statement to another server session, where a
 * session-level lock would be taken or released on someone else's behalf; the guard makes such a
 * statement do nothing, and the Session reports the change.
 * CASE evaluates its THEN branch only when the condition holds (the lock functions are volatile, so
 * they are never folded early): https://www.postgresql.org/docs/current/functions-conditional.html
 */
function onOwnBackend(expr: string, values: unknown[], name = "ok", from = ""): Statement {
  return {
    text:
      `SELECT CASE WHEN pg_catalog.pg_backend_pid() = $${values.length + 1}::int4 THEN ${expr} END AS ${name}, ` +
      `pg_catalog.pg_backend_pid() AS backend_pid${from}`,
    values,
    guarded: true,
  };
}

/** `$1::int8`, or `$1::int4, $2::int4` for a pair, starting at parameter `first`. */
function keyArgs(key: LockKey, first = 1): { args: string; values: unknown[] } {
  if (key.pair) {
    return { args: `$${first}::int4, $${first + 1}::int4`, values: [key.pair[0], key.pair[1]] };
  }
  return { args: `$${first}::int8`, values: [String(key.id)] };
}

const suffix = (mode: LockMode) => (mode === "shared" ? "_shared" : "");

/**
 * The hot statements' texts, built once per function, mode and key space: they are prepared by name
 * (Statement.prepare), and a lock call then builds no string.
 */
const hotTexts = new Map<string, string>();
function hot(fn: string, mode: LockMode, key: LockKey, wrap = (call: string) => call): Statement {
  const { args, values } = keyArgs(key);
  const id = `${fn}${suffix(mode)}/${key.pair ? 2 : 1}`;
  let text = hotTexts.get(id);
  if (text === undefined) {
    text = onOwnBackend(wrap(`pg_catalog.${fn}${suffix(mode)}(${args})`), values).text;
    hotTexts.set(id, text);
  }
  return { text, values, guarded: true, prepare: true };
}

/** One row `{ ok: boolean }`: whether the lock was taken without waiting. */
export function tryLock(key: LockKey, mode: LockMode): Statement {
  return hot("pg_try_advisory_lock", mode, key);
}

/**
 * Waits on the server until granted (no polling: a release hands over to the next waiter at once).
 *
 * With `sliceMs`, the wait lasts at most that long and then fails with 55P03 (lock_not_available),
 * and the caller waits again. A statement holds a snapshot while it runs, so an endless wait would
 * hold back the xmin horizon (VACUUM) and block `CREATE INDEX CONCURRENTLY`, which waits for every
 * older snapshot, while the waiters wait for the migration that runs it (issue #23). lock_timeout is
 * set for this statement's implicit transaction only (set_config's is_local), from a subquery that
 * is evaluated before the lock call: a volatile function keeps the planner from pulling it up.
 * https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-LOCK-TIMEOUT
 *
 * `holds` publishes what the waiting task holds (its sessions and keys) at the head of the text,
 * where pg_stat_activity.query shows it to the deadlock checks of other processes (waits.ts). A wait
 * whose task holds nothing sends the one prepared text, as before.
 */
export function waitLock(
  key: LockKey,
  mode: LockMode,
  options: { sliceMs?: number; holds?: readonly { pid: number; key: LockKey }[] } = {},
): Statement {
  const { sliceMs, holds = [] } = options;
  const wait =
    sliceMs === undefined
      ? // The function returns void, which IS NOT NULL: ok is true once granted.
        hot("pg_advisory_lock", mode, key, (call) => `${call} IS NOT NULL`)
      : slicedWait(key, mode, sliceMs);
  if (holds.length === 0) return wait;
  const claim = holds.map((held) => `${held.pid}:${lockTag(held.key).join(".")}`).join(" ");
  // Only digits, dots, colons and spaces go into the comment: pids and pg_locks tags pglock computed.
  // A text of its own per claim, so it is not prepared by name.
  return {
    text: `/* pglock waits ${lockTag(key).join(".")} holds ${claim} */ ${wait.text}`,
    values: wait.values,
    guarded: true,
  };
}

/** waitLock's statement with its lock_timeout of `sliceMs`, the slice's value its last parameter but the pid's. */
function slicedWait(key: LockKey, mode: LockMode, sliceMs: number): Statement {
  const { args, values } = keyArgs(key);
  const statementValues = [...values, String(Math.max(1, Math.round(sliceMs)))];
  const id = `pg_advisory_lock${suffix(mode)}/${key.pair ? 2 : 1}/sliced`;
  let text = hotTexts.get(id);
  if (text === undefined) {
    const from = ` FROM (SELECT pg_catalog.set_config('lock_timeout', $${values.length + 1}::text, true)) AS slice`;
    text = onOwnBackend(
      `pg_catalog.pg_advisory_lock${suffix(mode)}(${args}) IS NOT NULL`,
      statementValues,
      "ok",
      from,
    ).text;
    hotTexts.set(id, text);
  }
  return { text, values: statementValues, guarded: true, prepare: true };
}

/** The server's version as a number (150004 for 15.4). */
export function serverVersion(): Statement {
  return { text: "SELECT pg_catalog.current_setting('server_version_num')::int AS v", values: [] };
}

/** One row `{ ok: boolean }`: false when this session did not hold the lock in that mode. */
export function unlock(key: LockKey, mode: LockMode): Statement {
  return hot("pg_advisory_unlock", mode, key);
}

/** Releases `levels` stacked levels in one round trip: one row `{ ok }` per level. */
export function unlockLevels(key: LockKey, mode: LockMode, levels: number): Statement {
  const { args, values } = keyArgs(key, 2);
  return onOwnBackend(
    `pg_catalog.pg_advisory_unlock${suffix(mode)}(${args})`,
    [levels, ...values],
    "ok",
    " FROM pg_catalog.generate_series(1, $1::int4)",
  );
}

/**
 * One row `{ granted: boolean }`: whether this backend holds the lock in that mode, per `pg_locks`.
 * This restores certainty after a cancel or timeout, which PostgreSQL can raise even though it
 * granted the lock. pg_locks shows an int8 key as classid = high 32 bits, objid = low 32 bits,
 * objsubid = 1, and a pair as classid = a, objid = b, objsubid = 2 (both as unsigned oids).
 * https://www.postgresql.org/docs/current/view-pg-locks.html
 */
export function holdsLock(key: LockKey, mode: LockMode): Statement {
  const [classid, objid, objsubid] = lockTag(key);
  return onOwnBackend(
    "EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' " +
      "AND pid = pg_catalog.pg_backend_pid() AND granted AND mode = $1 " +
      "AND classid = $2::oid AND objid = $3::oid AND objsubid = $4::int2)",
    [mode === "shared" ? "ShareLock" : "ExclusiveLock", classid, objid, objsubid],
    "granted",
  );
}

/**
 * Every advisory lock of the current database, held and awaited, with who holds or awaits it: the
 * session's application_name, and for a waiter the pids it waits for (pg_blocking_pids, 9.6+; as
 * text, `{1,2}`, which every driver returns alike).
 * `waitstart` exists from PostgreSQL 14 (pass false before). Granted first, then waiters in the order
 * they began. https://www.postgresql.org/docs/current/view-pg-locks.html
 */
export function advisoryLocks(options: { key?: LockKey | undefined; waitstart: boolean }): Statement {
  const waitstart = options.waitstart ? "l.waitstart" : "NULL::timestamptz";
  const values: unknown[] = [];
  let filter = "";
  if (options.key) {
    values.push(...lockTag(options.key));
    filter = "AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = $3::int2";
  }
  return {
    text: `SELECT l.classid::text AS classid, l.objid::text AS objid, l.objsubid, l.mode, l.granted, l.pid,
              a.usename AS user, a.application_name, a.client_addr::text AS client_address,
              ${waitstart} AS waiting_since, pg_catalog.now() AS now,
              CASE WHEN l.granted THEN '{}' ELSE pg_catalog.pg_blocking_pids(l.pid)::text END AS waiting_for,
              CASE WHEN l.granted THEN NULL ELSE a.query END AS query
         FROM pg_catalog.pg_locks l
         LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory'
          AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
          ${filter}
        ORDER BY l.granted DESC, ${waitstart} NULLS FIRST, l.pid`,
    values,
  };
}

/**
 * The granted advisory locks among `keys` in this database, one row per holder: `tag`
 * ("classid.objid.objsubid", as tagText), the session's `pid` and `application` (its application_name).
 */
export function heldAmong(keys: readonly LockKey[]): Statement {
  return {
    text:
      "SELECT l.classid::text || '.' || l.objid::text || '.' || l.objsubid::text AS tag, l.pid, a.application_name AS application " +
      "FROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid " +
      "WHERE l.locktype = 'advisory' AND l.granted " +
      "AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) " +
      "AND l.classid::text || '.' || l.objid::text || '.' || l.objsubid::text = ANY($1::text[]) ORDER BY l.pid",
    values: [keys.map(tagText)],
  };
}

/** A key's pg_locks tag as one string. */
export function tagText(key: LockKey): string {
  return lockTag(key).join(".");
}

/** The (classid, objid, objsubid) under which pg_locks shows a key, as strings for oid parameters. */
export function lockTag(key: LockKey): [string, string, number] {
  if (key.pair) {
    return [String(key.pair[0] >>> 0), String(key.pair[1] >>> 0), 2];
  }
  const unsigned = BigInt.asUintN(64, key.id as bigint);
  return [String(unsigned >> 32n), String(unsigned & 0xffffffffn), 1];
}

/**
 * What pglock sets on the sessions it owns, for as long as it uses them (and puts back after). The
 * server's timeouts, often set per role or database, would otherwise govern pglock's waits:
 * `statement_timeout` and `lock_timeout` end a wait before the caller's own timeout, and
 * `transaction_timeout` (PostgreSQL 17), which counts a lone statement as a transaction, ends the
 * whole session and every lock on it (issue #18). pglock bounds its waits itself.
 * https://www.postgresql.org/docs/current/runtime-config-client.html
 */
export const NEUTRAL_TIMEOUTS: readonly (readonly [string, string])[] = [
  ["statement_timeout", "0"],
  ["lock_timeout", "0"],
  ["transaction_timeout", "0"],
];

/**
 * One row: whether the server is a standby (where advisory locks exclude nobody on the primary),
 * the backend pid and start time, and for each of `settings` its previous value (`previous_<i>`; null where this
 * server has no such setting, which is then left alone) before it is set for this session.
 */
export function describeSession(settings: readonly (readonly [string, string])[] = []): Statement {
  const base =
    "SELECT pg_catalog.pg_is_in_recovery() AS in_recovery, pg_catalog.pg_backend_pid() AS backend_pid, " +
    // As epoch seconds: a timestamp's text depends on the session's DateStyle and TimeZone.
    "(SELECT pg_catalog.date_part('epoch', a.backend_start) FROM pg_catalog.pg_stat_activity a " +
    "WHERE a.pid = pg_catalog.pg_backend_pid())::text AS backend_start, " +
    // In ms whatever unit the setting was given in: waits are sliced just beyond it (waitLock).
    "(SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'deadlock_timeout')::int AS deadlock_timeout_ms";
  const columns = settings.map((_, i) => {
    const [name, value] = [`$${2 * i + 1}`, `$${2 * i + 2}`];
    // current_setting(name, true) is null for a setting this version does not have; the target list
    // is evaluated left to right, so previous_<i> is read before set_config replaces it.
    return (
      `, pg_catalog.current_setting(${name}, true) AS previous_${i}` +
      `, CASE WHEN pg_catalog.current_setting(${name}, true) IS NOT NULL` +
      ` THEN pg_catalog.set_config(${name}, ${value}, false) END AS set_${i}`
    );
  });
  return { text: base + columns.join(""), values: settings.flat() };
}

/**
 * Ends the session `$1` only while it still holds the key `$2..$4` (pglock release --force): a pid that
 * let go in the meantime, or that was reused by another session, is left alone.
 */
export function terminateHolder(pid: number, key: LockKey): Statement {
  return {
    text:
      "SELECT pg_catalog.pg_terminate_backend(l.pid) AS ended FROM pg_catalog.pg_locks l " +
      "WHERE l.pid = $1::int4 AND l.locktype = 'advisory' AND l.granted " +
      "AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) " +
      "AND l.classid = $2::oid AND l.objid = $3::oid AND l.objsubid = $4::int2",
    values: [pid, ...lockTag(key)],
  };
}

/**
 * Ends the server session `pid` if it is still the one that started at `backendStart` (a pid can be
 * reused by a new session once the old one is gone), still shows `lastStatement`, pglock's, and still
 * carries `applicationName`, the one this process set on it. Behind a pooler in session mode
 * (PgBouncer), the same server session can serve another client by now, which sends the same
 * statement texts; its application_name, with its own process nonce (identity.ts), tells it apart
 * (issue #26). A role may end its own sessions.
 * https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-SIGNAL
 */
export function terminateBackend(
  pid: number,
  backendStart: string,
  lastStatement: string | null,
  applicationName: string,
): Statement {
  return {
    text:
      "SELECT pg_catalog.pg_terminate_backend(a.pid) AS ended FROM pg_catalog.pg_stat_activity a " +
      "WHERE a.pid = $1::int4 AND pg_catalog.date_part('epoch', a.backend_start)::text = $2 " +
      // pg_stat_activity keeps the first track_activity_query_size bytes of a query. No statement:
      // the session moved under a transaction pooler, and the one left behind may be idle.
      "AND ($3::text IS NULL OR (a.query <> '' AND a.query = pg_catalog.left($3, pg_catalog.length(a.query)))) " +
      "AND a.application_name = $4",
    values: [pid, backendStart, lastStatement, applicationName],
  };
}

/** Puts settings back as they were: `[name, value]` pairs. */
export function restoreSettings(settings: readonly (readonly [string, string])[]): Statement {
  const calls = settings.map((_, i) => `pg_catalog.set_config($${2 * i + 1}, $${2 * i + 2}, false)`);
  return { text: `SELECT ${calls.join(", ")}`, values: settings.flat() };
}

/** A liveness probe that also tells whether the connection still reaches the same server session. */
export function ping(): Statement {
  return onOwnBackend("true", []);
}

/** Releases every session-level advisory lock of this session (closing a Locker, whose sessions are its own). */
export function unlockAll(): Statement {
  return onOwnBackend("pg_catalog.pg_advisory_unlock_all() IS NOT NULL", []);
}

/** Waits until granted; held until the transaction ends (pg_advisory_xact_lock). */
export function xactLock(key: LockKey, mode: LockMode): Statement {
  const { args, values } = keyArgs(key);
  // The function returns void, which IS NOT NULL: ok is true once granted.
  return { text: `SELECT pg_catalog.pg_advisory_xact_lock${suffix(mode)}(${args}) IS NOT NULL AS ok`, values };
}

/** One row `{ ok }`: whether the transaction-level lock was taken without waiting (pg_try_advisory_xact_lock). */
export function tryXactLock(key: LockKey, mode: LockMode): Statement {
  const { args, values } = keyArgs(key);
  return { text: `SELECT pg_catalog.pg_try_advisory_xact_lock${suffix(mode)}(${args}) AS ok`, values };
}

/**
 * Sets lock_timeout until the end of the transaction (SET LOCAL; undone with a savepoint rolled back
 * to) and returns the value it had, to put back. https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-LOCK-TIMEOUT
 */
export function setLocalLockTimeout(value: string): Statement {
  return {
    text:
      "SELECT pg_catalog.current_setting('lock_timeout') AS previous, " +
      "pg_catalog.set_config('lock_timeout', $1, true) AS lock_timeout",
    values: [value],
  };
}

// Savepoint names are identifiers, never parameters; pglock passes only its own constant.
export function savepoint(name: string): Statement {
  return { text: `SAVEPOINT ${name}`, values: [] };
}
export function releaseSavepoint(name: string): Statement {
  return { text: `RELEASE SAVEPOINT ${name}`, values: [] };
}
export function rollbackToSavepoint(name: string): Statement {
  return { text: `ROLLBACK TO SAVEPOINT ${name}`, values: [] };
}

/** A try-lock or a release that can travel with others in one statement. */
export interface BatchOp {
  readonly op: "try" | "unlock";
  readonly key: LockKey;
  readonly mode: LockMode;
}

const BATCH_CODES = { try: { exclusive: 1, shared: 2 }, unlock: { exclusive: 3, shared: 4 } } as const;

/**
 * One row `{ granted }` per op, in order: whether this backend holds the op's key in the op's mode,
 * per `pg_locks` (as {@link holdsLock}, for a whole batch). After a batch failed part-way, this says
 * exactly which of its ops took effect: session-level locks survive the statement's failure.
 */
export function holdsLocks(ops: readonly BatchOp[]): Statement {
  const modes: string[] = [];
  const classids: string[] = [];
  const objids: string[] = [];
  const objsubids: number[] = [];
  for (const { key, mode } of ops) {
    const [classid, objid, objsubid] = lockTag(key);
    modes.push(mode === "shared" ? "ShareLock" : "ExclusiveLock");
    classids.push(classid);
    objids.push(objid);
    objsubids.push(objsubid);
  }
  return onOwnBackend(
    "EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' " +
      "AND l.pid = pg_catalog.pg_backend_pid() AND l.granted AND l.mode = t.mode " +
      "AND l.classid = t.classid AND l.objid = t.objid AND l.objsubid = t.objsubid)",
    [modes, classids, objids, objsubids],
    "granted",
    " FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::oid[]), pg_catalog.unnest($3::oid[]), " +
      "pg_catalog.unnest($4::int2[])) WITH ORDINALITY AS t(mode, classid, objid, objsubid, i) " +
      "ORDER BY t.i",
  );
}

/**
 * Many try-locks and releases in one round trip, as a database groups commits: one row `{ ok }`
 * per op, in order. Each row runs exactly the function its op names (CASE evaluates one branch).
 */
export function batch(ops: readonly BatchOp[]): Statement {
  const codes: number[] = [];
  const ids: (string | null)[] = [];
  const as: (number | null)[] = [];
  const bs: (number | null)[] = [];
  for (const { op, key, mode } of ops) {
    codes.push(BATCH_CODES[op][mode] + (key.pair ? 4 : 0));
    ids.push(key.pair ? null : String(key.id));
    as.push(key.pair ? key.pair[0] : null);
    bs.push(key.pair ? key.pair[1] : null);
  }
  batchText ??= onOwnBackend(
    "CASE t.code " +
      "WHEN 1 THEN pg_catalog.pg_try_advisory_lock(t.id) " +
      "WHEN 2 THEN pg_catalog.pg_try_advisory_lock_shared(t.id) " +
      "WHEN 3 THEN pg_catalog.pg_advisory_unlock(t.id) " +
      "WHEN 4 THEN pg_catalog.pg_advisory_unlock_shared(t.id) " +
      "WHEN 5 THEN pg_catalog.pg_try_advisory_lock(t.a, t.b) " +
      "WHEN 6 THEN pg_catalog.pg_try_advisory_lock_shared(t.a, t.b) " +
      "WHEN 7 THEN pg_catalog.pg_advisory_unlock(t.a, t.b) " +
      "WHEN 8 THEN pg_catalog.pg_advisory_unlock_shared(t.a, t.b) END",
    [codes, ids, as, bs], // numbers the parameters: the backend pid comes fifth
    "ok",
    // Multi-argument unnest exists only unqualified; ROWS FROM is its schema-qualified spelling.
    " FROM ROWS FROM (pg_catalog.unnest($1::int4[]), pg_catalog.unnest($2::int8[]), pg_catalog.unnest($3::int4[]), " +
      "pg_catalog.unnest($4::int4[])) WITH ORDINALITY AS t(code, id, a, b, i) " +
      "ORDER BY t.i",
  ).text;
  // One text for every batch (the ops travel as arrays), so it is prepared once per connection too.
  return { text: batchText, values: [codes, ids, as, bs], guarded: true, prepare: true };
}

let batchText: string | undefined;

/**
 * The server's timeline as an int8: the first 8 hex digits of the current WAL file's name. Fails on a
 * standby (no current WAL position), where no token may be drawn anyway.
 * https://www.postgresql.org/docs/current/continuous-archiving.html#BACKUP-TIMELINES
 */
export const TIMELINE_SQL =
  "('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int8";

/**
 * A FROM item that makes the statement's own commit durable whatever the session's
 * synchronous_commit (many deployments set it off): a token or a lease that a crash could forget
 * would be drawn again, lower (issue #26). is_local lasts until the end of the statement's implicit
 * transaction, which is when the commit reads it; on default settings this costs nothing more.
 * https://www.postgresql.org/docs/current/wal-async-commit.html
 */
export const DURABLE_COMMIT = "(SELECT pg_catalog.set_config('synchronous_commit', 'on', true)) AS durable";
