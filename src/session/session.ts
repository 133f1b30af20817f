/**
 * A Session is one dedicated PostgreSQL session: statements run one at a time in FIFO order (pg 8
 * warns, and pg 9 refuses, when a client is handed a query while another runs), a wait can be
 * cancelled on the server, and the end of the connection is an event (`lostSignal`), never an
 * unhandled error.
 */
import { ConnectionError, InvalidArgumentError, ReadOnlyServerError } from "../errors.js";
import { LIVENESS_DEFAULTS } from "../liveness.js";
import { endsSession } from "../server-errors.js";
import type { BatchOp, Statement } from "../sql/advisory.js";
import * as sql from "../sql/advisory.js";
import type { Driver, DriverConnection } from "./driver.js";
import { endOnServer } from "./end-on-server.js";

/** How a statement ended: not sent (aborted while queued), answered, or failed. */
export type Outcome =
  | { readonly status: "skipped"; readonly reason: unknown }
  | { readonly status: "done"; readonly rows: Record<string, unknown>[] }
  | { readonly status: "failed"; readonly error: unknown };

export interface RunOptions {
  /** Aborting it while the statement is queued drops the statement, unsent. */
  signal?: AbortSignal | undefined;
  /** Aborting while the statement runs sends the server a cancel request (for waits). */
  cancelOnAbort?: boolean | (() => boolean);
  /** Run before everything queued: for statements that restore certainty after a doubt. */
  first?: boolean;
  /** A statement that may block on the server; the liveness probe leaves it alone. */
  waits?: boolean;
  /** A try-lock or release that may share one round trip with others queued behind it. */
  batch?: BatchOp;
}

/** Most ops one batched statement carries. */
const MAX_BATCH = 256;

export interface SessionOptions {
  /** Set as application_name while pglock uses a connection it took from a pool, restored after. */
  applicationName?: string | undefined;
  /** Probe an idle session this often (ms); 0 turns the probe off. */
  keepaliveMs?: number;
  /** A probe or a non-waiting statement unanswered this long (ms) means the session is lost; 0: no deadline. */
  probeTimeoutMs?: number;
  /** Server settings for a connection pglock owns (liveness.ts: TCP keepalive), restored at release. */
  serverSettings?: readonly (readonly [string, string])[];
}

/**
 * A timer that runs this much later than it was due means the event loop stalled (GC, synchronous
 * work); less where the probe's own timeout is shorter.
 */
const STALL_MS = 1_000;

/** A wait slice lasts at least this much longer than the server's deadlock_timeout, and at most this + the jitter. */
const WAIT_SLICE_MARGIN_MS = 500;
const WAIT_SLICE_JITTER_MS = 1_000;

interface Job {
  statement: Statement;
  options: RunOptions;
  resolve: (outcome: Outcome) => void;
  onAbort?: () => void;
  startedAt?: number;
  settled?: boolean;
}

export class Session {
  readonly #connection: DriverConnection;
  readonly #queue: Job[] = [];
  readonly #lost = new AbortController();
  #running: Job | undefined;
  #cancelling: Promise<void> | undefined;
  /** Statements wait for the others of this event-loop turn (see #gatherThenPump). */
  #gathering = false;
  /** Settings pglock changed on a connection it owns, with the values to put back at release. */
  #previousSettings: [string, string][] = [];
  /** What release() runs first: the UNLISTENs of listen(), so a pooled connection goes back as it came. */
  readonly #onRelease: Statement[] = [];
  #heartbeat: NodeJS.Timeout | undefined;
  #probeTimeoutMs = 0;
  #keepaliveMs = 0;
  /** When the heartbeat last ran: how late the next one runs is the event loop's own lag. */
  #lastBeatAt = 0;
  /** When the last stall of the event loop that pglock saw ended: time before it is not the server's. */
  #stallEndedAt = Number.NEGATIVE_INFINITY;
  #closed = false;
  /** The server session this connection reached at open: guarded statements act only there. */
  readonly #backendPid: number;
  /** When that server session started: with the pid, it names the session even after the pid is reused. */
  readonly #backendStart: string | undefined;
  readonly #driver: Driver;
  #endingOnServer = false;
  /** The application_name pglock set on this server session (connections it owns): who it is ours by. */
  #applicationName: string | undefined;
  /** The server's deadlock_timeout, on connections pglock owns (see waitSliceMs). */
  #deadlockTimeoutMs: number | undefined;

