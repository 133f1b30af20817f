/**
 * What an operator can read: `inspectLocks` (who holds and who awaits which advisory lock, locks.ts),
 * `inspectLeases` (the lease table's live holders) and `inspectLeaders` (the elections' records).
 * A lease is not a pg_locks row, so it has a reader of its own rather than a second shape in one list.
 */
import type { LockDatabase } from "../database.js";
import { type LockKey, type LockKeyInput, lockKey } from "../key.js";
import { type AdvisoryLockInfo, readLocksOn } from "../locks.js";
import { sqlState } from "../server-errors.js";
import { driverFor } from "../session/drivers.js";
import { Session } from "../session/session.js";
import type { Statement } from "../sql/advisory.js";
import { keyOfRecord, listLeaders } from "../sql/leaders.js";
import { AT_LEAST, checkLeaseTable, leaseStatements } from "../sql/lease.js";
import { optionsObject } from "../validate.js";

export type { AdvisoryLockInfo } from "../locks.js";

/** Options of `inspectLocks`. */
export interface InspectOptions {
  /** Only this key. */
  key?: LockKeyInput;
}

/** Options of `inspectLeases` and `inspectLeaders`. */
export interface InspectLeasesOptions {
  /** Only this key. */
  key?: LockKeyInput;
  /** The lease table. @defaultValue "pglock_leases" */
  table?: string;
}

/** A live holder of a lease (or the record of a run's `atLeastMs`, which keeps the key taken). */
export interface LeaseInfo {
  /** The key (its name is not known: a hash cannot be reversed). */
  key: LockKey;
  /** How it is held: shared holders coexist. */
  mode: "exclusive" | "shared";
  /** The holder's id (`host:pid@nonce locker-n#n` for a pglock lease Locker), or `"#at-least"` for a run's record. */
  holder: string;
  /** Whether this entry is a run's `atLeastMs` record rather than a holder. */
  run: boolean;
  /** How long until it expires unless renewed, in ms, by the server's clock. */
  expiresInMs: number;
  /** The fencing token of the key's latest grant. */
  token: bigint;
}

/** An election whose term is alive. */
export interface LeaderInfo {
  /** The election's key. */
  key: LockKey;
  /** Who leads. */
  owner: string;
  /** What the leader published (null when nothing). */
  payload: unknown;
  /** The term: the fencing token of the leader's grant. */
  term: bigint;
  /** When the term began, by the server's clock. */
  since: Date;
  /** How long until the term ends unless renewed, in ms, by the server's clock. */
  endsInMs: number;
}

/**
 * The advisory locks of the current database, held and awaited: granted first, then waiters in the
 * order they began to wait. `db` is a `pg.Pool`, a connected `pg.Client`, a postgres.js `sql` or a
 * Bun `SQL`. PostgreSQL records when a wait began, not when a lock was granted: how long a lock has
 * been held is not known. Leases are read by {@link inspectLeases}.
 */
export async function inspectLocks(db: LockDatabase, options: InspectOptions = {}): Promise<AdvisoryLockInfo[]> {
  optionsObject(options, "inspectLocks", ["key"]);
  const driver = driverFor(db, "inspectLocks", { allowClient: true });
  const key = options.key === undefined ? undefined : lockKey(options.key);
  return readLocksOn(driver, key);
}

/** The live holders of leases in the lease table (none when the table does not exist yet). */
export async function inspectLeases(db: LockDatabase, options: InspectLeasesOptions = {}): Promise<LeaseInfo[]> {
  const { table, key } = leaseOptions(options, "inspectLeases");
  const rows = await readTable(db, "inspectLeases", {
    text: leaseStatements(table).inspect,
    values: [key?.identity ?? null],
  });
  return rows.map((row) => ({
    key: keyOfIdentity(String(row.key)),
    mode: row.shared === true ? "shared" : "exclusive",
    holder: String(row.holder),
    run: row.holder === AT_LEAST,
    expiresInMs: Number(row.remaining),
    token: BigInt(String(row.token)),
  }));
}

/** The elections whose term is alive, from their records in the lease table. */
export async function inspectLeaders(db: LockDatabase, options: InspectLeasesOptions = {}): Promise<LeaderInfo[]> {
  const { table, key } = leaseOptions(options, "inspectLeaders");
  const rows = await readTable(db, "inspectLeaders", listLeaders(table));
  return rows
    .map((row) => {
      const record = JSON.parse(String(row.record)) as { owner: string; payload: unknown; since: number };
      return {
        key: keyOfIdentity(keyOfRecord(String(row.key))),
        owner: record.owner,
        payload: record.payload ?? null,
        term: BigInt(String(row.term)),
        since: new Date(record.since),
        endsInMs: Number(row.remaining),
      };
    })
    .filter((leader) => key === undefined || leader.key.identity === key.identity);
}

function leaseOptions(options: InspectLeasesOptions, where: string) {
  optionsObject(options, where, ["key", "table"]);
  return {
    table: checkLeaseTable(options.table ?? "pglock_leases", where, "options.table"),
    key: options.key === undefined ? undefined : lockKey(options.key),
  };
}

async function readTable(db: LockDatabase, where: string, statement: Statement) {
  const session = await Session.open(driverFor(db, where, { allowClient: true }));
  try {
    return await session.query(statement);
  } catch (error) {
    // No lease table: nobody took a lease, ran with atLeastMs or led an election here yet.
    if (sqlState(error) === "42P01" || sqlState((error as Error).cause) === "42P01") return [];
    throw error;
  } finally {
    await session.release();
  }
}

/** A key from its identity ("123", or "1,2" for a pair). */
function keyOfIdentity(identity: string): LockKey {
  const pair = identity.split(",");
  return pair.length === 2 ? lockKey([Number(pair[0]), Number(pair[1])]) : lockKey(BigInt(identity));
}
