// Failures found by the second adversarial review (issue #26), each with a test that failed before
// its fix.
import pg from "pg";
import {
  ConnectionError,
  createLeaseLocker,
  createLocker,
  DatabaseError,
  fencingTableSql,
  InvalidArgumentError,
  inspectLocks,
  type LockTimeoutError,
  newLock,
  ReadOnlyServerError,
  withXactLock,
} from "pglock";
import { describe, expect, it } from "vitest";
import { terminateBackend } from "../src/sql/advisory.js";
import { startThrowawayPostgres } from "../tools/throwaway-postgres.js";
import { databaseUrl, eventually, locksOnKey, makePool, sleep, uniqueKey, uniqueName } from "./support/db.js";
import { program, run } from "./support/run.js";

/** A lease table of this test's own (and its token sequence), dropped by dropLeaseTable. */
const leaseTableName = (prefix: string) => `${prefix}_${uniqueName("t").replace(/-/g, "_")}`;
const dropLeaseTable = (table: string) => `DROP TABLE IF EXISTS ${table}; DROP SEQUENCE IF EXISTS ${table}_token`;

/** Keeps this process's event loop busy for `ms`, as a GC pause or synchronous work does. */
function stall(ms: number) {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy
  }
}

describe("an event-loop stall is not a dead server", () => {
  /**
   * A pool whose clients stall this process for `ms` right after sending a statement that matches
   * `next.pattern` (once; `later`: from a setImmediate): the answer then arrives while the event loop
   * is stalled, as when a GC pause or synchronous work follows a send. The statements and the server
   * are real.
   */
  function stallingPool(next: { pattern: RegExp | undefined; ms: number; later?: boolean }) {
    const pool = makePool({ max: 3 });
    pool.on("connect", (client) => {
      const send = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        const result = send(...args);
        const text = typeof args[0] === "string" ? args[0] : ((args[0] as { text?: string })?.text ?? "");
        if (next.pattern?.test(text)) {
          next.pattern = undefined;
          // In the check phase: the loop's next turn then runs its timers before it reads the socket.
          if (next.later) setImmediate(() => stall(next.ms));
          else stall(next.ms);
        }
        return result;
      };
    });
    return pool;
  }

  it("a stall right after the heartbeat's probe went out loses nothing", async () => {
    const admin = makePool({ max: 2 });
    const next = { pattern: undefined as RegExp | undefined, ms: 1_500, later: true };
    const locker = createLocker(stallingPool(next), { keepaliveMs: 300, probeTimeoutMs: 500 });
    const key = uniqueKey();
    try {
      const held = await locker.acquire(key);
      for (let i = 0; i < 3; i++) {
        next.pattern = /THEN true END AS ok/; // the liveness probe (sql.ping)
        await eventually(() => next.pattern === undefined, 10_000);
        await sleep(600);
      }
      expect(held.signal.aborted).toBe(false);
      expect((await locksOnKey(admin, key)).filter((row) => row.granted)).toHaveLength(1);
      await held.release();
    } finally {
      await locker.close();
    }
  });

  it("a stall while a statement is in flight loses nothing", async () => {
    const admin = makePool({ max: 2 });
    const next = { pattern: undefined as RegExp | undefined, ms: 1_500 };
    const locker = createLocker(stallingPool(next), { keepaliveMs: 300, probeTimeoutMs: 500 });
    const key = uniqueKey();
    try {
      const held = await locker.acquire(key);
      for (let i = 0; i < 3; i++) {
        next.pattern = /pg_try_advisory_lock/;
        const other = await locker.tryAcquire(uniqueKey());
        await other?.release();
        await sleep(600);
      }
      expect(held.signal.aborted).toBe(false);
      expect((await locksOnKey(admin, key)).filter((row) => row.granted)).toHaveLength(1);
      await held.release();
    } finally {
      await locker.close();
    }
  });
});

describe("timeout: 0 is tryAcquire", () => {
  it("takes a free key on a fresh Locker and a fresh lease Locker, every time", async () => {
    const pool = makePool({ max: 30 });
    for (let i = 0; i < 10; i++) {
      const locker = createLocker(pool);
      const handle = await locker.acquire(uniqueKey(), { timeout: 0 });
      await handle.release();
      await locker.close();
      const leases = createLeaseLocker(pool, { applicationName: uniqueName() });
      const lease = await leases.acquire(uniqueKey(), { timeout: 0 });
      await lease.release();
      await leases.close();
    }
  });

  it("pglock run --timeout 0 (and 0s) runs the command on a free key", async () => {
    const [command, args] = program("src/cli/bin.ts");
    for (const timeout of ["0", "0s"]) {
      const result = await run(command, [...args, "run", uniqueName(), "--timeout", timeout, "--", "true"], {
        DATABASE_URL: databaseUrl(),
      });
      expect([timeout, result.code, result.stderr]).toEqual([timeout, 0, ""]);
    }
  });
});

