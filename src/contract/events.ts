/**
 * Observability through node:diagnostics_channel: free when nobody subscribes (each publish is
 * guarded by hasSubscribers). https://nodejs.org/docs/latest-v20.x/api/diagnostics_channel.html
 */
import { channel } from "node:diagnostics_channel";
import { PglockError } from "../errors.js";
import type { LockKey } from "../key.js";

/** The handle an event is about: the same object in its acquired, released and lost events. */
export interface HandleEvent {
  /** The handle (`LockHandle`), the same object in its acquired, released and lost events. */
  handle: object;
}

/** A lock was granted and handed to the caller (`pglock:acquired`). */
export interface AcquiredEvent extends HandleEvent {
  /** The key of the lock. */
  key: LockKey;
  /** Whether it is (or was asked for) shared. */
  shared: boolean;
  /** Milliseconds from the acquire call to the grant. */
  waitMs: number;
}
/** A handle was released (`pglock:released`). */
export interface ReleasedEvent extends HandleEvent {
  /** The key of the lock. */
  key: LockKey;
  /** Whether it is (or was asked for) shared. */
  shared: boolean;
  /** Milliseconds the lock was held. */
  heldMs: number;
}
/** A held lock was lost (`pglock:lost`): its session ended, its lease expired, or its Locker closed. */
export interface LostEvent extends HandleEvent {
  /** The key of the lock. */
  key: LockKey;
  /** Whether it is (or was asked for) shared. */
  shared: boolean;
  /** The `LockLostError` the handle's signal aborted with. */
  error: Error;
}

/** An acquire call begins (Locker.acquire or tryAcquire, after its arguments were checked). */
export interface AcquireStartEvent {
  /** The key of the lock. */
  key: LockKey;
  /** Whether it is (or was asked for) shared. */
  shared: boolean;
  /** false for tryAcquire. */
  wait: boolean;
}

/** How an acquire call ended. `busy`: tryAcquire found the lock taken. */
export type AcquireOutcome = "granted" | "busy" | "timeout" | "aborted" | "deadlock" | "closed" | "error";

/** The same object as the call's AcquireStartEvent, completed when the call settles. */
export interface AcquireEndEvent extends AcquireStartEvent {
  /** How the call ended. */
  outcome: AcquireOutcome;
  /** Milliseconds from the call to its end. */
  durationMs: number;
  /** What the call rejected with, unless granted or busy. */
  error?: unknown;
}

/** The channels pglock publishes on; subscribe with `diagnostics_channel.subscribe(name, fn)`. */
export const channels = {
  /** {@link AcquiredEvent}: a lock was granted and handed out. */
  acquired: "pglock:acquired",
  /** {@link ReleasedEvent}: a handle was released. */
  released: "pglock:released",
  /** {@link LostEvent}: a held lock was lost. */
  lost: "pglock:lost",
  /** {@link AcquireStartEvent}: an acquire call began. */
  acquireStart: "pglock:acquire:start",
  /** {@link AcquireEndEvent}: the same call ended, with its outcome. */
  acquireEnd: "pglock:acquire:end",
} as const;

const acquired = channel(channels.acquired);
const released = channel(channels.released);
const lost = channel(channels.lost);
const acquireStart = channel(channels.acquireStart);
const acquireEnd = channel(channels.acquireEnd);

/**
 * Runs an acquire call between an `acquire:start` and an `acquire:end` event that carry one object
 * (as a TracingChannel would; plain channels work on every runtime pglock supports). Nothing is
 * allocated when nobody subscribes.
 */
export function traceAcquire<T>(
  start: () => AcquireStartEvent,
  call: () => Promise<T | undefined>,
): Promise<T | undefined> {
  if (!acquireStart.hasSubscribers && !acquireEnd.hasSubscribers) return call();
  return traced(start() as AcquireEndEvent, call);
}

async function traced<T>(event: AcquireEndEvent, call: () => Promise<T | undefined>): Promise<T | undefined> {
  const startedAt = performance.now();
  acquireStart.publish(event);
  try {
    const result = await call();
    event.outcome = result == null ? "busy" : "granted";
    return result;
  } catch (error) {
    event.outcome = outcomeOf(error);
    event.error = error;
    throw error;
  } finally {
    event.durationMs = performance.now() - startedAt;
    acquireEnd.publish(event);
  }
}

function outcomeOf(error: unknown): AcquireOutcome {
  // A caller's signal rejects with its own reason, which is not a pglock error.
  if (!(error instanceof PglockError)) return "aborted";
  switch (error.code) {
    case "ERR_PGLOCK_TIMEOUT":
      return "timeout";
    case "ERR_PGLOCK_DEADLOCK":
      return "deadlock";
    case "ERR_PGLOCK_CLOSED":
      return "closed";
    default:
      return "error";
  }
}

export function publishAcquired(event: () => AcquiredEvent) {
  if (acquired.hasSubscribers) acquired.publish(event());
}
export function publishReleased(event: () => ReleasedEvent) {
  if (released.hasSubscribers) released.publish(event());
}
export function publishLost(event: () => LostEvent) {
  if (lost.hasSubscribers) lost.publish(event());
}
