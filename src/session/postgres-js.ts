/**
 * The postgres.js (`postgres` 3.x) driver. Structural types only: pglock takes the caller's `sql`
 * instance for its configuration and loads the `postgres` package at run time to open connections.
 *
 * Each pglock session is a postgres.js instance of its own with `max: 1`, made from the caller's
 * parsed options (the way postgres.js itself makes the connection behind `sql.listen`). Not
 * `sql.reserve()`, because a reserved connection whose server session ends is not told apart from
 * a live one (measured with postgres 3.4.9):
 * - the next query on it throws an uncaught TypeError from a setImmediate (socket is null): a crash;
 * - if a query of the shared pool is waiting, the closed connection reconnects for it and the
 *   reserved handle then runs on a new server session that holds none of the locks;
 * - `onclose` reports a connection id that the reserved handle does not expose.
 * With one instance per session, its `onclose` is the end of exactly that session, and pglock never
 * queries an instance after it. The instance also turns off `idle_timeout` and `max_lifetime`,
 * which would end a session that holds locks.
 */

import { ConnectionError } from "../errors.js";
import { settleWithin } from "../pending.js";
import type { Statement } from "../sql/advisory.js";
import { type BackendKey, CANCEL_TIMEOUT_MS, type CancelTarget, sendCancelRequest } from "./cancel-request.js";
import type { Driver, DriverConnection } from "./driver.js";
import { arrayLiteral } from "./parameters.js";

/** A postgres.js query: a promise of rows (with the backend key in `state`) that starts when awaited. */
type PostgresJsQuery = PromiseLike<PostgresJsRows>;

type PostgresJsRows = Record<string, unknown>[] & { state?: { pid?: number | null; secret?: number | null } };

/** The parsed options every postgres.js instance carries (`sql.options`); `shared` marks them parsed. */
interface PostgresJsOptions {
  readonly shared: object;
  readonly host: readonly string[];
  readonly port: readonly number[];
  readonly path?: string | false;
  readonly socket?: unknown;
  readonly [option: string]: unknown;
}

/** The part of a postgres.js `sql` instance pglock uses. */
export interface PostgresJsSql {
  unsafe(text: string, values?: unknown[], options?: { prepare?: boolean }): PostgresJsQuery;
  end(options?: { timeout?: number | null }): Promise<void>;
  readonly options: PostgresJsOptions;
}

type PostgresFactory = (options: object) => PostgresJsSql;

export function isPostgresJs(value: unknown): value is PostgresJsSql {
  const v = value as Partial<PostgresJsSql> & { reserve?: unknown; begin?: unknown };
  return (
    typeof value === "function" &&
    typeof v.unsafe === "function" &&
    typeof v.reserve === "function" &&
    typeof v.begin === "function" &&
    typeof v.options === "object" &&
    v.options !== null &&
    "shared" in v.options
  );
}

let factory: Promise<PostgresFactory> | undefined;

/** The `postgres` package's default export, loaded once, when the first postgres.js session opens. */
function loadFactory(): Promise<PostgresFactory> {
  factory ??= import("postgres").then(
    // ESM namespace (default export), or module.exports itself where a bundler turned this into require().
    (module: unknown) => (module as { default?: PostgresFactory }).default ?? (module as PostgresFactory),
    (error: unknown) => {
      factory = undefined;
      throw new ConnectionError("could not load the 'postgres' package, which a postgres.js sql needs", {
        cause: error,
      });
    },
  );
  return factory;
}

/** A driver whose every connection is a dedicated postgres.js instance made from `sql`'s options. */
export function postgresJsDriver(sql: PostgresJsSql): Driver {
  return {
    ownsConnections: true,
    idleMs: 10_000,
    async connect() {
      const postgres = await loadFactory();
      // postgres.js connects on the first query, which Session.open sends at once.
      return new PostgresJsConnection(sql.options, postgres);
    },
  };
}