describe("a primary that refuses writes", () => {
  it("is a ReadOnlyServerError that says read-only, not a hot standby", async () => {
    const pool = new pg.Pool({
      connectionString: databaseUrl(),
      max: 2,
      options: "-c default_transaction_read_only=on",
    });
    pool.on("error", () => {});
    const leases = createLeaseLocker(pool, { applicationName: uniqueName() });
    try {
      const error = await leases.acquire(uniqueKey()).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ReadOnlyServerError);
      expect((error as Error).message).toMatch(/read-only \(default_transaction_read_only is on/);
      expect((error as Error).message).not.toMatch(/standby/);
    } finally {
      await leases.close();
      await pool.end();
    }
  });
});

describe("fencing tokens", () => {
  it("a least-privilege role (no CREATE on the schema) draws tokens from a table its owner made", async () => {
    const admin = new pg.Client({ connectionString: databaseUrl() });
    await admin.connect();
    const role = `pglock_app_${uniqueName("r").replace(/-/g, "_")}`;
    const schema = `pglock_s_${uniqueName("s").replace(/-/g, "_")}`;
    const table = "fencing_tokens";
    try {
      await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'app-secret'`);
      // A schema the role may use but not create in: what PostgreSQL 15+ does to public by default.
      await admin.query(`CREATE SCHEMA ${schema}`);
      await admin.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
      await admin.query(`SET search_path = ${schema}`);
      await admin.query(fencingTableSql(table));
      await admin.query(`GRANT SELECT, INSERT, UPDATE ON ${schema}.${table} TO ${role}`);
      const url = new URL(databaseUrl());
      url.username = role;
      url.password = "app-secret";
      const pool = new pg.Pool({ connectionString: url.href, max: 3, options: `-c search_path=${schema}` });
      pool.on("error", () => {});
      const locker = createLocker(pool, { fencingTable: table });
      try {
        const key = uniqueKey();
        const first = await locker.acquire(key, { fencing: true });
        await first.release();
        const second = await locker.acquire(key, { fencing: true });
        expect(second.fencingToken as bigint).toBeGreaterThan(first.fencingToken as bigint);
        await second.release();
        // A table it may not write is a pglock error that says what to do, not a raw 42501.
        await admin.query(`REVOKE UPDATE ON ${schema}.${table} FROM ${role}`);
        const error = await locker.acquire(key, { fencing: true }).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(DatabaseError);
        expect((error as Error).message).toMatch(
          /fencing token could not be drawn: .*permission denied.*grant SELECT, INSERT, UPDATE/,
        );
        expect((await locksOnKey(makePool({ max: 2 }), key)).filter((row) => row.granted)).toEqual([]);
      } finally {
        await locker.close();
        await pool.end();
      }
    } finally {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.query(`DROP ROLE IF EXISTS ${role}`);
      await admin.end();
    }
  });

  it("tokens keep increasing across a crash of a server with synchronous_commit = off", async () => {
    const server = await startThrowawayPostgres({
      postgresFlags: ["-c", "synchronous_commit=off", "-c", "wal_writer_delay=10000"],
    });
    try {
      const key = uniqueKey();
      const highest = async () => {
        const pool = new pg.Pool({ connectionString: server.url, max: 3 });
        pool.on("error", () => {});
        const locker = createLocker(pool);
        // A short TTL: a release that the crash lost leaves the lease taken until it expires.
        const leases = createLeaseLocker(pool, { applicationName: uniqueName(), ttlMs: 1_000 });
        const tokens: bigint[] = [];
        const leaseTokens: bigint[] = [];
        try {
          for (let i = 0; i < 20; i++) {
            const handle = await locker.acquire(key, { fencing: true });
            tokens.push(handle.fencingToken as bigint);
            await handle.release();
            const lease = await leases.acquire(key);
            leaseTokens.push(lease.fencingToken);
            await lease.release();
          }
        } finally {
          await Promise.all([locker.close(), leases.close()]);
          await pool.end();
        }
        return { session: tokens.at(-1) as bigint, lease: leaseTokens.at(-1) as bigint };
      };
      const before = await highest();
      await server.restart({ immediate: true });
      const after = await highest();
      expect(after.session).toBeGreaterThan(before.session);
      expect(after.lease).toBeGreaterThan(before.lease);
    } finally {
      await server.stop();
    }
  });
});

describe("ending an abandoned session", () => {
  it("never ends a server session that now carries another client's application_name", async () => {
    const admin = makePool({ max: 2 });
    const other = new pg.Client({
      connectionString: databaseUrl(),
      application_name: "pglock web-2:1@0badc0de locker-1",
    });
    await other.connect();
    other.on("error", () => {});
    try {
      const { rows } = await other.query(
        "SELECT pg_backend_pid() AS pid, date_part('epoch', backend_start)::text AS started FROM pg_stat_activity WHERE pid = pg_backend_pid()",
      );
      const statement = "SELECT pg_sleep(3)";
      const sleeping = other.query(statement).catch((error: unknown) => error);
      await eventually(async () => {
        const active = await admin.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [rows[0].pid]);
        return active.rows[0]?.state === "active";
      });
      // The same pid, start and statement text, as a pooler would hand this server session on: not ours.
      const mine = terminateBackend(
        Number(rows[0].pid),
        rows[0].started,
        statement,
        "pglock web-1:1@1badc0de locker-1",
      );
      expect((await admin.query(mine.text, [...mine.values])).rows).toEqual([]);
      const theirs = terminateBackend(
        Number(rows[0].pid),
        rows[0].started,
        statement,
        "pglock web-2:1@0badc0de locker-1",
      );
      expect((await admin.query(theirs.text, [...theirs.values])).rows).toEqual([{ ended: true }]);
      expect(String(await sleeping)).toMatch(/terminating connection/);
    } finally {
      await other.end().catch(() => {});
    }
  });
});

describe("lease options that used to break every statement", () => {
  it("a TTL beyond a day, and a table named by a reserved word, are refused with the rule", () => {
    const pool = makePool({ max: 2 });
    expect(() => createLeaseLocker(pool, { ttlMs: 2_160_000_000 })).toThrow(
      /options.ttlMs must be an integer in \[100, 86400000\], got 2160000000/,
    );
    for (const table of ["user", "order", "select", "public.user"]) {
      expect(() => createLeaseLocker(pool, { table })).toThrow(/must not be a word PostgreSQL reserves/);
      expect(() => createLocker(pool, { fencingTable: table })).toThrow(InvalidArgumentError);
    }
    expect(() => createLeaseLocker(pool, { table: "users" })).not.toThrow();
  });
});

describe("no error carries a password (issue #27's security part)", () => {
  const secret = "s3cr3t-Pa55";
  const inputs = [
    `postgres://app:${secret}@db.example:5432/prod`,
    `postgresql://app:${secret}@db.example/prod?sslmode=require`,
    `host=db.example user=app password=${secret} dbname=prod`,
    { connectionString: `postgres://app:${secret}@db.example/prod` },
  ];

  it("every call that takes a database, given a connection string, says what it got without the password", async () => {
    for (const input of inputs) {
      const attempts: (() => unknown)[] = [
        // As an untyped caller would (plain JavaScript, or `any`): TypeScript refuses a string here.
        () => createLocker(input as never),
        () => createLeaseLocker(input as never),
        () => newLock(input as never, 1),
        () => withXactLock(input as never, 1, async () => {}),
        () => inspectLocks(input as never),
      ];
      for (const attempt of attempts) {
        const error = await Promise.resolve()
          .then(attempt)
          .then(
            () => undefined,
            (caught: unknown) => caught,
          );
        expect(error).toBeInstanceOf(InvalidArgumentError);
        expect(String((error as Error).message)).not.toContain(secret);
        expect(JSON.stringify(error)).not.toContain(secret);
      }
    }
  });

  it("an unconnected pg.Client is a usage error, found before anything is sent (issue #27)", async () => {
    const client = new pg.Client({ connectionString: `postgres://app:${secret}@127.0.0.1:1/prod` });
    client.on("error", () => {});
    for (const attempt of [
      () => newLock(client, 1),
      () => inspectLocks(client),
      () => withXactLock(client, 1, async () => {}),
    ]) {
      const error = await attempt().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as Error).message).toMatch(/the pg.Client is not connected: call await client.connect\(\) first/);
      expect((error as Error).message).not.toContain(secret);
    }
  });

  it("a database that cannot be reached says so without the password", async () => {
    const pool = new pg.Pool({ connectionString: `postgres://app:${secret}@127.0.0.1:1/prod`, max: 2 });
    pool.on("error", () => {});
    const locker = createLocker(pool);
    try {
      const error = await locker.acquire(uniqueKey(), { timeout: 5_000 }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ConnectionError);
      expect(`${(error as Error).message} ${String((error as Error).cause)}`).not.toContain(secret);
    } finally {
      await locker.close();
      await pool.end();
    }
  });
});

