/**
 * Who waits for whom. PostgreSQL's deadlock detector sees only sessions, and a Locker holds and waits
 * on different sessions (its waits run on sessions that hold nothing), so a cycle of tasks across
 * Lockers is invisible to it. pglock adds what it knows for certain, and nothing else (issue #23):
 * - a session that holds a lock and waits in a statement cannot release that lock until the wait ends;
 * - a waiting statement of pglock's says, in its own text, which key it waits for and which locks its
 *   task holds (task.ts): `/* pglock waits <tag> holds <pid>:<tag> ... *\/`, where a tag is pg_locks'
 *   `<classid>.<objid>.<objsubid>`. The claim counts only for locks held by sessions of the same
 *   process (host, pid and nonce in application_name: identity.ts), and only when the text is about
 *   the wait pg_locks shows (pg_stat_activity is read a moment apart from pg_locks).
 * A wait whose task holds nothing carries no claim, and so can never be in a cycle.
 *
 * The rows come from pg_locks joined with pg_stat_activity. https://www.postgresql.org/docs/current/view-pg-locks.html
 */
import { ownerLabel, ownerOf, type SessionOwner, sameProcess } from "./identity.js";
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
  waiterHolds: { pid: number; key: LockKey }[];
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

/** One wait: a waiting row, and the granted rows of its key that it waits for. */
export interface Wait {
  readonly waiter: AdvisoryLockInfo;
  readonly holders: readonly AdvisoryLockInfo[];
  /** Waiters of the same key queued ahead of it, that it waits for too. */
  readonly queuedBehind: readonly AdvisoryLockInfo[];
}

/**
 * The waits of one read of pg_locks, indexed once, so that one look can follow the waits of hundreds
 * of watched waits (issue #23: every watched wait searches it).
 */
export class WaitGraph {
  /** Every wait, in pid order. */
  readonly waits: readonly Wait[];
  /** The wait of each waiting session (a session waits for one thing at a time). */
  readonly #byPid = new Map<number, Wait>();
  /** The waits that claim each held lock, by `<pid>/<key identity>`. */
  readonly #claimants = new Map<string, Wait[]>();

  constructor(locks: readonly AdvisoryLockInfo[]) {
    const byKey = new Map<string, AdvisoryLockInfo[]>();
    for (const lock of locks) {
      const same = byKey.get(lock.key.identity) ?? [];
      same.push(lock);
      byKey.set(lock.key.identity, same);
    }
    const waits: Wait[] = [];
    for (const waiter of locks) {
      if (waiter.granted) continue;
      const blockers = (byKey.get(waiter.key.identity) ?? []).filter(
        (other) => other !== waiter && waiter.waitingFor.includes(other.pid),
      );
      if (blockers.length === 0) continue;
      waits.push({
        waiter,
        holders: blockers.filter((other) => other.granted),
        queuedBehind: blockers.filter((other) => !other.granted),
      });
    }
    this.waits = waits.sort((a, b) => a.waiter.pid - b.waiter.pid);
    for (const wait of this.waits) {
      this.#byPid.set(wait.waiter.pid, wait);
      for (const held of wait.waiter.waiterHolds) {
        const id = `${held.pid}/${held.key.identity}`;
        this.#claimants.set(id, [...(this.#claimants.get(id) ?? []), wait]);
      }
    }
  }

  /** The wait of backend `pid`, if it waits. */
  waitOf(pid: number): Wait | undefined {
    return this.#byPid.get(pid);
  }

