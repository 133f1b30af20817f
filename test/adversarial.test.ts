// The four library failures an adversarial run found (issue #18), each reproduced as it was seen.
import { createServer, type Server, type Socket } from "node:net";
import { ClosedError, createLocker, LockTimeoutError } from "pglock";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { makePool, sleep, uniqueKey } from "./support/db.js";

/** How long a call took, and what it settled with. */
async function timed<T>(promise: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = performance.now();
  try {
    const value = await promise;
    return { ms: performance.now() - started, value };
  } catch (error) {
    return { ms: performance.now() - started, error };
  }
}

/** A server that accepts TCP connections and never says a word. */
async function silentServer(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `postgres://nobody:secret@127.0.0.1:${port}/none`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

describe("timeouts and aborts apply while pglock waits for a connection", () => {
  const silent = silentServer();
  const ends: (() => Promise<void>)[] = [];
  afterAll(async () => {
    await Promise.all(ends.map((end) => end()));
    await (await silent).close();
  });

  it("pg.Pool whose only client the application holds: timeout, signal, tryAcquire and close() all return", async () => {
    const pool = makePool({ max: 1 });
    const theAppsClient = await pool.connect();
    const locker = createLocker(pool);
    try {
      const timedOut = await timed(locker.acquire(uniqueKey(), { timeout: 300 }));
      expect(timedOut.error).toBeInstanceOf(LockTimeoutError);
      expect(timedOut.ms).toBeLessThan(5_000);
      const aborted = await timed(locker.acquire(uniqueKey(), { signal: AbortSignal.timeout(300) }));
      expect((aborted.error as Error).name).toBe("TimeoutError");
      expect(aborted.ms).toBeLessThan(5_000);
      const tried = await timed(locker.tryAcquire(uniqueKey(), { signal: AbortSignal.timeout(300) }));
      expect((tried.error as Error).name).toBe("TimeoutError");
      const pending = locker.acquire(uniqueKey()).catch((error: unknown) => error);
      await sleep(100);
      const closed = await timed(locker.close());
      expect(closed.ms).toBeLessThan(5_000);
      expect(await pending).toBeInstanceOf(ClosedError);
    } finally {
      theAppsClient.release();
      await locker.close();
    }
    // The connections pglock asked for and gave up on come back to the pool once they open.
    await sleep(200);
    expect(pool.totalCount - pool.idleCount).toBe(0);
  });

  it("pool max 2 held by the application: 50 withLock calls with a timeout all reject with LockTimeoutError", async () => {
    // The deadlock users build (withLock's fn queries the pool the Locker's sessions come from) shows
    // as these timeouts; the cure is a Locker with fewer sessions than the pool, or a pool of its own.
    const pool = makePool({ max: 2 });
    const held = await Promise.all([pool.connect(), pool.connect()]);
    const locker = createLocker(pool);
    try {
      const started = performance.now();
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) => locker.withLock(`busy-pool-${i}`, () => "ran", { timeout: 500 })),
      );
      expect(performance.now() - started).toBeLessThan(10_000);
      for (const result of results) {
        expect(result.status).toBe("rejected");
        if (result.status === "rejected") expect(result.reason).toBeInstanceOf(LockTimeoutError);
      }
    } finally {
      for (const client of held) client.release();
      await locker.close();
    }
  });

  const silentHandles = {
    "pg.Pool": (url: string): unknown => makePool({ connectionString: url }),
    "postgres.js": (url: string): unknown => {
      const sql = postgres(url, { connect_timeout: 60, onnotice: () => {} });
      ends.push(() => sql.end({ timeout: 0 }));
      return sql;
    },
  };

  for (const [name, connect] of Object.entries(silentHandles)) {
    it(`a server that accepts TCP and never answers (${name}): timeout, signal and close() apply`, async () => {
      const locker = createLocker(connect((await silent).url));
      const timedOut = await timed(locker.acquire(uniqueKey(), { timeout: 300 }));
      expect(timedOut.error).toBeInstanceOf(LockTimeoutError);
      expect(timedOut.ms).toBeLessThan(5_000);
      const aborted = await timed(locker.tryAcquire(uniqueKey(), { signal: AbortSignal.timeout(300) }));
      expect((aborted.error as Error).name).toBe("TimeoutError");
      expect((await timed(locker.close())).ms).toBeLessThan(5_000);
    });
  }
});