  private constructor(connection: DriverConnection, driver: Driver, backendPid: number, backendStart?: string) {
    this.#connection = connection;
    this.#driver = driver;
    this.#backendPid = backendPid;
    this.#backendStart = backendStart;
  }

  /**
   * Connects, refuses a standby, and, if pglock owns the connection, sets application_name and
   * neutralises the server's timeouts (sql.NEUTRAL_TIMEOUTS) until release.
   */
  static async open(driver: Driver, options: SessionOptions = {}): Promise<Session> {
    let connection: DriverConnection;
    try {
      connection = await driver.connect();
    } catch (error) {
      // A usage error (a pg.Client that serves another session already) stays what it is.
      if (error instanceof InvalidArgumentError) throw error;
      throw asConnectionError(error, "could not connect to PostgreSQL");
    }
    const settings: [string, string][] = [];
    if (driver.ownsConnections) {
      if (options.applicationName !== undefined) settings.push(["application_name", options.applicationName]);
      for (const [name, value] of sql.NEUTRAL_TIMEOUTS) settings.push([name, value]);
      for (const [name, value] of options.serverSettings ?? []) settings.push([name, value]);
    }
    let row: Record<string, unknown> | undefined;
    try {
      const statement = sql.describeSession(settings);
      [row] = await connection.query(statement);
    } catch (error) {
      await connection.destroy(error instanceof Error ? error : new Error(String(error)));
      // postgres.js connects on the first statement: a failure without a SQLSTATE is a failed connect.
      throw asConnectionError(
        error,
        endsSession(error) ? "could not connect to PostgreSQL" : "could not set up the PostgreSQL session",
      );
    }
    if (row?.in_recovery === true) {
      await connection.release();
      throw new ReadOnlyServerError();
    }
    const backendStart = typeof row?.backend_start === "string" ? row.backend_start : undefined;
    const session = new Session(connection, driver, Number(row?.backend_pid), backendStart);
    if (driver.ownsConnections) session.#applicationName = options.applicationName;
    const deadlockTimeoutMs = Number(row?.deadlock_timeout_ms);
    if (driver.ownsConnections && Number.isFinite(deadlockTimeoutMs) && deadlockTimeoutMs >= 0) {
      session.#deadlockTimeoutMs = deadlockTimeoutMs;
    }
    settings.forEach(([name], i) => {
      const previous = row?.[`previous_${i}`];
      if (previous !== null && previous !== undefined) session.#previousSettings.push([name, String(previous)]);
    });
    connection.onEnd((cause) => session.#markLost(new ConnectionError(describeEnd(cause), { cause })));
    // A caller's own pg.Client is not probed: the probe would interleave with the caller's queries.
    if (options.keepaliveMs && options.keepaliveMs > 0 && driver.ownsConnections) {
      connection.setKeepAlive?.(options.keepaliveMs);
      session.#startHeartbeat(options.keepaliveMs, options.probeTimeoutMs ?? LIVENESS_DEFAULTS.probeTimeoutMs);
    }
    return session;
  }

  /** Aborted, with a {@link ConnectionError} as reason, when the session ends for any reason but release(). */
  get lostSignal(): AbortSignal {
    return this.#lost.signal;
  }

  get isLost(): boolean {
    return this.#lost.signal.aborted;
  }

  /**
   * How long the next wait statement may last before it is sent again (sql.waitLock's slices), on
   * connections pglock owns; undefined (unbounded) on a caller's own connection, whose settings are
   * its owner's. Longer than the server's deadlock_timeout, so that PostgreSQL's own deadlock check
   * still runs within every slice: deadlock_timeout + 0.5 s, plus up to 1 s drawn at random, so that
   * many waits that began together do not all come back to the server at the same moment.
   */
  get waitSliceMs(): number | undefined {
    if (this.#deadlockTimeoutMs === undefined) return undefined;
    return this.#deadlockTimeoutMs + WAIT_SLICE_MARGIN_MS + Math.floor(Math.random() * WAIT_SLICE_JITTER_MS);
  }

  /** The server process of this session (pg_backend_pid()). */
  get backendPid(): number {
    return this.#backendPid;
  }

  /** NOTIFY messages on channels this session LISTENs to. */
  onNotification(listener: (channel: string, payload: string) => void): void {
    this.#connection.onNotification(listener);
  }

  /** Statements queued or running. */
  get pending(): number {
    return this.#queue.length + (this.#running ? 1 : 0);
  }

  /** Queues a statement. Never rejects: the outcome says whether it was sent, answered or failed. */
  run(statement: Statement, options: RunOptions = {}): Promise<Outcome> {
    const { signal } = options;
    if (signal?.aborted) return Promise.resolve({ status: "skipped", reason: signal.reason });
    if (this.#lost.signal.aborted || this.#closed) {
      return Promise.resolve({
        status: "failed",
        error: this.#lost.signal.reason ?? new ConnectionError("the session is closed"),
      });
    }
    return new Promise<Outcome>((resolve) => {
      const job: Job = { statement, options, resolve };
      if (options.first) this.#queue.unshift(job);
      else this.#queue.push(job);
      this.#pump();
      // Listen for the abort only where it changes something: a job still queued, or a wait to
      // cancel. An uncontended statement starts at once and costs no EventTarget work.
      const started = job.startedAt !== undefined;
      if (signal && !job.settled && (!started || options.cancelOnAbort)) {
        job.onAbort = () => this.#onAbort(job);
        signal.addEventListener("abort", job.onAbort, { once: true });
      }
    });
  }

  /** Runs a statement and returns its rows; throws what failed (a skipped statement throws the abort reason). */
  async query(statement: Statement, options: RunOptions = {}): Promise<Record<string, unknown>[]> {
    const outcome = await this.run(statement, options);
    if (outcome.status === "done") return outcome.rows;
    throw outcome.status === "skipped" ? outcome.reason : outcome.error;
  }

  /**
   * Cancels the running statement if it is a wait that may be cancelled (the deadlock check's victim,
   * deadlock.ts): it then fails with 57014, as after its signal's abort.
   */
  cancelWait(): void {
    const job = this.#running;
    if (job?.options.waits) this.#onAbort(job);
  }

  #onAbort(job: Job) {
    const queued = this.#queue.indexOf(job);
    if (queued >= 0) {
      this.#queue.splice(queued, 1);
      this.#settle(job, { status: "skipped", reason: job.options.signal?.reason });
    } else if (job === this.#running && shouldCancel(job.options.cancelOnAbort) && !this.#cancelling) {
      // Nothing else may run until the server has taken the cancel request, or it could cancel that instead.
      this.#cancelling = this.#connection
        .cancel()
        .catch((error) => this.#abandon(asConnectionError(error, "could not cancel a wait"), job.statement))
        .finally(() => {
          this.#cancelling = undefined;
          this.#pump();
        });
    }
  }

  #settle(job: Job, outcome: Outcome) {
    job.settled = true;
    if (job.onAbort) job.options.signal?.removeEventListener("abort", job.onAbort);
    job.resolve(outcome);
  }

  /**
   * After a batch, the callers it settled send their next statements within the same turn of the
   * event loop (a release after a try, a try after a release). Pumping at once would send the first
   * of them alone and batch the rest behind it; waiting until the turn's microtasks are done sends
   * them all in one statement: half the statements and writes under load (issue #15). A statement
   * that runs alone, as every uncontended one does, is sent at once as before.
   */
  #gatherThenPump() {
    this.#gathering = true;
    setImmediate(() => {
      this.#gathering = false;
      this.#pump();
    });
  }

