/**
 * Wake-ups over LISTEN/NOTIFY: the channel every pglock process listens on, and the topic in the
 * payload. https://www.postgresql.org/docs/current/sql-notify.html
 */
import type { Statement } from "./advisory.js";

export const NOTIFY_CHANNEL = "pglock_wakeup";

export function notify(topic: string): Statement {
  return { text: "SELECT pg_catalog.pg_notify($1, $2)", values: [NOTIFY_CHANNEL, topic] };
}

export function listen(): Statement {
  return { text: `LISTEN ${NOTIFY_CHANNEL}`, values: [] };
}

export function unlisten(): Statement {
  return { text: `UNLISTEN ${NOTIFY_CHANNEL}`, values: [] };
}

/**
 * The channel on which `pglock release` asks a Locker to let go of a key: every session a Locker opens
 * listens on it, and the payload names the session (its backend pid) and the key (revoke()).
 */
export const REVOKE_CHANNEL = "pglock_revoke";

export function listenForRevocations(): Statement {
  return { text: `LISTEN ${REVOKE_CHANNEL}`, values: [] };
}

export function unlistenRevocations(): Statement {
  return { text: `UNLISTEN ${REVOKE_CHANNEL}`, values: [] };
}

/** Asks the session `pid` to let go of the key whose identity is `identity`. */
export function revoke(pid: number, identity: string): Statement {
  return { text: "SELECT pg_catalog.pg_notify($1, $2)", values: [REVOKE_CHANNEL, `${pid} ${identity}`] };
}

/** The session and key of a revocation's payload, or undefined when it is not one. */
export function parseRevocation(payload: string): { pid: number; identity: string } | undefined {
  const match = /^(\d+) (-?\d+(?:,-?\d+)?)$/.exec(payload);
  return match ? { pid: Number(match[1]), identity: match[2] as string } : undefined;
}
