/**
 * The node-postgres (`pg` 8.x) driver. Structural types only: pglock never imports `pg`, it uses
 * the pool or client the caller passes in.
 */
import type { Socket } from "node:net";
import { ConnectionError, InvalidArgumentError } from "../errors.js";
import { describe } from "../key.js";
import { sqlState } from "../server-errors.js";
import type { Statement } from "../sql/advisory.js";
import { CANCEL_TIMEOUT_MS, sendCancelRequest } from "./cancel-request.js";
import type { Driver, DriverConnection } from "./driver.js";

/** The part of a `pg.Client` pglock uses. */
export interface PgClient {
  query(text: string, values: unknown[]): Promise<{ rows: Record<string, unknown>[] }>;
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: Record<string, unknown>[] }>;
  on(event: "error" | "end" | "notification", listener: (...args: unknown[]) => void): unknown;
  removeListener(event: "error" | "end" | "notification", listener: (...args: unknown[]) => void): unknown;
  readonly processID?: number | null;
  readonly secretKey?: number | null;
  readonly host?: string;
  readonly port?: number;
}

/** The part of a `pg.PoolClient` pglock uses. */
export interface PgPoolClient extends PgClient {
  release(destroy?: boolean | Error): void;
}

/** The part of a `pg.Pool` pglock uses. */
export interface PgPool {
  connect(): Promise<PgPoolClient>;
  readonly totalCount: number;
  on?(event: "acquire", listener: (client: PgPoolClient) => void): unknown;
}

export function isPgPool(value: unknown): value is PgPool {
  const v = value as Partial<PgPool> | null;
  return typeof v === "object" && v !== null && typeof v.connect === "function" && typeof v.totalCount === "number";
}

export function isPgClient(value: unknown): value is PgClient {
  const v = value as (Partial<PgClient> & { connectionParameters?: unknown }) | null;
  return (
    typeof v === "object" &&
    v !== null &&
    typeof v.query === "function" &&
    typeof v.on === "function" &&
    "connectionParameters" in v &&
    !isPgPool(v)
  );
}

/** Caller-owned clients that a pglock session uses now: one session per client, or their statements would interleave. */
const clientsInUse = new WeakSet<PgClient>();

/** Errors that reached a pool client while pg-pool was handing it over; see guardHandovers. */
const handoverErrors = new WeakMap<PgClient, Error>();
const guardedPools = new WeakSet<PgPool>();

/**
 * pg-pool hands a client to `connect()`'s caller from inside the socket read that completed it (the
 * startup's ReadyForQuery, or a callback query's end): it removes its idle 'error' listener there,
 * and the caller's own listener can only come a microtask later. When the same read also carries a
 * FATAL (a backend terminated or a server shutting down right then), the client emits 'error' with
 * no listener and the process crashes (brianc/node-postgres#2762 is this report). Seen in the chaos
 * suite, reproduced in test/adversarial.test.ts. The guard listens from the pool's 'acquire' event,
 * emitted before the idle listener is removed, to the end of that read; pglock then refuses a client
 * that failed in between. The user's own checkouts from the same pool get the same protection: their
 * client's next query fails instead of the process crashing.
 */
export function guardHandovers(pool: PgPool) {
  if (guardedPools.has(pool) || typeof pool.on !== "function") return;
  guardedPools.add(pool);
  pool.on("acquire", (client) => {
    const record = (error: unknown) =>
      handoverErrors.set(client, error instanceof Error ? error : new Error(String(error)));
    client.on("error", record);
    queueMicrotask(() => client.removeListener("error", record));
  });
}

/** A driver over a `pg.Pool` (each connection is checked out) or one caller-owned `pg.Client`. */
export function pgDriver(db: unknown, what: string): Driver {
  if (isPgPool(db)) {
    guardHandovers(db);
    // pg.Pool's own default for max is 10 (https://node-postgres.com/apis/pool).
    const max = (db as { options?: { max?: unknown } }).options?.max;
    return {
      ownsConnections: true,
      idleMs: 1_000,
      sharedPoolMax: typeof max === "number" && Number.isFinite(max) ? max : 10,
      async connect() {
        const client = await db.connect();
        const failed = handoverErrors.get(client);
        if (failed) {
          handoverErrors.delete(client);
          client.release(failed);
          throw new ConnectionError(`the connection failed as the pool handed it over: ${failed.message}`, {
            cause: failed,
          });
        }
        return new PgConnection(
          client,
          () => client.release(),
          (cause) => client.release(cause),
          true,
        );
      },
    };
  }
  if (isPgClient(db)) {
    const client = db;
    // A usage error, found before anything is sent (issue #27: it was reported as a ConnectionError).
    if (client.processID == null) {
      throw new InvalidArgumentError(`${what}: the pg.Client is not connected: call await client.connect() first`);
    }
    return {
      ownsConnections: false,
      idleMs: 1_000,
      async connect() {
        if (clientsInUse.has(client)) {
          throw new InvalidArgumentError(`${what}: this pg.Client already serves another pglock session`);
        }
        clientsInUse.add(client);
        const free = () => clientsInUse.delete(client);
        // The caller owns the client: pglock never ends it, even when its session is broken.
        return new PgConnection(client, free, free, false);
      },
    };
  }
  throw new InvalidArgumentError(`${what}: expected a pg.Pool or a connected pg.Client, got ${describe(db)}`);
}