  #pump() {
    if (this.#running || this.#cancelling || this.#gathering) return;
    const job = this.#queue.shift();
    if (!job) return;
    if (this.#lost.signal.aborted) {
      this.#settle(job, { status: "failed", error: this.#lost.signal.reason });
      this.#pump();
      return;
    }
    if (job.options.batch && this.#queue[0]?.options.batch) {
      this.#runBatch(job);
      return;
    }
    this.#running = job;
    job.startedAt = performance.now();
    this.#send(job.statement).then(
      (rows) => this.#finish(job, { status: "done", rows }),
      (error) => {
        if (endsSession(error) && !this.#lost.signal.aborted) {
          void this.discard(new ConnectionError(describeEnd(error), { cause: error }));
        }
        this.#finish(job, { status: "failed", error: this.#lost.signal.aborted ? this.#lost.signal.reason : error });
      },
    );
  }

  /** Sends the head job and the batchable jobs right behind it as one statement. */
  #runBatch(head: Job) {
    const jobs = [head];
    while (jobs.length < MAX_BATCH && this.#queue[0]?.options.batch) jobs.push(this.#queue.shift() as Job);
    const carrier: Job = {
      statement: sql.batch(jobs.map((job) => job.options.batch as BatchOp)),
      options: {},
      resolve: () => {},
      startedAt: performance.now(),
    };
    this.#running = carrier;
    this.#send(carrier.statement).then(
      (rows) => {
        this.#running = undefined;
        for (const [i, job] of jobs.entries()) this.#settle(job, { status: "done", rows: [{ ok: rows[i]?.ok }] });
        this.#gatherThenPump();
      },
      async (error) => {
        // Session-level advisory locks ignore statement failure: the ops before the failing one took
        // or released their locks anyway. Unless the session itself is gone, pg_locks says which did,
        // so a failure (a full lock table: 53200) costs only the ops that did not take effect, not
        // every lock the session holds (issue #18).
        if (!endsSession(error) && !this.#lost.signal.aborted && (await this.#settleFromLocks(jobs, error))) {
          this.#running = undefined;
          this.#pump();
          return;
        }
        this.#running = undefined;
        if (!this.#lost.signal.aborted) {
          const message = endsSession(error) ? describeEnd(error) : "a batched lock statement failed";
          void this.discard(new ConnectionError(message, { cause: error }));
        }
        for (const job of jobs) this.#settle(job, { status: "failed", error });
        this.#pump();
      },
    );
  }

  /**
   * Settles a failed batch's jobs from what this session holds now: a try-lock whose key is held
   * took it; one whose key is not failed with `error` (whether it ran or was busy is unknown). A
   * release whose key is gone took effect; one whose key is still held is run again on its own
   * (a release needs no room in the lock table). False when certainty could not be restored.
   */
  async #settleFromLocks(jobs: Job[], error: unknown): Promise<boolean> {
    const ops = jobs.map((job) => job.options.batch as BatchOp);
    let held: Record<string, unknown>[];
    try {
      held = await this.#send(sql.holdsLocks(ops));
    } catch {
      return false;
    }
    if (held.length !== jobs.length) return false;
    const outcomes: Outcome[] = [];
    for (const [i, op] of ops.entries()) {
      const granted = held[i]?.granted === true;
      if (op.op === "try") {
        outcomes.push(granted ? { status: "done", rows: [{ ok: true }] } : { status: "failed", error });
        continue;
      }
      if (!granted) {
        outcomes.push({ status: "done", rows: [{ ok: true }] });
        continue;
      }
      try {
        const rows = await this.#send(sql.unlock(op.key, op.mode));
        outcomes.push({ status: "done", rows: [{ ok: rows[0]?.ok }] });
      } catch {
        return false;
      }
    }
    for (const [i, job] of jobs.entries()) this.#settle(job, outcomes[i] as Outcome);
    return true;
  }

  /**
   * Sends a statement; a guarded one gets the expected backend pid as its last parameter, and its
   * answer must come from that backend (sql/advisory.ts, onOwnBackend). An answer from another one means a
   * pooler moved this connection to another server session: the statement did nothing there, and
   * the session is discarded, since the locks it holds are on the first server session.
   */
  async #send(statement: Statement): Promise<Record<string, unknown>[]> {
    if (!statement.guarded) return this.#connection.query(statement);
    const rows = await this.#connection.query({
      text: statement.text,
      values: [...statement.values, this.#backendPid],
      prepare: statement.prepare,
    });
    // Every guarded statement returns rows on its own backend; no row means it acted nowhere.
    const answeredBy = rows[0]?.backend_pid;
    if (answeredBy === undefined || Number(answeredBy) !== this.#backendPid) {
      const error = new SessionChangedError(
        this.#backendPid,
        answeredBy === undefined ? undefined : Number(answeredBy),
      );
      // Marks the session lost at once. The server session left behind keeps every lock taken on it
      // for as long as the pooler keeps that server connection (PgBouncer: server_lifetime, an hour
      // by default): it is ended from a connection of its own, even if another client's transaction
      // runs on it now, since a lock held by nobody would block its key for everyone (issue #26).
      void this.#abandon(error, null);
      throw error;
    }
    return rows;
  }

  #finish(job: Job, outcome: Outcome) {
    this.#running = undefined;
    this.#settle(job, outcome);
    this.#pump();
  }

  #startHeartbeat(intervalMs: number, probeTimeoutMs: number) {
    this.#probeTimeoutMs = probeTimeoutMs;
    this.#keepaliveMs = intervalMs;
    this.#lastBeatAt = performance.now();
    this.#heartbeat = setInterval(() => this.#probe(), intervalMs);
    this.#heartbeat.unref();
  }

  /**
   * Notes a stall of this process's event loop (GC, synchronous work): a timer that runs much later
   * than it was due. A stalled client is not a dead network: time spent stalled does not count
   * against the server (issue #26).
   */
  #noteLag(dueAt: number): void {
    const now = performance.now();
    const threshold = Math.min(STALL_MS, Math.max(100, this.#probeTimeoutMs / 2));
    if (now - dueAt > threshold) this.#stallEndedAt = now;
  }

  /**
   * Runs `decide` once the socket has been read. After a stall, timers run before pending I/O is
   * read, so an answer already in the socket would look missing; setImmediate runs after the event
   * loop's poll phase. https://nodejs.org/en/learn/asynchronous-work/event-loop-timers-and-nexttick
   */
  #afterPendingIo(decide: () => void): void {
    setImmediate(decide);
  }

  /**
   * A silent network partition sends nothing, so nothing fails until someone asks: an idle session
   * is asked `SELECT 1`, and a busy one is judged by how long its current statement has run.
   * Waits are left alone (they hold nothing else, by the Locker's rules).
   */
  #probe() {
    this.#noteLag(this.#lastBeatAt + this.#keepaliveMs);
    this.#lastBeatAt = performance.now();
    // probeTimeoutMs 0: no deadline (the ms options' rule: 0 turns the limit off). Probes still go out,
    // so a connection the kernel knows is broken is noticed; a silent one waits for TCP keepalive.
    const deadline = this.#probeTimeoutMs > 0;
    const running = this.#running;
    if (running) {
      const overdue = () =>
        this.#running === running &&
        !this.isLost &&
        performance.now() - Math.max(running.startedAt ?? 0, this.#stallEndedAt) > this.#probeTimeoutMs;
      if (deadline && !running.options.waits && overdue()) {
        this.#afterPendingIo(() => {
          if (!overdue()) return;
          void this.#abandon(
            new ConnectionError(`PostgreSQL did not answer within ${this.#probeTimeoutMs} ms`),
            running.statement,
          );
        });
      }
      return;
    }
    if (this.#queue.length > 0) return;
    if (!deadline) {
      void this.run(sql.ping());
      return;
    }
    const probe = new AbortController();
    const probeStatement = sql.ping();
    let answered = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number) => {
      const dueAt = performance.now() + ms;
      timer = setTimeout(() => {
        this.#noteLag(dueAt);
        if (answered || this.isLost) return;
        // The loop stalled while the probe was out: give the server its whole time again.
        if (this.#stallEndedAt >= dueAt) return arm(this.#probeTimeoutMs);
        this.#afterPendingIo(() => {
          if (answered || this.isLost) return;
          probe.abort();
          void this.#abandon(
            new ConnectionError(`PostgreSQL did not answer a liveness probe within ${this.#probeTimeoutMs} ms`),
            probeStatement,
          );
        });
      }, ms);
      timer.unref();
    };
    arm(this.#probeTimeoutMs);
    void this.run(probeStatement, { signal: probe.signal }).then(() => {
      answered = true;
      clearTimeout(timer);
    });
  }

  #markLost(error: ConnectionError) {
    if (this.#lost.signal.aborted) return;
    clearInterval(this.#heartbeat);
    this.#lost.abort(error);
    for (const job of this.#queue.splice(0)) this.#settle(job, { status: "failed", error });
  }

  /**
   * Runs `listen` (a LISTEN) and `unlisten` before the connection is given back. Only on connections
   * pglock opened: a caller's own client keeps its state.
   */
  async listen(listen: Statement, unlisten: Statement): Promise<void> {
    if (!this.#driver.ownsConnections) return;
    this.#onRelease.push(unlisten);
    await this.query(listen);
  }

  /** Gives the connection back (to its pool or its owner) with the settings pglock changed restored. */
  async release(): Promise<void> {
    if (this.#closed) return;
    for (const statement of this.#onRelease.splice(0)) {
      if (this.isLost) break;
      const outcome = await this.run(statement);
      if (outcome.status !== "done") return this.discard(asConnectionError(outcome, "could not reset the session"));
    }
    if (this.#previousSettings.length > 0 && !this.isLost) {
      const outcome = await this.run(sql.restoreSettings(this.#previousSettings));
      if (outcome.status !== "done") return this.discard(asConnectionError(outcome, "could not reset the session"));
    }
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeat);
    if (this.isLost) await this.#connection.destroy(this.#lost.signal.reason);
    else await this.#connection.release();
  }

  /** Ends the connection: PostgreSQL releases every lock the session held. `lostSignal` aborts with `cause`. */
  async discard(cause: ConnectionError): Promise<void> {
    this.#markLost(cause);
    if (this.#closed) return;
    this.#closed = true;
    await this.#connection.destroy(cause);
  }

  /**
   * Gives up on a session that stopped answering while `statement` ran. Closing the socket is not
   * enough: the server session may live on, holding its locks, until the server notices (a
   * statement stuck in a synchronous-replication wait, a network that drops packets). So it is also
   * ended from a connection of its own (issue #14), where pglock owns the connections.
   */
  #abandon(cause: ConnectionError, statement: Statement | null): Promise<void> {
    // Before discard: markLost's listeners may give the session back at once, which closes it.
    if (
      !this.#closed &&
      !this.#endingOnServer &&
      this.#driver.ownsConnections &&
      this.#backendStart !== undefined &&
      this.#applicationName !== undefined
    ) {
      this.#endingOnServer = true;
      void endOnServer(this.#driver, {
        pid: this.#backendPid,
        backendStart: this.#backendStart,
        lastStatement: statement?.text ?? null,
        applicationName: this.#applicationName,
      });
    }
    return this.discard(cause);
  }
}

/**
 * The connection reached another server session than the one it opened: a pooler in transaction or
 * statement mode (PgBouncer `pool_mode = transaction`), where session-level locks are not safe.
 */
class SessionChangedError extends ConnectionError {
  constructor(expected: number, actual: number | undefined) {
    const now = actual === undefined ? "another server session" : `server session (backend pid) ${actual}`;
    super(
      `the connection now reaches ${now}, not ${expected} where pglock's locks are: ` +
        "a pooler in transaction or statement mode (PgBouncer pool_mode = transaction) does not keep a server session " +
        "per connection, so session-level locks are not safe through it; use session pooling, a direct connection, " +
        `or withXactLock. pglock stopped before acting there; locks taken on ${expected} stay there ` +
        "until that server connection ends",
    );
  }
}

function asConnectionError(error: unknown, message: string): ConnectionError {
  if (error instanceof ConnectionError) return error;
  const cause =
    (error as { status?: string; error?: unknown })?.status === "failed" ? (error as { error: unknown }).error : error;
  const detail = cause instanceof Error && cause.message ? `: ${cause.message}` : "";
  return new ConnectionError(`${message}${detail}`, { cause });
}

function shouldCancel(cancelOnAbort: RunOptions["cancelOnAbort"]): boolean {
  return typeof cancelOnAbort === "function" ? cancelOnAbort() : cancelOnAbort === true;
}

function describeEnd(cause: unknown): string {
  const detail = cause instanceof Error && cause.message ? `: ${cause.message}` : "";
  return `the connection to PostgreSQL ended${detail}`;
}
