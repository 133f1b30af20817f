/**
 * Other lock libraries, measured beside pglock: npm advisory-lock (PostgreSQL, a connection per
 * lock) and redis-semaphore (Redis). A peer that cannot run here says why instead.
 */
export type Peer =
  | {
      name: string;
      tryAcquire(key: string): Promise<(() => Promise<void>) | undefined>;
      acquire(key: string): Promise<() => Promise<void>>;
      close(): Promise<void>;
      note?: string;
    }
  | { name: string; skipped: string };

export async function advisoryLockPeer(url: string): Promise<Peer> {
  const { default: advisoryLock } = await import("advisory-lock");
  const mutexes = new Map<string, ReturnType<ReturnType<typeof advisoryLock>>>();
  const create = advisoryLock(url);
  const mutex = (key: string) => {
    const m = mutexes.get(key) ?? create(key);
    mutexes.set(key, m);
    return m;
  };
  return {
    name: "npm advisory-lock 2.0 (a new connection per lock)",
    tryAcquire: async (key) => {
      const unlock = await mutex(key).tryLock();
      return unlock ? () => unlock() : undefined;
    },
    acquire: async (key) => {
      const unlock = await mutex(key).lock();
      return () => unlock();
    },
    close: async () => {},
  };
}

export async function redisPeer(): Promise<Peer> {
  const { default: Redis } = await import("ioredis");
  const { Mutex } = await import("redis-semaphore");
  const redis = new Redis({
    host: "127.0.0.1",
    port: 6379,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on("error", () => {});
  try {
    await redis.connect();
    await redis.ping();
  } catch {
    redis.disconnect();
    return { name: "redis-semaphore Mutex (Redis)", skipped: "no Redis reachable at 127.0.0.1:6379" };
  }
  return {
    name: "redis-semaphore 5.8 Mutex (Redis, polls every 10 ms)",
    tryAcquire: async (key) => {
      const mutex = new Mutex(redis, key, { lockTimeout: 30_000, refreshInterval: 0 });
      return (await mutex.tryAcquire()) ? () => mutex.release() : undefined;
    },
    acquire: async (key) => {
      const mutex = new Mutex(redis, key, {
        lockTimeout: 30_000,
        refreshInterval: 0,
        acquireTimeout: 60_000,
        retryInterval: 10,
      });
      await mutex.acquire();
      return () => mutex.release();
    },
    close: async () => {
      redis.disconnect();
    },
  };
}

type UsablePeer = Exclude<Peer, { skipped: string }>;

/** The peers that can run, and a row saying why for each that cannot. */
export function sortPeers(peers: Peer[]): { usable: UsablePeer[]; skipped: [string, string][] } {
  const usable: UsablePeer[] = [];
  const skipped: [string, string][] = [];
  for (const peer of peers) {
    if ("skipped" in peer) skipped.push([peer.name, `skipped: ${peer.skipped}`]);
    else usable.push(peer);
  }
  return { usable, skipped };
}
