/**
 * How long a client that vanished (its machine gone, its packets silently dropped) can keep its locks,
 * and the order in which it and the server learn of it (issue #14).
 *
 * - The holder is told by pglock's probe: an idle session is asked every `keepaliveMs`, and a probe or
 *   statement unanswered for `probeTimeoutMs` ends it. After a cut, the holder is told at most
 *   keepaliveMs + probeTimeoutMs later.
 * - The server ends the session, and frees its locks, when TCP keepalive (or, with data in flight,
 *   tcp_user_timeout) gives up: `serverKeepaliveMs` after the last packet it received. That packet can
 *   be a probe sent up to keepaliveMs before the cut, so the server frees the lock at the earliest
 *   serverKeepaliveMs - keepaliveMs after the cut, and at the latest serverKeepaliveMs after it.
 * - The holder is told first, by `MARGIN_MS` at least, when
 *   serverKeepaliveMs >= 2 × keepaliveMs + probeTimeoutMs + MARGIN_MS; other combinations are refused.
 *
 * PostgreSQL lets any role set these per session:
 * https://www.postgresql.org/docs/current/runtime-config-connection.html#RUNTIME-CONFIG-TCP-SETTINGS
 * Over a Unix socket they are accepted and do nothing.
 */
import { InvalidArgumentError } from "./errors.js";
import { checkMs } from "./validate.js";

/** How a session that stopped answering is found and ended: on the client, and on the server. See "the liveness bound" in docs/deploying.md. */
export interface LivenessOptions {
  /** How often an idle session is probed, and the TCP keepalive delay, in ms (default 5000; 0: no probes). */
  keepaliveMs?: number;
  /** A probe or short statement unanswered this long (ms) ends the session (default 3000; 0: no deadline). */
  probeTimeoutMs?: number;
  /**
   * How long the server waits for a silent client (ms, whole seconds) before it ends the session and
   * frees its locks (default 18000, or more if keepaliveMs and probeTimeoutMs need it; 0 leaves the
   * server's settings alone). At least 2 × keepaliveMs + probeTimeoutMs + 2000, so that a holder is
   * always told before its lock is freed.
   */
  serverKeepaliveMs?: number;
}

export interface Liveness {
  readonly keepaliveMs: number;
  readonly probeTimeoutMs: number;
  /** `[name, value]` settings for the sessions pglock opens. */
  readonly serverSettings: readonly (readonly [string, string])[];
}

/** The option names of LivenessOptions, for the unknown-option check. */
export const LIVENESS_OPTIONS = ["keepaliveMs", "probeTimeoutMs", "serverKeepaliveMs"] as const;

export const LIVENESS_DEFAULTS = { keepaliveMs: 5_000, probeTimeoutMs: 3_000, serverKeepaliveMs: 18_000 } as const;
/** How much earlier than the server the holder must learn of a cut. */
export const MARGIN_MS = 2_000;
/** Unanswered keepalive probes before the server gives up. */
const PROBES = 4;
/** While a statement runs (a wait), the server checks this often whether the client is gone (PostgreSQL 14+). */
const CONNECTION_CHECK_MS = 2_000;

export function liveness(options: LivenessOptions, where: string): Liveness {
  const keepaliveMs = checkMs(options.keepaliveMs, where, "keepaliveMs") ?? LIVENESS_DEFAULTS.keepaliveMs;
  const probeTimeoutMs = checkMs(options.probeTimeoutMs, where, "probeTimeoutMs") ?? LIVENESS_DEFAULTS.probeTimeoutMs;
  const needed = keepaliveMs > 0 && probeTimeoutMs > 0 ? 2 * keepaliveMs + probeTimeoutMs + MARGIN_MS : 0;
  // Unset: the default, or the least safe bound for the client's own timings, whichever is longer.
  const serverMs =
    checkMs(options.serverKeepaliveMs, where, "serverKeepaliveMs") ??
    Math.max(LIVENESS_DEFAULTS.serverKeepaliveMs, Math.ceil(needed / 1000) * 1000);
  if (serverMs === 0) return { keepaliveMs, probeTimeoutMs, serverSettings: [] };
  const seconds = Math.floor(serverMs / 1000);
  if (seconds < 5) {
    throw new InvalidArgumentError(
      `${where}: options.serverKeepaliveMs must be 0 (off) or at least 5000, got ${serverMs}`,
    );
  }
  if (seconds * 1000 < needed) {
    throw new InvalidArgumentError(
      `${where}: options.serverKeepaliveMs (${serverMs}) must be at least 2 × keepaliveMs + probeTimeoutMs + ${MARGIN_MS} ` +
        `= ${needed}: the server can free a vanished client's locks serverKeepaliveMs - keepaliveMs after the cut, ` +
        "and the holder is told up to keepaliveMs + probeTimeoutMs after it; with less, another client could be " +
        "granted the lock before its holder knows it lost it",
    );
  }
  // idle + PROBES × interval = seconds: the server's bound, also the tcp_user_timeout for data in flight.
  const interval = Math.max(1, Math.round(seconds / 9));
  const idle = seconds - PROBES * interval;
  return {
    keepaliveMs,
    probeTimeoutMs,
    serverSettings: [
      ["tcp_keepalives_idle", String(idle)],
      ["tcp_keepalives_interval", String(interval)],
      ["tcp_keepalives_count", String(PROBES)],
      ["tcp_user_timeout", String(seconds * 1000)],
      ["client_connection_check_interval", String(CONNECTION_CHECK_MS)],
    ],
  };
}