/** Neutral transforms: a caller's `transform: postgres.camel` must not rename pglock's columns. */
const NO_TRANSFORM = {
  undefined: undefined,
  column: { from: undefined, to: undefined },
  value: { from: undefined, to: undefined },
  row: { from: undefined, to: undefined },
};

class PostgresJsConnection implements DriverConnection {
  readonly #instance: PostgresJsSql;
  readonly #options: PostgresJsOptions;
  readonly #closed: Promise<void>;
  #onClosed!: () => void;
  #isClosed = false;
  #ending = false;
  #endListener: ((cause: Error) => void) | undefined;
  #notificationListener: ((channel: string, payload: string) => void) | undefined;
  #backend: BackendKey | undefined;

  constructor(options: PostgresJsOptions, postgres: PostgresFactory) {
    this.#options = options;
    this.#closed = new Promise((resolve) => {
      this.#onClosed = resolve;
    });
    this.#instance = postgres({
      ...options,
      max: 1,
      idle_timeout: null,
      max_lifetime: null,
      fetch_types: false,
      no_subscribe: true,
      transform: NO_TRANSFORM,
      // Its own: ParameterStatus messages (application_name) must not write into the caller's instance.
      parameters: {},
      onparameter: undefined,
      shared: { retries: 0, typeArrayMap: {} },
      onclose: () => this.#closedByServer(),
      onnotify: (channel: string, payload: string) => this.#notificationListener?.(channel, payload),
    });
  }

  #closedByServer() {
    this.#isClosed = true;
    this.#onClosed();
    if (!this.#ending) this.#endListener?.(new Error("the server closed the connection"));
  }

  query(statement: Statement): Promise<Record<string, unknown>[]> {
    if (this.#isClosed) return Promise.reject(new ConnectionError("the connection to PostgreSQL is closed"));
    // Unnamed statements (prepare: false), as with pg: nothing to go stale behind a pooler.
    const query = this.#instance.unsafe(statement.text, statement.values.map(arrayLiteral), { prepare: false });
    return Promise.resolve(query).then((rows) => {
      this.#learnBackendKey(rows);
      // postgres.js numbers rows with a per-connection counter that only CommandComplete resets: when
      // a statement sent a row and then failed (a wait granted, then cancelled: 57014 after its
      // DataRow), the next result starts with that many holes ([ <empty>, row ]), seen with 3.4.9.
      return rows.filter((row) => row != null);
    });
  }

  /** Every result carries the session's backend key, which cancel requests need. */
  #learnBackendKey(rows: PostgresJsRows) {
    if (this.#backend) return;
    const { pid, secret } = rows.state ?? {};
    if (typeof pid === "number" && typeof secret === "number") this.#backend = { processId: pid, secretKey: secret };
  }

  cancel(): Promise<void> {
    if (!this.#backend) return Promise.reject(new ConnectionError("cannot cancel: the session has no backend key"));
    const key = this.#backend;
    // With several hosts the one connected is not exposed; a request to another server names a
    // backend key it does not have, which the server ignores.
    return Promise.allSettled(cancelTargets(this.#options).map((target) => sendCancelRequest(target, key))).then(
      (results) => {
        const failed = results.find((result) => result.status === "rejected");
        if (failed && results.every((result) => result.status === "rejected")) throw failed.reason;
      },
    );
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
    await this.#instance.end();
  }

  async destroy() {
    this.#ending = true;
    const connected = this.#backend !== undefined && !this.#isClosed;
    await this.#instance.end({ timeout: 0 });
    // Terminated: wait (bounded) for the socket to close, after which the server has ended the session.
    if (connected) await settleWithin(CANCEL_TIMEOUT_MS, this.#closed);
  }
}

/** Where cancel requests go: the Unix socket, or every configured host. */
function cancelTargets(options: PostgresJsOptions): CancelTarget[] {
  if (typeof options.path === "string" && options.path) return [{ path: options.path }];
  return options.host.map((host, i) => ({ host, port: options.port[i] ?? options.port[0] ?? 5432 }));
}
