import type { Statement } from "../sql/advisory.js";

/**
 * What pglock needs from a database driver: one dedicated server session. Everything above this
 * interface is driver-agnostic; each driver (node-postgres today) implements it once.
 */
export interface DriverConnection {
  /** Runs one statement; resolves with its rows. Rejects with the driver's error (SQLSTATE in `code`). */
  query(statement: Statement): Promise<Record<string, unknown>[]>;
  /**
   * Asks the server to cancel whatever statement this session runs now (a protocol CancelRequest on
   * a separate socket). Resolves once the server has taken the request, so a statement sent after
   * it cannot be the one cancelled.
   */
  cancel(): Promise<void>;
  /** Registers the listener called once if the connection ends or fails on its own. */
  onEnd(listener: (cause: Error) => void): void;
  /** Registers the listener for NOTIFY messages on channels this session LISTENs to. */
  onNotification(listener: (channel: string, payload: string) => void): void;
  /** Turns TCP keepalive on, where the driver exposes its socket. */
  setKeepAlive?(initialDelayMs: number): void;
  /** Gives the connection back healthy: to the pool it came from, or to the caller who owns it. */
  release(): Promise<void>;
  /** Ends the connection for good; the server releases every lock its session held. */
  destroy(cause: Error): Promise<void>;
}

export interface Driver {
  /** Opens (or takes from a pool) one dedicated connection. */
  connect(): Promise<DriverConnection>;
  /** False when the connection belongs to the caller: then pglock changes none of its settings. */
  readonly ownsConnections: boolean;
  /**
   * How long a Locker keeps an idle session by default: short where giving it back is cheap (a pool
   * keeps the connection), longer where giving it back ends the connection.
   */
  readonly idleMs: number;
  /**
   * The size of the caller's pool that pglock's sessions are taken from, where they share it with the
   * caller's own queries (a pg.Pool's `max`); undefined where pglock opens connections of its own.
   */
  readonly sharedPoolMax?: number;
}
