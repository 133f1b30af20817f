/**
 * The deadlock check between Lockers (and seed Locks). PostgreSQL finds a cycle only among its own
 * sessions, and a Locker waits on other sessions than those that hold its locks, so two Lockers that
 * each hold what the other awaits would both wait forever. Like PostgreSQL's deadlock_timeout
 * (https://www.postgresql.org/docs/current/runtime-config-locks.html), a wait that has lasted
 * `delayMs` looks for a cycle of parties through itself (waits.ts), and looks again every `delayMs`
 * while it waits. Nothing is queried for a wait that ends sooner. Every member of a cycle computes
 * the same victim, and only the victim fails its own wait, so exactly one side of a cycle gives way.
 */
import { DeadlockError } from "./errors.js";
import { ownerLabel } from "./identity.js";
import type { LockKey } from "./key.js";
import { type AdvisoryLockInfo, cycleThrough, victimOf, type Wait } from "./waits.js";

export const DEFAULT_DEADLOCK_TIMEOUT_MS = 1_000;

export interface DeadlockCheck {
  /** How long a wait lasts before the first look, and between looks; 0 turns the check off. */
  delayMs: number;
  /** Reads the advisory locks, on sessions other than the waiting one. */
  read(): Promise<AdvisoryLockInfo[]>;
}

/**
 * Looks for a cycle through the wait on backend `pid` until the returned stop is called; when this
 * wait is the cycle's victim, calls `fail` with a DeadlockError naming the cycle.
 */
export function watchForDeadlock(
  check: DeadlockCheck,
  wait: { pid: number; key: LockKey },
  fail: (error: DeadlockError) => void,
): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
  };
  const look = async () => {
    try {
      const cycle = cycleThrough(await check.read(), wait.pid);
      if (stopped) return;
      if (cycle && victimOf(cycle).waiter.pid === wait.pid) {
        stop();
        fail(new DeadlockError(wait.key.toString(), { cycle: describeCycle(cycle) }));
        return;
      }
    } catch {
      // A look that fails (a connection lost, a session closing) is tried again: the wait goes on.
    }
    if (!stopped) timer = setTimeout(look, check.delayMs);
  };
  timer = setTimeout(look, check.delayMs);
  return stop;
}

/**
 * Runs a server-side wait with the check watching it. When this wait is a cycle's victim, `cancel`
 * cancels it on the server and `run`'s `interrupted` then returns the DeadlockError. No signal or
 * controller is made per wait: hand-overs are that much faster (issue #15).
 */
export async function checkedWait<T>(
  check: DeadlockCheck,
  wait: { pid: number; key: LockKey; cancel(): void },
  run: (interrupted: () => Error | undefined) => Promise<T>,
): Promise<T> {
  if (check.delayMs === 0) return run(() => undefined);
  let found: DeadlockError | undefined;
  const stop = watchForDeadlock(check, wait, (error) => {
    found = error;
    wait.cancel();
  });
  try {
    return await run(() => found);
  } finally {
    stop();
  }
}

function describeCycle(cycle: readonly Wait[]): string {
  const steps = cycle.map(({ waiter }) => {
    const who = waiter.owner ? ownerLabel(waiter.owner) : `pid ${waiter.pid}`;
    return `${who} waits for ${waiter.key}`;
  });
  return `${steps.join(", ")}, each held by the next`;
}