describe("a lease Locker closed while a grant is in flight", () => {
  it("close() waits for the grant it gave up on to settle and be taken back: pool.end() after it leaves no ghost lease", async () => {
    const table = leaseTableName("pglock_ghost");
    const admin = new pg.Client({ connectionString: databaseUrl() });
    await admin.connect();
    const key = uniqueKey();
    const first = createLeaseLocker(makePool({ max: 2 }), { table, ttlMs: 10_000 });
    await (await first.acquire(key)).release(); // the key's row exists from here on
    await first.close();
    const pool = new pg.Pool({ connectionString: databaseUrl(), max: 2 });
    pool.on("error", () => {});
    const leases = createLeaseLocker(pool, { table, ttlMs: 10_000 });
    try {
      // Holding the key's row keeps the grant in flight, as a slow server would.
      await admin.query("BEGIN");
      await admin.query(`SELECT 1 FROM ${table} WHERE lock_key = $1 FOR UPDATE`, [String(key)]);
      const granting = leases.acquire(key).catch((error: unknown) => error);
      await sleep(200);
      const closing = leases.close();
      // As every example does: close(), then end the pool. A close() that resolved with the grant
      // still in flight lets the pool end before the grant commits.
      let ended: Promise<void> | undefined;
      void closing.then(() => {
        ended = pool.end();
      });
      await sleep(300);
      await admin.query("COMMIT"); // the grant commits now, after close() gave up on it
      await closing;
      expect(await granting).toBeInstanceOf(Error);
      await ended;
      const other = createLeaseLocker(makePool({ max: 2 }), { table, ttlMs: 10_000 });
      const started = performance.now();
      const lease = await other.acquire(key, { timeout: 8_000 });
      expect(performance.now() - started).toBeLessThan(3_000); // not a TTL later
      await lease.release();
      await other.close();
    } finally {
      await admin.query(dropLeaseTable(table)).catch(() => {});
      await admin.end();
    }
  });
});

