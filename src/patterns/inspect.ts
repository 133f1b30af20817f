/**
 * Who holds and who awaits which advisory lock, from pg_locks joined with pg_stat_activity.
 * https://www.postgresql.org/docs/current/view-pg-locks.html
 */
import { type LockKey, type LockKeyInput, lockKey } from "../key.js";
import { driverFor } from "../session/drivers.js";
import { Session } from "../session/session.js";
import { lockTag } from "../sql.js";
import { optionsObject } from "../validate.js";

export interface AdvisoryLockInfo {
  /** The key, decoded: an int64 key, or a pair. */
  key: LockKey;
  mode: "exclusive" | "shared";
  granted: boolean;
  pid: number;
  user: string | null;
  applicationName: string | null;
  clientAddress: string | null;
  /** When the wait began (PostgreSQL 14+); null for granted locks and on older servers. */
  waitingSince: Date | null;
}

export interface InspectOptions {
  /** Only this key. */
  key?: LockKeyInput;
}

/**
 * The advisory locks of the current database, held and awaited: granted first, then waiters in the
 * order they began to wait. `db` is a `pg.Pool` or a connected `pg.Client`.
 */
export async function inspectLocks(db: unknown, options: InspectOptions = {}): Promise<AdvisoryLockInfo[]> {
  optionsObject(options, "inspectLocks");
  const driver = driverFor(db, "inspectLocks", { allowClient: true });
  const key = options.key === undefined ? undefined : lockKey(options.key);
  const session = await Session.open(driver);
  try {
    return await inspect(session, key);
  } finally {
    await session.release();
  }
}

async function inspect(session: Session, key: LockKey | undefined): Promise<AdvisoryLockInfo[]> {
  const version = await session.query({ text: "SELECT current_setting('server_version_num')::int AS v", values: [] });
  // pg_locks.waitstart arrived in PostgreSQL 14; before it, the wait's start is unknown.
  const waitstart = Number(version[0]?.v) >= 140000 ? "l.waitstart" : "NULL::timestamptz";
  const values: unknown[] = [];
  let filter = "";
  if (key) {
    values.push(...lockTag(key));
    filter = "AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = $3::int2";
  }
  const rows = await session.query({
    text: `SELECT l.classid::text AS classid, l.objid::text AS objid, l.objsubid, l.mode, l.granted, l.pid,
            a.usename AS user, a.application_name, a.client_addr::text AS client_address, ${waitstart} AS waiting_since
       FROM pg_catalog.pg_locks l
       LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory'
        AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
        ${filter}
      ORDER BY l.granted DESC, ${waitstart} NULLS FIRST, l.pid`,
    values,
  });
  return rows.map((row) => ({
    key: decodeKey(String(row.classid), String(row.objid), Number(row.objsubid)),
    mode: row.mode === "ShareLock" ? "shared" : "exclusive",
    granted: row.granted === true,
    pid: Number(row.pid),
    user: (row.user as string | null) ?? null,
    applicationName: (row.application_name as string | null) || null,
    clientAddress: (row.client_address as string | null) ?? null,
    waitingSince: row.waiting_since instanceof Date ? row.waiting_since : null,
  }));
}

/** Inverse of sql.lockTag: objsubid 1 is an int64 split in two oids, 2 is a pair of int32. */
function decodeKey(classid: string, objid: string, objsubid: number): LockKey {
  const high = BigInt(classid);
  const low = BigInt(objid);
  if (objsubid === 2) return lockKey([Number(BigInt.asIntN(32, high)), Number(BigInt.asIntN(32, low))]);
  return lockKey(BigInt.asIntN(64, (high << 32n) | low));
}
