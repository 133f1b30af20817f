/**
 * Ends a server session pglock gave up on, from a connection of its own: closing the socket is not
 * enough, since the server session may live on, holding its locks, until the server notices (a
 * statement stuck in a synchronous-replication wait, a network that drops packets; issue #14).
 */
import * as sql from "../sql/advisory.js";
import type { Driver } from "./driver.js";

/** How long ending an abandoned session on the server may take (a connection of its own, one statement). */
const END_ON_SERVER_TIMEOUT_MS = 5_000;

/** The server session to end, as pglock knows it. */
export interface AbandonedSession {
  pid: number;
  backendStart: string;
  /** The statement that stopped answering; null when a transaction pooler moved the connection. */
  lastStatement: string | null;
  applicationName: string;
}

/**
 * pg_terminate_backend of the session, from another connection; best effort, bounded. Only while that
 * session still carries this process's application_name and, for a statement that stopped answering,
 * still shows it: behind a pooler in session mode, the same server session may serve another client
 * by now, whose work must not be ended. With no statement, a transaction pooler moved this
 * connection, and the session left behind holds pglock's locks (sql.terminateBackend).
 */
export async function endOnServer(driver: Driver, session: AbandonedSession): Promise<void> {
  const connecting = driver.connect();
  let gaveUp = false;
  const timer = setTimeout(() => {
    gaveUp = true;
    void connecting.then(
      (late) => late.destroy(new Error("not needed any more")),
      () => {},
    );
  }, END_ON_SERVER_TIMEOUT_MS);
  timer.unref();
  try {
    const connection = await connecting;
    if (gaveUp) return;
    try {
      await connection.query(
        sql.terminateBackend(session.pid, session.backendStart, session.lastStatement, session.applicationName),
      );
      await connection.release();
    } catch (error) {
      await connection.destroy(error instanceof Error ? error : new Error(String(error)));
    }
  } catch {
    // The server is unreachable from here too: it ends the session when its keepalive gives up.
  } finally {
    clearTimeout(timer);
  }
}
