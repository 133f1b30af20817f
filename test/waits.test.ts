// The wait-for graph of the deadlock check and `pglock ls` (issue #23), on rows written by hand: what
// counts as a cycle, who gives way, and what is a queue. No database: the rules are pure.
import { lockKey } from "pglock";
import { describe, expect, it } from "vitest";
import { applicationNameOf, ownerOf, type SessionOwner } from "../src/identity.js";
import type { LockKey } from "../src/key.js";
import { type AdvisoryLockInfo, claimsIn } from "../src/locks.js";
import { cycleThrough, victimOf, waitChains } from "../src/waits.js";

const owner = (nonce: string, host = "web-1", processId = 1): SessionOwner => ({
  application: "pglock",
  host,
  processId,
  kind: "locker",
  number: 1,
  nonce,
});

function row(
  pid: number,
  key: LockKey,
  options: { granted?: boolean; owner?: SessionOwner | null; waitingFor?: number[]; holds?: [number, LockKey][] },
): AdvisoryLockInfo {
  const granted = options.granted ?? false;
  return {
    key,
    mode: "exclusive",
    granted,
    pid,
    user: "app",
    applicationName: options.owner ? applicationNameOf(options.owner) : null,
    owner: options.owner ?? null,
    clientAddress: null,
    waitingSince: null,
    waitingMs: null,
    waitingFor: options.waitingFor ?? [],
    waiterHolds: (options.holds ?? []).map(([holder, held]) => ({ pid: holder, key: held })),
  };
}

const [k1, k2, k3] = [lockKey(7001n), lockKey(7002n), lockKey(7003n)];
const A = owner("aaaaaaaa");
const B = owner("bbbbbbbb");

/** Two processes, each a task holding one key (session 10 / 20) and waiting for the other's (11 / 21). */
function nestedPair(claimA: boolean, claimB: boolean, ownerB = B) {
  return [
    row(10, k1, { granted: true, owner: A }),
    row(20, k2, { granted: true, owner: ownerB }),
    row(11, k2, { owner: A, waitingFor: [20], holds: claimA ? [[10, k1]] : [] }),
    row(21, k1, { owner: ownerB, waitingFor: [10], holds: claimB ? [[20, k2]] : [] }),
  ];
}

