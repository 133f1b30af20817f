/**
 * Who waits for whom, among parties rather than server sessions. PostgreSQL's deadlock detector sees
 * only sessions, and a Locker holds and waits on different sessions (its waits run on sessions that
 * hold nothing), so a cycle between two Lockers is invisible to it. Grouping sessions by the party
 * that owns them (identity.ts: a Locker, or a process's seed Locks) makes the cycle visible. A session
 * pglock did not open is a party of its own, as PostgreSQL sees it.
 *
 * The rows come from pg_locks joined with pg_stat_activity, with the owner pglock writes into each of
 * its sessions' application_name (identity.ts). https://www.postgresql.org/docs/current/view-pg-locks.html
 */
import { ownerLabel, ownerOf, partyOf, type SessionOwner } from "./identity.js";
import { keyFromId, type LockKey, lockKey } from "./key.js";
import type { Driver } from "./session/driver.js";
import { Session } from "./session/session.js";
import * as sql from "./sql.js";

export interface AdvisoryLockInfo {
  /** The key, decoded: an int64 key (with its `name` when this process hashed that name), or a pair. */
  key: LockKey;
  mode: "exclusive" | "shared";
  granted: boolean;
  /** The server session's backend pid. */
  pid: number;
  user: string | null;
  applicationName: string | null;
  /** Whose session it is (host, process id, Locker or Lock), when pglock opened it; null otherwise. */
  owner: SessionOwner | null;
  clientAddress: string | null;
  /** When the wait began (PostgreSQL 14+); null for granted locks and on older servers. */
  waitingSince: Date | null;
  /** How long the wait has lasted, by the server's clock (PostgreSQL 14+); null otherwise. */
  waitingMs: number | null;
  /** For a waiter, the backend pids it waits for (pg_blocking_pids): holders, and waiters queued ahead. */
  waitingFor: number[];
}

/** The locks, read on a session of their own, given back after (inspectLocks, a seed Lock's deadlock look). */
export async function readLocksOn(driver: Driver, key?: LockKey): Promise<AdvisoryLockInfo[]> {
  const session = await Session.open(driver);
  try {
    return await readLocks((statement) => session.query(statement), key);
  } finally {
    await session.release();
  }
}