describe("leases at scale", () => {
  it("one Locker's renewals travel together: 300 leases renewed every 100 ms for 2 s, none lost, few statements", async () => {
    const pool = makePool({ max: 4 });
    const statements = { renew: 0, all: 0 };
    const query = async (text: string, params: unknown[]) => {
      statements.all++;
      if (text.includes("renewed AS (UPDATE")) statements.renew++;
      return (await pool.query(text, params)).rows;
    };
    const table = leaseTableName("pglock_scale");
    const leases = createLeaseLocker(query, { table, ttlMs: 3_000, renewEveryMs: 100 });
    try {
      await (await leases.acquire(uniqueKey())).release(); // creates the table
      const held = [];
      for (let wave = 0; wave < 10; wave++) {
        held.push(...(await Promise.all(Array.from({ length: 30 }, () => leases.acquire(uniqueKey())))));
      }
      const before = statements.renew;
      await sleep(2_000);
      expect(held.filter((lease) => lease.signal.aborted)).toEqual([]);
      // One statement per lease would be about 300 × 20 = 6,000.
      expect(statements.renew - before).toBeGreaterThan(5);
      expect(statements.renew - before).toBeLessThan(300);
      await Promise.all(held.map((lease) => lease.release()));
    } finally {
      await leases.close();
      await pool.query(dropLeaseTable(table));
    }
  });

  it("shared holders of one key in one Locker are renewed together, and stay held", async () => {
    const leases = createLeaseLocker(makePool({ max: 3 }), {
      applicationName: uniqueName(),
      ttlMs: 1_000,
      renewEveryMs: 100,
    });
    const key = uniqueKey();
    try {
      const shared = await Promise.all([1, 2, 3].map(() => leases.acquire(key, { shared: true })));
      await sleep(1_500);
      expect(shared.map((lease) => lease.signal.aborted)).toEqual([false, false, false]);
      await Promise.all(shared.map((lease) => lease.release()));
    } finally {
      await leases.close();
    }
  });

  it("clean-up keeps up: 5,000 expired rows are gone a moment after the next grant", async () => {
    const pool = makePool({ max: 3 });
    const table = leaseTableName("pglock_clean");
    const leases = createLeaseLocker(pool, { table });
    try {
      await (await leases.acquire(uniqueKey())).release(); // creates the table
      await pool.query(
        `INSERT INTO ${table} (lock_key, shared, holders, expires_at, token)
         SELECT 'expired-' || i, false, '{}'::jsonb, now() - interval '1 hour', i FROM generate_series(1, 5000) AS i`,
      );
      const fresh = createLeaseLocker(pool, { table }); // its first grant cleans up
      await (await fresh.acquire(uniqueKey())).release();
      await eventually(async () => {
        const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${table} WHERE expires_at < now()`);
        return rows[0].n < 10;
      }, 10_000);
      await fresh.close();
    } finally {
      await leases.close();
      await pool.query(dropLeaseTable(table));
    }
  });
});

describe("lease tokens stay in grant order", () => {
  it("clean-up keeps a row for the longest TTL any Locker uses on the table, not its own", async () => {
    const pool = makePool({ max: 3 });
    const table = leaseTableName("pglock_ttls");
    const long = createLeaseLocker(pool, { table, ttlMs: 20_000 });
    const short = createLeaseLocker(pool, { table, ttlMs: 200, renewEveryMs: 50, expiryMarginMs: 40 });
    try {
      await (await long.acquire(uniqueKey())).release(); // the table learns the 20 s TTL
      const key = uniqueKey();
      await (await short.acquire(key)).release();
      await sleep(400); // the short lease's row has expired
      const cleaner = createLeaseLocker(pool, { table, ttlMs: 200, renewEveryMs: 50, expiryMarginMs: 40 });
      await (await cleaner.acquire(uniqueKey())).release(); // its first grant cleans up
      await sleep(200);
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${table} WHERE lock_key = $1`, [String(key)]);
      expect(rows[0].n).toBe(1);
      await cleaner.close();
    } finally {
      await Promise.all([long.close(), short.close()]);
      await pool.query(dropLeaseTable(table));
    }
  });

  it("a dropped token sequence is not recreated below the tokens given: a DatabaseError says how to recreate it", async () => {
    const pool = makePool({ max: 3 });
    const table = leaseTableName("pglock_seq");
    const leases = createLeaseLocker(pool, { table });
    try {
      const key = uniqueKey();
      await (await leases.acquire(key)).release();
      await pool.query(`DROP SEQUENCE ${table}_token`);
      const error = await leases.acquire(uniqueKey()).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(DatabaseError);
      expect((error as Error).message).toMatch(/token sequence .*_token is missing: pglock will not recreate it/);
      const { rows } = await pool.query("SELECT to_regclass($1) AS found", [`${table}_token`]);
      expect(rows[0].found).toBeNull();
    } finally {
      await leases.close();
      await pool.query(dropLeaseTable(table));
    }
  });
});

describe("usage errors that say what to do (issue #27)", () => {
  it("an unknown option is a typed error that names it, with the option meant", async () => {
    const pool = makePool({ max: 3 });
    expect(() => createLocker(pool, { maxConnections: 2 } as never)).toThrow(
      /createLocker: unknown option "maxConnections"; the options are maxSessions, /,
    );
    const locker = createLocker(pool);
    try {
      await expect(locker.acquire(uniqueKey(), { timout: 5000 } as never)).rejects.toThrow(
        /acquire: unknown option "timout" \(did you mean "timeout"\?\)/,
      );
      await expect(locker.withLock(uniqueKey(), () => {}, { timout: 5000 } as never)).rejects.toBeInstanceOf(
        InvalidArgumentError,
      );
      expect(() => createLeaseLocker(pool, { ttl: 1000 } as never)).toThrow(/did you mean "ttlMs"/);
    } finally {
      await locker.close();
    }
  });

  it("withXactLock(pool) names the pool; LockTimeoutError names its key", async () => {
    const pool = makePool({ max: 3 });
    await expect(withXactLock(pool, 1, () => {})).rejects.toThrow(/withXactLock: got a pg.Pool; pass the client/);
    const [a, b] = [createLocker(pool), createLocker(pool)];
    const key = uniqueKey();
    try {
      const held = await a.acquire(key);
      const error = await b.acquire(key, { timeout: 100 }).catch((caught: unknown) => caught);
      expect((error as LockTimeoutError).key).toBe(String(key));
      await held.release();
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
