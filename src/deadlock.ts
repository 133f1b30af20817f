/**
 * The deadlock check between tasks. PostgreSQL finds a cycle only among its own sessions, and a
 * Locker waits on other sessions than those that hold its locks, so two tasks that each hold what the
 * other awaits would both wait forever. Like PostgreSQL's deadlock_timeout
 * (https://www.postgresql.org/docs/current/runtime-config-locks.html), a wait that has lasted
 * `delayMs` is looked at, and again every `delayMs` while it waits.
 *
 * Only waits by tasks that hold something are watched (task.ts): a wait whose task holds nothing
 * cannot be part of a cycle, and costs no look. One look (one read of pg_locks) serves every watched
 * wait of the Locker, however many there are. Every member of a cycle computes the same victim, and
 * only the victim fails its own wait, so exactly one side of a cycle gives way (waits.ts says what
 * counts as a cycle: only what pglock knows for certain).
 */
import { DeadlockError } from "./errors.js";
import { ownerLabel } from "./identity.js";
import type { LockKey } from "./key.js";
import type { AdvisoryLockInfo } from "./locks.js";
import { cycleThrough, victimOf, type Wait, WaitGraph } from "./waits.js";

export const DEFAULT_DEADLOCK_TIMEOUT_MS = 1_000;

interface Watched {
  readonly pid: number;
  readonly key: LockKey;
  /** performance.now() of the next look at this wait. */
  nextLookAt: number;
  fail(error: DeadlockError): void;
}

/** The waiting session, its key, and how to cancel its wait on the server. */
export interface ServerWait {
  readonly pid: number;
  readonly key: LockKey;
  cancel(): void;
}

export class DeadlockWatch {
  /** How long a wait lasts before the first look, and between looks; 0 turns the check off. */
  readonly delayMs: number;
  readonly #read: () => Promise<AdvisoryLockInfo[]>;
  readonly #waits = new Set<Watched>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #looking = false;

  /** `read` reads the advisory locks, on a session other than the waiting ones. */
  constructor(delayMs: number, read: () => Promise<AdvisoryLockInfo[]>) {
    this.delayMs = delayMs;
    this.#read = read;
  }

  /**
   * Runs a server-side wait. When the waiting task holds something (`watched`), the check watches
   * it: if it is a cycle's victim, `wait.cancel` cancels it on the server, and `run`'s `interrupted`
   * then returns the DeadlockError. No signal or controller is made per wait (issue #15).
   */
  async run<T>(wait: ServerWait, watched: boolean, run: (interrupted: () => Error | undefined) => Promise<T>) {
    if (this.delayMs === 0 || !watched) return run(() => undefined);
    let found: DeadlockError | undefined;
    const entry: Watched = {
      pid: wait.pid,
      key: wait.key,
      nextLookAt: performance.now() + this.delayMs,
      fail: (error) => {
        found = error;
        wait.cancel();
      },
    };
    this.#waits.add(entry);
    this.#schedule();
    try {
      return await run(() => found);
    } finally {
      this.#waits.delete(entry);
    }
  }

  #schedule() {
    if (this.#timer !== undefined || this.#looking || this.#waits.size === 0) return;
    let next = Number.POSITIVE_INFINITY;
    for (const wait of this.#waits) next = Math.min(next, wait.nextLookAt);
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        void this.#look();
      },
      Math.max(0, next - performance.now()),
    );
    this.#timer.unref?.();
  }

  async #look() {
    this.#looking = true;
    try {
      const now = performance.now();
      const due = [...this.#waits].filter((wait) => wait.nextLookAt <= now);
      for (const wait of due) wait.nextLookAt = now + this.delayMs;
      if (due.length > 0) {
        const locks = new WaitGraph(await this.#read());
        let again: WaitGraph | undefined;
        for (const wait of due) {
          if (!this.#waits.has(wait)) continue;
          const cycle = victimCycle(locks, wait);
          if (!cycle) continue;
          // Seen twice or not at all: pg_locks and pg_stat_activity are read a moment apart, and a
          // wait is sent again every slice, so one read could stitch a cycle from two moments.
          again ??= new WaitGraph(await this.#read());
          const confirmed = victimCycle(again, wait);
          if (confirmed && sameCycle(cycle, confirmed) && this.#waits.has(wait)) {
            this.#waits.delete(wait);
            wait.fail(new DeadlockError(wait.key.toString(), { cycle: describeCycle(confirmed) }));
          }
        }
      }
    } catch {
      // A look that fails (a connection lost, a session closing) is tried again: the waits go on.
    } finally {
      this.#looking = false;
      this.#schedule();
    }
  }
}

/** The cycle through `wait`, when `wait` is its victim. */
function victimCycle(locks: WaitGraph, wait: Watched): Wait[] | undefined {
  const cycle = cycleThrough(locks, wait.pid);
  const victim = cycle && victimOf(cycle);
  return victim?.waiter.pid === wait.pid && victim.waiter.key.identity === wait.key.identity ? cycle : undefined;
}

function sameCycle(a: readonly Wait[], b: readonly Wait[]): boolean {
  const steps = (cycle: readonly Wait[]) => cycle.map(({ waiter }) => `${waiter.pid}/${waiter.key.identity}`).join(" ");
  return steps(a) === steps(b);
}

function describeCycle(cycle: readonly Wait[]): string {
  const steps = cycle.map(({ waiter }) => {
    const who = waiter.owner ? ownerLabel(waiter.owner) : "a session pglock did not open";
    return `${who} (pid ${waiter.pid}) waits for ${waiter.key}`;
  });
  return `${steps.join(", ")}, each held by the next`;
}