describe("the deadlock check's cycles", () => {
  it("a cycle of tasks that each say what they hold is a deadlock, found alike from both sides", () => {
    const rows = nestedPair(true, true);
    expect(cycleThrough(rows, 11)?.map((wait) => wait.waiter.pid)).toEqual([11, 21]);
    expect(cycleThrough(rows, 21)?.map((wait) => wait.waiter.pid)).toEqual([21, 11]);
    expect(victimOf(cycleThrough(rows, 11) ?? [])?.waiter.pid).toBe(21);
    expect(victimOf(cycleThrough(rows, 21) ?? [])?.waiter.pid).toBe(21);
  });

  it("independent tasks (waits that hold nothing) are no cycle, whoever holds what", () => {
    expect(cycleThrough(nestedPair(false, false), 11)).toBeUndefined();
    expect(cycleThrough(nestedPair(true, false), 11)).toBeUndefined();
    expect(cycleThrough(nestedPair(false, true), 21)).toBeUndefined();
  });

  it("a claim counts only for sessions of the claimant's own process (nonce), even on look-alike hosts", () => {
    // B claims to hold k2 on session 20, but session 20 belongs to another process with the same host and pid.
    const twin = owner("cccccccc");
    const rows = nestedPair(true, true, B);
    rows[1] = row(20, k2, { granted: true, owner: twin });
    expect(cycleThrough(rows, 11)).toBeUndefined();
    // Same host name prefix and pid 1, different nonces: two processes, told apart.
    const pods = [owner("11111111", "billing-worker-deploymen", 1), owner("22222222", "billing-worker-deploymen", 1)];
    const [podA, podB] = pods as [SessionOwner, SessionOwner];
    expect(ownerOf(applicationNameOf(podA))).toEqual(podA);
    expect(applicationNameOf(podA)).not.toBe(applicationNameOf(podB));
    const real = nestedPair(true, true, podB).map((r) => (r.owner === A ? { ...r, owner: podA } : r));
    expect(cycleThrough(real, 11)).toHaveLength(2);
  });

  it("a session pglock did not open can be in a cycle by what it holds, but is never the victim", () => {
    // A plain session (pid 30, higher) holds k2 and waits for k1, which a task of A holds while it waits for k2.
    const rows = [
      row(10, k1, { granted: true, owner: A }),
      row(30, k2, { granted: true, owner: null }),
      row(11, k2, { owner: A, waitingFor: [30], holds: [[10, k1]] }),
      row(30, k1, { owner: null, waitingFor: [10] }),
    ];
    const cycle = cycleThrough(rows, 11);
    expect(cycle?.map((wait) => wait.waiter.pid)).toEqual([11, 30]);
    expect(victimOf(cycle ?? [])?.waiter.pid).toBe(11);
  });

  it("a plain session that copies a Locker's application_name, but makes no claim, adds no edge", () => {
    const rows = nestedPair(true, false);
    rows[3] = row(21, k1, { owner: A, waitingFor: [10] }); // B's waiter pretends to be A, and holds k2 elsewhere
    expect(cycleThrough(rows, 11)).toBeUndefined();
    expect(cycleThrough(rows, 21)).toBeUndefined();
  });

  it("a task waiting, through one Locker, for a key it holds through another is a cycle of one", () => {
    const rows = [
      row(10, k1, { granted: true, owner: A }),
      row(11, k1, { owner: A, waitingFor: [10], holds: [[10, k1]] }),
    ];
    expect(cycleThrough(rows, 11)?.map((wait) => wait.waiter.pid)).toEqual([11]);
  });

  it("a chain that ends is no cycle, and three in a ring are one", () => {
    const C = owner("dddddddd");
    const ring = [
      row(10, k1, { granted: true, owner: A }),
      row(20, k2, { granted: true, owner: B }),
      row(30, k3, { granted: true, owner: C }),
      row(11, k2, { owner: A, waitingFor: [20], holds: [[10, k1]] }),
      row(21, k3, { owner: B, waitingFor: [30], holds: [[20, k2]] }),
      row(31, k1, { owner: C, waitingFor: [10], holds: [[30, k3]] }),
    ];
    expect(cycleThrough(ring, 11)).toHaveLength(3);
    const chain = ring.slice(0, 5);
    expect(cycleThrough(chain, 11)).toBeUndefined();
  });

  it("reads a claim from a statement's text, and nothing from any other text", () => {
    expect(claimsIn("/* pglock waits 0.7002.1 holds 10:0.7001.1 20:5.6.2 */ SELECT 1", k2)).toEqual([
      { pid: 10, key: k1 },
      { pid: 20, key: lockKey([5, 6]) },
    ]);
    // The text of another wait than the one pg_locks shows (read a moment apart) says nothing of it.
    expect(claimsIn("/* pglock waits 0.7002.1 holds 10:0.7001.1 */ SELECT 1", k3)).toEqual([]);
    expect(claimsIn("SELECT 1 /* pglock waits 0.7002.1 holds 10:0.7001.1 */", k2)).toEqual([]);
    expect(claimsIn("/* pglock waits 0.7002.1 holds 10:0.7001 */ SELECT", k2)).toEqual([]);
    expect(claimsIn(null, k2)).toEqual([]);
  });
});

describe("pglock ls's wait chains", () => {
  it("three waiters behind one holder are a queue, not a cycle", () => {
    const rows = [
      row(10, k1, { granted: true, owner: A }),
      row(20, k1, { owner: B, waitingFor: [10] }),
      row(30, k1, { owner: null, waitingFor: [10, 20] }),
      row(40, k1, { owner: null, waitingFor: [10, 20, 30] }),
    ];
    const chains = waitChains(rows);
    expect(chains).toHaveLength(3);
    for (const chain of chains) expect(chain).not.toMatch(/cycle/);
    expect(chains[2]).toMatch(/^pid 40 waits for 7001 held by .*\(pid 10\), queued behind .*\(pid 20\) and pid 30$/);
  });

  it("a real cycle reads as one", () => {
    const chains = waitChains(nestedPair(true, true));
    expect(chains.filter((chain) => chain.endsWith("a cycle (deadlock)"))).toHaveLength(2);
  });
});