  /**
   * The waits known to hold what `wait` waits for: the session of one of its holders, itself
   * waiting; or a pglock wait whose task says it holds that lock on that session, in the same
   * process. Waiters queued ahead are not followed: PostgreSQL may reorder its queue, so they prove
   * nothing.
   */
  next(wait: Wait): Wait[] {
    const next = new Set<Wait>();
    for (const holder of wait.holders) {
      const own = this.#byPid.get(holder.pid);
      if (own && own !== wait) next.add(own);
      // A wait can claim what it waits for itself: a task that holds a key through one Locker and
      // waits for it through another waits for itself.
      for (const claimant of this.#claimants.get(`${holder.pid}/${wait.waiter.key.identity}`) ?? []) {
        const [a, b] = [claimant.waiter.owner, holder.owner];
        if (a && b && sameProcess(a, b)) next.add(claimant);
      }
    }
    return [...next].sort((a, b) => a.waiter.pid - b.waiter.pid);
  }
}

/**
 * A cycle of waits that begins with the wait of backend `pid`, each known to hold what the one
 * before it waits for (see {@link WaitGraph.next}); undefined when there is none. Found depth first,
 * in pid order, so that every member of a simple cycle finds the same one.
 */
export function cycleThrough(locks: readonly AdvisoryLockInfo[] | WaitGraph, pid: number): Wait[] | undefined {
  const graph = locks instanceof WaitGraph ? locks : new WaitGraph(locks);
  const first = graph.waitOf(pid);
  if (!first) return undefined;
  const path: Wait[] = [first];
  const visited = new Set<Wait>([first]);
  const search = (wait: Wait): boolean => {
    const next = graph.next(wait);
    if (next.includes(first)) return true;
    for (const onward of next) {
      if (visited.has(onward)) continue;
      visited.add(onward);
      path.push(onward);
      if (search(onward)) return true;
      path.pop();
    }
    return false;
  };
  return search(first) ? path : undefined;
}

/**
 * The wait of a cycle that gives way: among the waits pglock watches (those that carry a claim, so
 * that their process can cancel them), the one on the highest backend pid. Every member computes the
 * same victim from the same cycle, so exactly one of them fails its wait. A plain session is never
 * chosen: nothing of pglock's could cancel it. Undefined when no wait of the cycle is pglock's.
 */
export function victimOf(cycle: readonly Wait[]): Wait | undefined {
  let victim: Wait | undefined;
  for (const wait of cycle) {
    if (!wait.waiter.owner || wait.waiter.waiterHolds.length === 0) continue;
    if (!victim || wait.waiter.pid > victim.waiter.pid) victim = wait;
  }
  return victim;
}

/**
 * Every chain of waits, as text: the waiter, what it waits for and who holds it, then what a holder
 * is known to wait for in turn (as the deadlock check knows it), until a wait that waits for nothing
 * known, or one met before (a cycle). A queue of waiters behind one holder is a queue.
 */
export function waitChains(locks: readonly AdvisoryLockInfo[]): string[] {
  const graph = new WaitGraph(locks);
  const lines: string[] = [];
  for (const start of graph.waits) {
    const seen = new Set<Wait>([start]);
    let text = `${who(start.waiter)} waits for ${keyText(start.waiter)}`;
    let current: Wait = start;
    for (;;) {
      const parts: string[] = [];
      if (current.holders.length > 0) parts.push(`held by ${current.holders.map(who).join(" and ")}`);
      if (current.queuedBehind.length > 0) parts.push(`queued behind ${current.queuedBehind.map(who).join(" and ")}`);
      text += ` ${parts.join(", ")}`;
      const onward = graph.next(current)[0];
      if (!onward) break;
      if (seen.has(onward)) {
        text += `, which waits for ${keyText(onward.waiter)} (pid ${onward.waiter.pid}): a cycle (deadlock)`;
        break;
      }
      seen.add(onward);
      text += `, which waits for ${keyText(onward.waiter)} (pid ${onward.waiter.pid})`;
      current = onward;
    }
    lines.push(text);
  }
  return lines;
}

function who(lock: AdvisoryLockInfo): string {
  return lock.owner ? `${ownerLabel(lock.owner)} (pid ${lock.pid})` : `pid ${lock.pid}`;
}

function keyText(lock: AdvisoryLockInfo): string {
  return lock.key.toString();
}
