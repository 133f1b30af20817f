/** The chaos checkers: pure functions over what the run recorded. */

export interface Event {
  t: bigint;
  w: number;
  e: string;
  [field: string]: unknown;
}

export interface Fault {
  t: bigint;
  kind: string;
  /** The worker it hit, or undefined when it hit every session. */
  worker?: number;
}

export interface Interval {
  worker: number;
  start: bigint;
  end: bigint;
}

/** Grant-to-release (or to loss signal) intervals per worker, from its events in time order. */
export function intervals(events: Event[]): Interval[] {
  const open = new Map<number, bigint>();
  const result: Interval[] = [];
  for (const event of [...events].sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0))) {
    if (event.e === "granted") open.set(event.w, event.t);
    else if ((event.e === "releasing" || event.e === "lost" || event.e === "start") && open.has(event.w)) {
      // "start" again means the worker was killed and restarted: its interval ended with its session.
      result.push({ worker: event.w, start: open.get(event.w) as bigint, end: event.t });
      open.delete(event.w);
    }
  }
  // Still held at the end of the history: open-ended.
  for (const [worker, start] of open) result.push({ worker, start, end: BigInt(Number.MAX_SAFE_INTEGER) * 1_000_000n });
  return result;
}

/** How long before a grant a fault may still end the granted session (seen: 3 ms for a terminate). */
const FAULT_LAG = 1_000_000_000n;

/**
 * Two holders' intervals overlap only if the earlier holder's session was ended by a fault before
 * the later grant (the server freed the lock; the earlier holder learns it later).
 */
export function overlaps(all: Interval[], faults: Fault[]): string[] {
  const sorted = [...all].sort((a, b) => (a.start < b.start ? -1 : 1));
  const violations: string[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const earlier = sorted[i] as Interval;
    for (let j = i + 1; j < sorted.length; j++) {
      const later = sorted[j] as Interval;
      if (later.start >= earlier.end) break;
      if (later.worker === earlier.worker) continue;
      // The earlier holder may learn of its session's death only after it began to release (a holder
      // paused, or busy in its critical section, processes the close late), so how its interval ended
      // does not matter: a fault that can end its session, between its grant and the later grant, does.
      // Its writes after that are the fencing tokens' business, which the counter check verifies.
      // A fault takes effect a little after it is sent (pg_terminate_backend returns before the backend
      // exits; a server can still answer a grant meanwhile), so one shortly before the grant counts too.
      const excused = faults.some(
        (f) =>
          f.t >= earlier.start - FAULT_LAG &&
          f.t <= later.start &&
          (f.worker === undefined || f.worker === earlier.worker),
      );
      if (!excused) {
        violations.push(
          `worker ${later.worker} was granted the lock while worker ${earlier.worker} held it (no fault ended ${earlier.worker}'s session first)`,
        );
      }
    }
  }
  return violations;
}

/** The counter equals the recorded increments, each n once, and tokens increase with n. */
export function counterViolations(counter: number, increments: { n: number; token: string | null }[]): string[] {
  const violations: string[] = [];
  if (counter !== increments.length) {
    violations.push(
      `the counter is ${counter} but ${increments.length} increments were recorded (lost or duplicated updates)`,
    );
  }
  const seen = new Set<number>();
  let lastToken: bigint | undefined;
  for (const { n, token } of [...increments].sort((a, b) => a.n - b.n)) {
    if (seen.has(n)) violations.push(`the value ${n} was written twice`);
    seen.add(n);
    if (token !== null) {
      const value = BigInt(token);
      if (lastToken !== undefined && value <= lastToken)
        violations.push(`write ${n} landed with a stale fencing token ${value} (after ${lastToken})`);
      lastToken = value;
    }
  }
  return violations;
}

/** Median and max of fault-to-loss-signal delays, by fault kind, in ms. */
export function lossLatency(events: Event[], faults: Fault[]): Map<string, { median: number; max: number; n: number }> {
  const byKind = new Map<string, number[]>();
  const ordered = [...faults].sort((a, b) => (a.t < b.t ? -1 : 1));
  for (const event of events.filter((e) => e.e === "lost")) {
    const cause = ordered.filter((f) => f.t <= event.t && (f.worker === undefined || f.worker === event.w)).at(-1);
    if (!cause || event.t - cause.t > 15_000_000_000n) continue;
    const list = byKind.get(cause.kind) ?? [];
    list.push(Number(event.t - cause.t) / 1e6);
    byKind.set(cause.kind, list);
  }
  const result = new Map<string, { median: number; max: number; n: number }>();
  for (const [kind, list] of byKind) {
    list.sort((a, b) => a - b);
    result.set(kind, {
      median: list[Math.floor(list.length / 2)] as number,
      max: list.at(-1) as number,
      n: list.length,
    });
  }
  return result;
}
