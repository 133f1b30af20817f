/**
 * The advisory locks on the server, read from pg_locks joined with pg_stat_activity: who holds and who
 * awaits which key, whose session it is (identity.ts), and what a waiting statement of pglock's says
 * its task holds: `/* pglock waits <tag> holds <pid>:<tag> ... *\/` (sql.waitLock), where a tag is
 * pg_locks' `<classid>.<objid>.<objsubid>`. https://www.postgresql.org/docs/current/view-pg-locks.html
 */
import { ownerOf, type SessionOwner } from "./identity.js";
import { keyFromId, type LockKey, lockKey } from "./key.js";
import type { Driver } from "./session/driver.js";
import { Session } from "./session/session.js";
import * as sql from "./sql/advisory.js";

/** One advisory lock on the server, held or awaited, as `inspectLocks` and `pglock ls` read it from `pg_locks`. */
export interface AdvisoryLockInfo {
  /** The key, decoded: an int64 key (with its `name` when this process hashed that name), or a pair. */
  key: LockKey;
  /** How it is held or wanted. */
  mode: "exclusive" | "shared";
  /** Held (true), or waited for (false). */
  granted: boolean;
  /** The server session's backend pid. */
  pid: number;
  /** The role of the session. */
  user: string | null;
  /** The session's application_name. */
  applicationName: string | null;
  /** Whose session it is (host, process id, Locker or Lock), when pglock opened it; null otherwise. */
  owner: SessionOwner | null;
  /** The client's address; null for a Unix socket. */
  clientAddress: string | null;
  /** When the wait began (PostgreSQL 14+); null for granted locks and on older servers. */
  waitingSince: Date | null;
  /** How long the wait has lasted, by the server's clock (PostgreSQL 14+); null otherwise. */
  waitingMs: number | null;
  /** For a waiter, the backend pids it waits for (pg_blocking_pids): holders, and waiters queued ahead. */
  waitingFor: number[];
  /**
   * For a waiter that pglock runs for a task that holds other locks: those locks, as the sessions
   * (backend pids) that hold them and their keys. Empty otherwise.
   */
  waiterHolds: {
    /** The backend pid of the session that holds it. */
    pid: number;
    /** The key it holds. */
    key: LockKey;
  }[];
}

/** The locks, read on a session of their own, given back after (inspectLocks, a seed Lock's deadlock look). */
export async function readLocksOn(
  driver: Driver,
  key?: LockKey,
  cached?: { version?: number },
): Promise<AdvisoryLockInfo[]> {
  const session = await Session.open(driver);
  try {
    return await readLocks((statement) => session.query(statement), key, cached);
  } finally {
    await session.release();
  }
}

/** The locks, read with the statements `query` runs (a Locker's look runs them on its own sessions). */
export async function readLocks(
  query: (statement: sql.Statement) => Promise<Record<string, unknown>[]>,
  key?: LockKey,
  cached?: { version?: number },
): Promise<AdvisoryLockInfo[]> {
  let version = cached?.version;
  if (version === undefined) {
    const rows = await query(sql.serverVersion());
    version = Number(rows[0]?.v);
    if (cached) cached.version = version;
  }
  // pg_locks.waitstart arrived in PostgreSQL 14; before it, the wait's start is unknown.
  const rows = await query(sql.advisoryLocks({ key, waitstart: version >= 140000 }));
  return rows.map((row) => {
    const key = decodeKey(String(row.classid), String(row.objid), Number(row.objsubid));
    const waitingSince = asDate(row.waiting_since);
    const now = asDate(row.now);
    return {
      key,
      mode: row.mode === "ShareLock" ? "shared" : "exclusive",
      granted: row.granted === true,
      pid: Number(row.pid),
      user: (row.user as string | null) ?? null,
      applicationName: (row.application_name as string | null) || null,
      owner: ownerOf(row.application_name as string | null) ?? null,
      clientAddress: (row.client_address as string | null) ?? null,
      waitingSince,
      waitingMs: waitingSince && now ? Math.max(0, now.getTime() - waitingSince.getTime()) : null,
      waitingFor: pidList(row.waiting_for),
      waiterHolds: row.granted === true ? [] : claimsIn(row.query, key),
    };
  });
}

function asDate(value: unknown): Date | null {
  if (value instanceof Date) return value;
  // Drivers that leave timestamptz as text (Bun's SQL in some versions) still give a parsable string.
  if (typeof value === "string" && value !== "") {
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }
  return null;
}

/** `{1,2}` (an int4[] as text) as numbers. */
function pidList(value: unknown): number[] {
  const text = String(value ?? "").replace(/[{}]/g, "");
  return text === "" ? [] : text.split(",").map(Number);
}

/** The locks a waiting statement's text says its task holds, if it is a wait for `key` (sql.waitLock). */
export function claimsIn(query: unknown, key: LockKey): { pid: number; key: LockKey }[] {
  const match =
    typeof query === "string" ? /^\/\* pglock waits (\d+)\.(\d+)\.([12]) holds ([0-9:. ]+) \*\//.exec(query) : null;
  if (!match) return [];
  const waited = decodeKey(match[1] as string, match[2] as string, Number(match[3]));
  if (waited.identity !== key.identity) return [];
  const claims: { pid: number; key: LockKey }[] = [];
  for (const entry of (match[4] as string).split(" ")) {
    const parts = /^(\d+):(\d+)\.(\d+)\.([12])$/.exec(entry);
    if (!parts) return [];
    claims.push({ pid: Number(parts[1]), key: decodeKey(parts[2] as string, parts[3] as string, Number(parts[4])) });
  }
  return claims;
}

/** Inverse of sql.lockTag: objsubid 1 is an int64 split in two oids, 2 is a pair of int32. */
function decodeKey(classid: string, objid: string, objsubid: number): LockKey {
  const high = BigInt(classid);
  const low = BigInt(objid);
  if (objsubid === 2) return lockKey([Number(BigInt.asIntN(32, high)), Number(BigInt.asIntN(32, low))]);
  return keyFromId(BigInt.asIntN(64, (high << 32n) | low));
}
