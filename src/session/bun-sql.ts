/**
 * The driver for Bun's built-in PostgreSQL client (`import { SQL } from "bun"`). Structural types
 * only: pglock never imports "bun"; it makes each session's instance with the constructor of the
 * caller's `sql`, from the caller's options.
 *
 * As for postgres.js, each pglock session is an instance of its own with `max: 1`. Bun 1.4, as probed:
 * - a max-1 instance whose server session ends reconnects silently for the next query, so pglock
 *   never queries an instance after its `onclose` (and the pid guard of sql/advisory.ts catches the rest);
 * - no backend key is exposed, so a cancel is the query's own `cancel()` (see {@link BunSqlConnection.cancel});
 * - notifications reach only `sql.listen()` subscribers, never a `LISTEN` run as a statement;
 * - there is no socket on which to set TCP keepalive: pglock's liveness probe is the only detector;
 * - a server error's SQLSTATE is in `errno` (its `code` is ERR_POSTGRES_SERVER_ERROR).
 */

import { ConnectionError } from "../errors.js";
import { settleWithin } from "../pending.js";
import type { Statement } from "../sql/advisory.js";
import { CANCEL_TIMEOUT_MS } from "./cancel-request.js";
import type { Driver, DriverConnection } from "./driver.js";
import { arrayLiteral } from "./parameters.js";

/** A Bun query: a promise of rows that can be cancelled on the server. */
interface BunQuery extends PromiseLike<Record<string, unknown>[]> {
  cancel(): unknown;
}

/** The part of a Bun `SQL` instance pglock uses. */
export interface BunSql {
  unsafe(text: string, values?: unknown[]): BunQuery;
  listen(channel: string, listener: (payload: string) => void): Promise<() => Promise<void> | void>;
  close(options?: { timeout?: number }): Promise<void>;
  readonly options: { readonly adapter?: string; readonly [option: string]: unknown };
}

type BunSqlConstructor = new (options: object) => BunSql;

/** A Bun `SQL` instance: not a transaction's `sql` (it has `savepoint`), nor a reserved one (`release`). */
export function isBunSql(value: unknown): value is BunSql {
  const v = value as Partial<BunSql> & { reserve?: unknown; begin?: unknown; savepoint?: unknown; release?: unknown };
  return (
    typeof value === "function" &&
    v.savepoint === undefined &&
    v.release === undefined &&
    typeof v.unsafe === "function" &&
    typeof v.listen === "function" &&
    typeof v.reserve === "function" &&
    typeof v.begin === "function" &&
    typeof v.options === "object" &&
    v.options !== null &&
    v.options.adapter === "postgres"
  );
}

/** How long the statement after an unconfirmed cancel may be the one a late cancel request hits. */
const CANCEL_BARRIER_SECONDS = 0.05;

export function bunSqlDriver(sql: BunSql): Driver {
  const SQL = (sql as unknown as { constructor: BunSqlConstructor }).constructor;
  return {
    ownsConnections: true,
    idleMs: 10_000,
    async connect() {
      return new BunSqlConnection(sql.options, SQL);
    },
  };
}

class BunSqlConnection implements DriverConnection {
  readonly #instance: BunSql;
  readonly #closed: Promise<void>;
  #onClosed!: () => void;
  #isClosed = false;
  #ending = false;
  #running: BunQuery | undefined;
  #endListener: ((cause: Error) => void) | undefined;
  #notificationListener: ((channel: string, payload: string) => void) | undefined;
  readonly #unlisten = new Map<string, () => Promise<void> | void>();

  constructor(options: BunSql["options"], SQL: BunSqlConstructor) {
    this.#closed = new Promise((resolve) => {
      this.#onClosed = resolve;
    });
    this.#instance = new SQL({
      ...options,
      max: 1,
      // 0: no idle or lifetime limit, which would end a session that holds locks.
      idleTimeout: 0,
      maxLifetime: 0,
      // Unnamed statements, as with the other drivers: nothing to go stale behind a pooler.
      prepare: false,
      bigint: false,
      onclose: (error: unknown) => this.#closedByServer(error),
    });
  }

  #closedByServer(error: unknown) {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#onClosed();
    if (!this.#ending) {
      this.#endListener?.(error instanceof Error ? error : new Error("the server closed the connection"));
    }
  }

  query(statement: Statement): Promise<Record<string, unknown>[]> {
    if (this.#isClosed) return Promise.reject(new ConnectionError("the connection to PostgreSQL is closed"));
    // Bun delivers notifications only to sql.listen(): LISTEN and UNLISTEN become its subscriptions.
    const listen = /^(UN)?LISTEN (\w+)$/.exec(statement.text);
    if (listen) return this.#listen(listen[2] as string, listen[1] === undefined).then(() => []);
    const query = this.#instance.unsafe(statement.text, statement.values.map(arrayLiteral));
    this.#running = query;
    const done = () => {
      if (this.#running === query) this.#running = undefined;
    };
    return Promise.resolve(query).then(
      (rows) => {
        done();
        return [...rows];
      },
      (error: unknown) => {
        done();
        throw error;
      },
    );
  }

  async #listen(channel: string, on: boolean) {
    if (!on) {
      await this.#unlisten.get(channel)?.();
      this.#unlisten.delete(channel);
      return;
    }
    if (this.#unlisten.has(channel)) return;
    const unlisten = await this.#instance.listen(channel, (payload) => this.#notificationListener?.(channel, payload));
    this.#unlisten.set(channel, unlisten);
  }

  /**
   * Bun exposes no backend key, so pglock cannot send its own CancelRequest and wait for the server's
   * receipt (cancel-request.ts); it asks Bun to cancel the running statement and waits until that
   * statement settles. A failure (57014) is the receipt. A success means the statement finished
   * before the request arrived, which may still be in flight: a short barrier statement runs next, so
   * that a late request cancels the barrier, not pglock's next statement.
   */
  async cancel(): Promise<void> {
    const running = this.#running;
    if (!running) return;
    running.cancel();
    const settled = await Promise.race([
      Promise.resolve(running).then(
        () => "completed" as const,
        () => "failed" as const,
      ),
      new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), CANCEL_TIMEOUT_MS).unref()),
    ]);
    if (settled === "timeout") {
      throw new ConnectionError(`the cancelled statement did not end within ${CANCEL_TIMEOUT_MS} ms`);
    }
    if (settled === "completed" && !this.#isClosed) {
      await Promise.resolve(this.#instance.unsafe(`SELECT pg_catalog.pg_sleep(${CANCEL_BARRIER_SECONDS})`)).catch(
        () => {},
      );
    }
  }

  onEnd(listener: (cause: Error) => void) {
    this.#endListener = listener;
  }

  onNotification(listener: (channel: string, payload: string) => void) {
    this.#notificationListener = listener;
  }

  /** A dedicated instance has no pool to go back to: giving it back ends it, gracefully. */
  async release() {
    this.#ending = true;
    await this.#instance.close();
  }

  async destroy() {
    this.#ending = true;
    const wasOpen = !this.#isClosed;
    await this.#instance.close({ timeout: 0 }).catch(() => {});
    // Wait (bounded) for the socket to close, after which the server ends the session.
    if (wasOpen) await settleWithin(CANCEL_TIMEOUT_MS, this.#closed);
  }
}