/** One name per statement text, the same on every connection (pg prepares it once per connection). */
const preparedNames = new Map<string, string>();
function preparedName(text: string): string {
  let name = preparedNames.get(text);
  if (name === undefined) {
    name = `pglock_${preparedNames.size + 1}`;
    preparedNames.set(text, name);
  }
  return name;
}

class PgConnection implements DriverConnection {
  readonly #client: PgClient;
  readonly #onRelease: () => void;
  readonly #onDestroy: (cause: Error) => void;
  #endListener: ((cause: Error) => void) | undefined;
  #notificationListener: ((message: unknown) => void) | undefined;
  #ended = false;
  #detached = false;
  /** Lock statements go as named prepared statements (see query). */
  #prepares = true;

  readonly #ends: boolean;

  /** `ends`: whether destroy() ends the connection (a pool's) or leaves it to its owner (a caller's client). */
  constructor(client: PgClient, onRelease: () => void, onDestroy: (cause: Error) => void, ends: boolean) {
    this.#client = client;
    this.#ends = ends;
    this.#onRelease = onRelease;
    this.#onDestroy = onDestroy;
    // A checked-out pg client with no 'error' listener crashes the process when its socket fails.
    client.on("error", this.#onError);
    client.on("end", this.#onEndEvent);
  }

  #onError = (error: unknown) => this.#ended || this.#end(error instanceof Error ? error : new Error(String(error)));
  #onEndEvent = () => this.#ended || this.#end(new Error("the server closed the connection"));

  #end(cause: Error) {
    this.#ended = true;
    if (!this.#detached) this.#endListener?.(cause);
  }

  query(statement: Statement) {
    const values = statement.values as unknown[];
    // Named only on a pool's connection: a caller's client may sit behind a transaction pooler, where
    // the next statement can reach a server session that never prepared the name.
    if (!statement.prepare || !this.#ends || !this.#prepares) {
      return this.#client.query(statement.text, values).then((result) => result.rows);
    }
    const named = { name: preparedName(statement.text), text: statement.text, values };
    return this.#client.query(named).then(
      (result) => result.rows,
      (error: unknown) => {
        // 26000: the server session does not have a statement pg believes it prepared on this pooled
        // connection (the application ran DISCARD ALL or DEALLOCATE on it, or a transaction pooler
        // sent the statement elsewhere). 42P05: it has one of that name already (a transaction pooler
        // sent it to a server session that another client's pglock prepared it on; issue #26).
        // Nothing ran: run it unnamed, and stay unnamed. In the pooler's case the Session's pid guard
        // then finds the move.
        const state = sqlState(error);
        if (state !== "26000" && state !== "42P05") throw error;
        this.#prepares = false;
        return this.#client.query(statement.text, values).then((result) => result.rows);
      },
    );
  }

  onEnd(listener: (cause: Error) => void) {
    this.#endListener = listener;
  }

  onNotification(listener: (channel: string, payload: string) => void) {
    this.#notificationListener = (message: unknown) => {
      const { channel, payload } = message as { channel: string; payload?: string };
      listener(channel, payload ?? "");
    };
    this.#client.on("notification", this.#notificationListener);
  }

  setKeepAlive(initialDelayMs: number) {
    // pg 8 keeps its socket at client.connection.stream; keepalive can only be set on a live socket.
    const stream = (this.#client as { connection?: { stream?: Partial<Socket> } }).connection?.stream;
    stream?.setKeepAlive?.(true, initialDelayMs);
  }

  cancel(): Promise<void> {
    const { processID, secretKey, host, port } = this.#client;
    if (processID == null || secretKey == null) {
      return Promise.reject(new ConnectionError("cannot cancel: the session has no backend key"));
    }
    const target =
      host?.startsWith("/") === true
        ? { path: `${host}/.s.PGSQL.${port}` }
        : { host: host ?? "localhost", port: port ?? 5432 };
    return sendCancelRequest(target, { processId: processID, secretKey });
  }

  #detach() {
    this.#detached = true;
    this.#client.removeListener("end", this.#onEndEvent);
    if (this.#notificationListener) this.#client.removeListener("notification", this.#notificationListener);
    // The 'error' listener stays until the client is gone: a late socket error must never crash the process.
  }

  async release() {
    this.#detach();
    this.#client.removeListener("error", this.#onError);
    this.#onRelease();
  }

  async destroy(cause: Error) {
    const wasEnded = this.#ended || !this.#ends;
    this.#detach();
    const ended = wasEnded
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          this.#client.on("end", () => resolve());
          setTimeout(resolve, CANCEL_TIMEOUT_MS).unref();
        });
    this.#onDestroy(cause);
    await ended;
  }
}
