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
 * The rows are read by locks.ts.
 */
import { ownerLabel, sameProcess } from "./identity.js";
import type { AdvisoryLockInfo } from "./locks.js";

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
