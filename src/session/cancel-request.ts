/**
 * The protocol's CancelRequest, sent on a connection of its own
 * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-CANCELING-REQUESTS).
 * Both drivers use it: pg's Client#cancel reads deprecated internals, and postgres.js's
 * query.cancel() drops the promise of its cancel connection, so a cancel that fails to connect
 * becomes an unhandled rejection (a process crash).
 */
import { connect as netConnect } from "node:net";
import { ConnectionError } from "../errors.js";

const CANCEL_REQUEST_CODE = 80877102;
export const CANCEL_TIMEOUT_MS = 5_000;

/** Where the server listens: a TCP host and port, or a Unix socket path (`/dir/.s.PGSQL.5432`). */
export type CancelTarget = { readonly host: string; readonly port: number } | { readonly path: string };

/** The backend key data the server sent at startup (BackendKeyData). */
export interface BackendKey {
  readonly processId: number;
  readonly secretKey: number;
}

/**
 * Sends the request and resolves once the server has closed the socket, which it does after
 * signalling the backend: a statement sent after that cannot be the one cancelled.
 */
export function sendCancelRequest(target: CancelTarget, key: BackendKey): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = "path" in target ? netConnect(target.path) : netConnect(target.port, target.host);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ConnectionError(`the cancel request got no answer within ${CANCEL_TIMEOUT_MS} ms`));
    }, CANCEL_TIMEOUT_MS);
    socket.on("connect", () => {
      const message = Buffer.alloc(16);
      message.writeInt32BE(16, 0);
      message.writeInt32BE(CANCEL_REQUEST_CODE, 4);
      // The secret is an unsigned 32-bit value in postgres.js and signed in pg: both write the same 4 bytes.
      message.writeUInt32BE(key.processId >>> 0, 8);
      message.writeUInt32BE(key.secretKey >>> 0, 12);
      // Write, then wait for the peer to close: half-closing at once crashes PgBouncer 1.18
      // ("bad client state" while it still forwards the request), and the close is our receipt.
      socket.write(message);
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(new ConnectionError("the cancel request failed", { cause: error }));
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.on("end", () => socket.end());
    socket.resume();
  });
}
