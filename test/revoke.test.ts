/**
 * `pglock release` and revokeLock (issue #28): an operator frees one key; the holder is told with
 * RevokedError and keeps its other locks. The command runs as a process of its own, as an operator
 * would run it.
 */
import {
  createLeaseLocker,
  createLocker,
  hashKey,
  inspectLeaders,
  inspectLeases,
  RevokedError,
  revokeLock,
} from "pglock";
import { describe, expect, it } from "vitest";
import { databaseUrl, eventually, locksOnKey, makePool, sleep, uniqueName } from "./support/db.js";
import { program, run } from "./support/run.js";

const [PGLOCK, PGLOCK_ARGS] = program("src/cli/bin.ts");
const pglock = (args: string[]) => run(PGLOCK, [...PGLOCK_ARGS, ...args], { DATABASE_URL: databaseUrl() });
const pool = makePool({ max: 6 });

const heldOnServer = async (name: string) =>
  (await locksOnKey(pool, hashKey(name))).filter((row) => row.granted).length;

describe("pglock release", () => {
  it("a session holder's signal aborts with RevokedError within 1 s; its other locks stay held", async () => {
    const locker = createLocker(pool);
    try {
      const [name, other] = [uniqueName("revoke"), uniqueName("revoke-other")];
      const handle = await locker.acquire(name);
      const kept = await locker.acquire(other);
      let abortedAt: number | undefined;
      handle.signal.addEventListener("abort", () => {
        abortedAt = performance.now();
      });
      const result = await pglock(["release", name]);
      const finishedAt = performance.now();
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/let go of/);
      expect(handle.signal.reason).toBeInstanceOf(RevokedError);
      expect((handle.signal.reason as RevokedError).code).toBe("ERR_PGLOCK_REVOKED");
      // Told before the command reported the key free.
      expect(abortedAt).toBeLessThanOrEqual(finishedAt);
      expect(await heldOnServer(name)).toBe(0);
      expect(kept.signal.aborted).toBe(false);
      expect(await heldOnServer(other)).toBe(1);
      await handle.release(); // does nothing: it was revoked
      expect(await locker.tryAcquire(name)).not.toBeNull();
    } finally {
      await locker.close();
    }
  });

  it("revokeLock tells the holder within 1 s of the call", async () => {
    const locker = createLocker(pool);
    try {
      const name = uniqueName("revoke-timed");
      const handle = await locker.acquire(name);
      const started = performance.now();
      const told = new Promise<number>((resolve) =>
        handle.signal.addEventListener("abort", () => resolve(performance.now() - started)),
      );
      const result = await revokeLock(pool, name);
      expect(result).toMatchObject({ free: true, stuck: [], leasesRevoked: 0 });
      expect(result.released).toHaveLength(1);
      expect(await told).toBeLessThan(1_000);
    } finally {
      await locker.close();
    }
  });

  it("a holder that does not answer is reported, and --force ends its session, naming what else it held", async () => {
    // A plain session holding the key: nothing listens for the request.
    const client = await pool.connect();
    client.on("error", () => {}); // --force ends this session: that is the point
    try {
      const [name, other] = [uniqueName("revoke-stuck"), uniqueName("revoke-stuck-other")];
      await client.query("SELECT pg_advisory_lock($1), pg_advisory_lock($2)", [hashKey(name), hashKey(other)]);
      const refused = await pglock(["release", name, "--grace", "300ms"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/did not let go/);
      expect(refused.stderr).toContain(String(hashKey(other)));
      expect(await heldOnServer(name)).toBe(1);
      const forced = await pglock(["release", name, "--grace", "300ms", "--force"]);
      expect(forced.code, forced.stderr).toBe(0);
      expect(forced.stdout).toMatch(/ended it; it also held/);
      await eventually(async () => (await heldOnServer(name)) === 0);
    } finally {
      client.release(true);
    }
  });

  it("on a lease, the key is free at once, and the holder is told at its next renewal", async () => {
    const leases = createLeaseLocker(pool, { ttlMs: 3_000 });
    const taker = createLeaseLocker(pool, { ttlMs: 3_000 });
    try {
      const name = uniqueName("revoke-lease");
      const lease = await leases.acquire(name);
      expect(await taker.tryAcquire(name)).toBeNull();
      const result = await pglock(["release", name]);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/1 holder\(s\) removed/);
      const taken = await taker.tryAcquire(name);
      expect(taken).not.toBeNull();
      await eventually(() => lease.signal.aborted, 5_000);
      await taken?.release();
    } finally {
      await Promise.all([leases.close(), taker.close()]);
    }
  });

  it("refuses bad input before touching the database", async () => {
    await expect(revokeLock(pool, "k", { graceMs: -1 })).rejects.toMatchObject({ code: "ERR_PGLOCK_INVALID_ARGUMENT" });
    await expect(revokeLock(pool, "k", { force: "yes" as never })).rejects.toMatchObject({
      code: "ERR_PGLOCK_INVALID_ARGUMENT",
    });
    const usage = await pglock(["release"]);
    expect(usage.code).toBe(2);
  });
});

describe("pglock ls, inspectLeases and inspectLeaders", () => {
  it("show leases with holder, expiry and token, and the leader of an election", async () => {
    const leases = createLeaseLocker(pool, { ttlMs: 20_000 });
    const sessions = createLocker(pool);
    const stop = new AbortController();
    try {
      const name = uniqueName("ls-lease");
      const lease = await leases.acquire(name);
      const [listed] = await inspectLeases(pool, { key: name });
      expect(listed).toMatchObject({ mode: "exclusive", run: false, token: lease.fencingToken });
      expect(listed?.key.identity).toBe(String(hashKey(name)));
      expect(listed?.expiresInMs).toBeGreaterThan(10_000);

      const electionName = uniqueName("ls-election");
      const election = sessions.leaderElection(electionName, { owner: "scheduler-1" });
      const running = election.run(
        (signal) => new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve())),
        {
          signal: stop.signal,
          payload: { url: "http://10.0.0.7:8080" },
        },
      );
      await eventually(() => election.isLeader);
      await sleep(50);
      const [leader] = await inspectLeaders(pool, { key: electionName });
      expect(leader).toMatchObject({ owner: "scheduler-1", payload: { url: "http://10.0.0.7:8080" } });

      const text = await pglock(["ls"]);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(/LEASES[\s\S]*LEADERS/);
      expect(text.stdout).toContain(lease.fencingToken.toString());
      expect(text.stdout).toContain("scheduler-1");
      const json = JSON.parse((await pglock(["ls", "--key", name, "--json"])).stdout) as {
        kind: string;
        token?: string;
      }[];
      expect(json).toEqual([expect.objectContaining({ kind: "lease", token: String(lease.fencingToken) })]);
      stop.abort();
      await running;
      expect(await inspectLeaders(pool, { key: electionName })).toEqual([]);
    } finally {
      stop.abort();
      await Promise.all([leases.close(), sessions.close()]);
    }
  });
});