/** The locks, read with the statements `query` runs (a Locker's look runs them on its own sessions). */
export async function readLocks(
  query: (statement: sql.Statement) => Promise<Record<string, unknown>[]>,
  key?: LockKey,
): Promise<AdvisoryLockInfo[]> {
  const version = await query({ text: "SELECT current_setting('server_version_num')::int AS v", values: [] });
  // pg_locks.waitstart arrived in PostgreSQL 14; before it, the wait's start is unknown.
  const rows = await query(sql.advisoryLocks({ key, waitstart: Number(version[0]?.v) >= 140000 }));
  return rows.map((row) => {
    const waitingSince = asDate(row.waiting_since);
    const now = asDate(row.now);
    return {
      key: decodeKey(String(row.classid), String(row.objid), Number(row.objsubid)),
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

/** Inverse of sql.lockTag: objsubid 1 is an int64 split in two oids, 2 is a pair of int32. */
function decodeKey(classid: string, objid: string, objsubid: number): LockKey {
  const high = BigInt(classid);
  const low = BigInt(objid);
  if (objsubid === 2) return lockKey([Number(BigInt.asIntN(32, high)), Number(BigInt.asIntN(32, low))]);
  return keyFromId(BigInt.asIntN(64, (high << 32n) | low));
}

/** The party a lock row's session belongs to. */
export function partyOfLock(lock: AdvisoryLockInfo): string {
  return lock.owner ? partyOf(lock.owner) : `pid ${lock.pid}`;
}

/** One wait: a waiting row, and the rows of the same key it waits for (holders, or waiters queued ahead). */
export interface Wait {
  readonly waiter: AdvisoryLockInfo;
  readonly blockers: readonly AdvisoryLockInfo[];
}

/** The waits of each party. */
export function waitsByParty(locks: readonly AdvisoryLockInfo[]): Map<string, Wait[]> {
  const byParty = new Map<string, Wait[]>();
  for (const waiter of locks) {
    if (waiter.granted) continue;
    const blockers = locks.filter(
      (other) =>
        other !== waiter && other.key.identity === waiter.key.identity && waiter.waitingFor.includes(other.pid),
    );
    if (blockers.length === 0) continue;
    const party = partyOfLock(waiter);
    const waits = byParty.get(party) ?? [];
    waits.push({ waiter, blockers });
    byParty.set(party, waits);
  }
  return byParty;
}

/**
 * A cycle of waits that begins with the wait of backend `pid`: each wait's blockers belong to the
 * party of the next wait, and the last wait's blockers to the first's party. Undefined when there is
 * none. Found depth first, trying parties and waits in a fixed order (by pid), so that every member
 * of a simple cycle finds the same one.
 */
export function cycleThrough(locks: readonly AdvisoryLockInfo[], pid: number): Wait[] | undefined {
  const byParty = waitsByParty(locks);
  const first = [...byParty.values()].flat().find((wait) => wait.waiter.pid === pid);
  if (!first) return undefined;
  const home = partyOfLock(first.waiter);
  const path: Wait[] = [first];
  const visited = new Set<string>([home]);
  const search = (wait: Wait): boolean => {
    const next = otherParties(wait);
    if (next.includes(home)) return true;
    for (const party of next) {
      if (visited.has(party)) continue;
      visited.add(party);
      const waits = [...(byParty.get(party) ?? [])].sort((a, b) => a.waiter.pid - b.waiter.pid);
      for (const onward of waits) {
        path.push(onward);
        if (search(onward)) return true;
        path.pop();
      }
    }
    return false;
  };
  return search(first) ? path : undefined;
}

/**
 * The parties a wait waits for, but its own: a party's sessions can wait for one another (a
 * process's seed Locks on one key, say); that is a queue, not a cycle.
 */
function otherParties(wait: Wait): string[] {
  const own = partyOfLock(wait.waiter);
  return [...new Set(wait.blockers.map(partyOfLock))].filter((party) => party !== own).sort();
}

/**
 * The wait of a cycle that gives way: the one on the highest backend pid. Every member computes the
 * same victim from the same cycle, so exactly one of them fails its wait, even when all look at once.
 */
export function victimOf(cycle: readonly Wait[]): Wait {
  return cycle.reduce((a, b) => (b.waiter.pid > a.waiter.pid ? b : a));
}

/**
 * Every chain of waits, as text: the waiter, what it waits for and who holds it, then what that
 * holder's party waits for in turn, until a party that waits for nothing or a cycle.
 */
export function waitChains(locks: readonly AdvisoryLockInfo[]): string[] {
  const byParty = waitsByParty(locks);
  const lines: string[] = [];
  for (const waits of byParty.values()) {
    for (const start of waits) {
      const seen = new Set<string>([partyOfLock(start.waiter)]);
      let text = `${who(start.waiter)} waits for ${keyText(start.waiter)}`;
      let current: Wait | undefined = start;
      while (current) {
        const holders: readonly AdvisoryLockInfo[] = current.blockers;
        text += ` held by ${holders.map((b) => (b.granted ? who(b) : `${who(b)}, queued ahead`)).join(" and ")}`;
        const parties = otherParties(current);
        const cycle = parties.find((party) => seen.has(party));
        if (cycle !== undefined) {
          text += ": a cycle (deadlock)";
          break;
        }
        const onward: Wait | undefined = parties.flatMap((party) => byParty.get(party) ?? [])[0];
        if (!onward) break;
        for (const party of parties) seen.add(party);
        text += `, which waits for ${keyText(onward.waiter)} (pid ${onward.waiter.pid})`;
        current = onward;
      }
      lines.push(text);
    }
  }
  return lines;
}

function who(lock: AdvisoryLockInfo): string {
  return lock.owner ? `${ownerLabel(lock.owner)} (pid ${lock.pid})` : `pid ${lock.pid}`;
}

function keyText(lock: AdvisoryLockInfo): string {
  return lock.key.toString();
}
