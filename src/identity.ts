/**
 * Whose a server session is: pglock writes the host, the process id and the Locker or Lock into the
 * application_name of every session it opens, so that pg_stat_activity (and `pglock ls`, and the
 * deadlock check between Lockers) can tell who holds and who waits.
 *
 * The format is `<name> <host>:<process id>@<nonce> <locker|lock>-<n>`, at most 63 bytes:
 * application_name is cut at NAMEDATALEN - 1 bytes, and PostgreSQL replaces any character outside
 * printable ASCII with `?` (https://www.postgresql.org/docs/current/runtime-config-logging.html#GUC-APPLICATION-NAME).
 * The user's name comes first and is shortened first; the host is shortened to 24 characters.
 *
 * The nonce is drawn once per process: in containers every process may be pid 1, on host names that
 * share their first 24 characters (`billing-worker-deployment-7d9f8b6c4-abcde` and `-fghij`), and
 * host and pid alone then name two processes as one (issue #23).
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

/** What opened a pglock session: a Locker, or a seed Lock (`newLock`). */
export type OwnerKind = "locker" | "lock";

/** Who a pglock session belongs to, as read back from its application_name. */
export interface SessionOwner {
  /** The name the application gave (`applicationName`, default `pglock`), possibly shortened. */
  application: string;
  /** The host name of the machine (at most 24 characters). */
  host: string;
  /** The process id on that host. */
  processId: number;
  /** A Locker, or a seed Lock (`newLock`). */
  kind: OwnerKind;
  /** The Locker's or Lock's number in its process, from 1 in the order they were made. */
  number: number;
  /** Random, drawn once per process (8 hex digits): tells apart processes with the same host and pid. */
  nonce: string;
}

const MAX_BYTES = 63;
const MAX_HOST = 24;
const counters: Record<OwnerKind, number> = { locker: 0, lock: 0 };
let thisHost: string | undefined;
/** This process's nonce. */
export const processNonce = randomBytes(4).toString("hex");

function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?");
}

function localHost(): string {
  thisHost ??= printable(hostname()).replace(/\s/g, "-").slice(0, MAX_HOST) || "unknown-host";
  return thisHost;
}

/** The owner a new Locker or Lock of this process is. */
export function newOwner(kind: OwnerKind, application: string): SessionOwner {
  counters[kind]++;
  return {
    application,
    host: localHost(),
    processId: process.pid,
    kind,
    number: counters[kind],
    nonce: processNonce,
  };
}

/** The application_name that says whose a session is. */
export function applicationNameOf(owner: SessionOwner): string {
  const suffix = ` ${ownerLabel(owner)}`;
  const room = Math.max(0, MAX_BYTES - suffix.length);
  return printable(owner.application).slice(0, room) + suffix;
}

const FORMAT = /^(.*) (\S+):(\d+)@([0-9a-f]{8}) (locker|lock)-(\d+)$/;

/** The owner a session's application_name names, or undefined when it is not a pglock session's. */
export function ownerOf(applicationName: string | null | undefined): SessionOwner | undefined {
  const match = applicationName ? FORMAT.exec(applicationName) : null;
  if (!match) return undefined;
  return {
    application: match[1] as string,
    host: match[2] as string,
    processId: Number(match[3]),
    nonce: match[4] as string,
    kind: match[5] as OwnerKind,
    number: Number(match[6]),
  };
}

/** How an owner reads in a table or a message: `web-1:4242@3f9a1c2e locker-2`. */
export function ownerLabel(owner: SessionOwner): string {
  return `${owner.host}:${owner.processId}@${owner.nonce} ${owner.kind}-${owner.number}`;
}

/** Whether two sessions belong to one process (same host, pid and nonce). */
export function sameProcess(a: SessionOwner, b: SessionOwner): boolean {
  return a.nonce === b.nonce && a.processId === b.processId && a.host === b.host;
}

let leaseLockers = 0;

/**
 * The prefix of the holder ids of a new lease Locker: `<name> <host>:<process id> leases-<n> <nonce>`.
 * The random nonce keeps ids unique across restarts: in a container every process may be pid 1 on
 * the same host name, and a restarted process must not take its predecessor's lease for its own.
 */
export function leaseHolderPrefix(application: string): string {
  leaseLockers++;
  const nonce = randomBytes(4).toString("hex");
  return `${printable(application)} ${localHost()}:${process.pid} leases-${leaseLockers} ${nonce}`;
}

/** This process as `host:pid@nonce`: an election's default owner. */
export function processLabel(): string {
  return `${localHost()}:${process.pid}@${processNonce}`;
}
