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
