/**
 * Leader election: the holder of one lock leads, and says so in a record others can read (issue #28).
 *
 * - The leader's term is the fencing token of its grant, handed to its duties, so that a deposed
 *   leader's late writes can be refused.
 * - The record (contract/backend.ts `Leaderboard`) names the leader and what it published, and lasts
 *   `termMs` on the server's clock unless renewed. It counts only while its holder holds the key, so a
 *   leader that died is not reported.
 * - A leader that stops renewing (a frozen process: SIGSTOP, a VM paused; the kernel still answers TCP
 *   keepalives for it, so its session lives on) is deposed by a campaigner once its term has run out on
 *   the server's clock: its session is ended, or its lease entry deleted. The leader itself stops its
 *   duties when its own clock says the term may have run out: the duties of two leaders never overlap
 *   in time, as long as both clocks run at the same rate.
 * - Trade-off: an event loop stalled for more than two thirds of `termMs` (GC, synchronous work) costs
 *   the leadership; a larger `termMs` tolerates longer stalls and replaces a frozen leader later.
 */
import { EventEmitter } from "node:events";
import type { Leaderboard, Leadership, Wakeups } from "../contract/backend.js";
import type { LockHandle } from "../contract/handle.js";
import { ConnectionError, DatabaseError, InvalidArgumentError, LockLostError, LockTimeoutError } from "../errors.js";
import { processLabel } from "../identity.js";
import { describe, type LockKey, type LockKeyInput, lockKey } from "../key.js";
import { linkSignals, sleep, Wake } from "../signals.js";
import { checkBoolean, checkInteger, checkSignal, optionsObject } from "../validate.js";

export type { Leadership } from "../contract/backend.js";

/** What an election needs from a Locker: waits for one key (`timeout: 0` only tries), with a fencing token. */
export interface ElectionLocker {
  acquire(key: LockKey, options?: { signal?: AbortSignal; timeout?: number; fencing?: boolean }): Promise<LockHandle>;
}

/** Options of a Locker's `leaderElection(name, options)`. */
export interface LeaderElectionOptions {
  /**
   * How long a term lasts on the server's clock unless the leader renews it (it does every third of
   * it). A leader that has not renewed for this long is replaced, and stops its duties. Also the
   * longest event-loop stall a leader survives is two thirds of it.
   * @defaultValue 15000
   */
  termMs?: number;
  /**
   * Who this process is in the record, as `leader()` and `observe()` report it.
   * @defaultValue `host:pid@nonce` of this process
   */
  owner?: string;
}

/** Options of {@link LeaderElection.run}. */
export interface LeaderRunOptions {
  /** Aborting it stops campaigning, and ends the duties' signal. */
  signal?: AbortSignal;
  /** What the leader publishes with its term (an address, say): any JSON value of at most 8 kB. */
  payload?: unknown;
}

/** Options of {@link LeaderElection.observe}. */
export interface ObserveOptions {
  /** Aborting it ends the iteration (quietly: the loop just ends). */
  signal?: AbortSignal;
}

/** Options of {@link LeaderElection.resign}. */
export interface ResignOptions {
  /**
   * Campaign again after handing over (the next term may come back here when nobody else campaigns).
   * @defaultValue true
   */
  campaign?: boolean;
}

/** What the duties get: the term they run in. */
export interface LeaderTerm {
  /**
   * The term's fencing token: larger in every later term. Pass it with writes that others can refuse.
   * Undefined only when the role may not use the fencing table (a warning says so once).
   */
  readonly token: bigint | undefined;
  /** The payload this leader published. */
  readonly payload: unknown;
}

/** The events of a {@link LeaderElection}. */
export interface LeaderElectionEvents {
  /** This process became the leader, in term `term` (undefined without a fencing table: see LeaderTerm). */
  elected: [term: bigint | undefined];
  /** This process stopped leading; `reason` is the `LockLostError` when leadership was lost. */
  demoted: [reason: unknown];
}

/** Retry delay after a campaign failed (the database restarting, say). */
const RETRY_MS = 500;
/** How often a campaign that waits on the server looks whether the leader's term ran out. */
const DEPOSE_CHECK_MS = 1_000;
/** How often a campaign that cannot wait on the server (leases) tries for the key, about. */
const CAMPAIGN_POLL_MS = 150;
/** How often observe() reads the record without a wake-up: a leader that dies sends none. */
const OBSERVE_POLL_MS = { server: 1_000, polling: 250 };
const MAX_PAYLOAD_BYTES = 8_192;
const DEFAULT_TERM_MS = 15_000;

interface Reign {
  readonly handle: LockHandle;
  readonly term: bigint | undefined;
  /** Aborted on resign (AbortError) or when the term ran out (LockLostError). */
  readonly ending: AbortController;
  campaignAfter: boolean;
}

/**
 * Leader election: the holder of one lock leads. Make one with a Locker's `leaderElection(name)`;
 * `run(duties)` leads when elected and campaigns again after a loss. `leader()` and `observe()` tell
 * any process, campaigning or not, who leads.
 */
export class LeaderElection extends EventEmitter<LeaderElectionEvents> {
  /** The key whose holder leads. */
  readonly key: LockKey;
  /** How long a term lasts unless renewed, in ms. */
  readonly termMs: number;
  /** Who this process is in the record. */
  readonly owner: string;
  readonly #locker: ElectionLocker;
  readonly #board: Leaderboard;
  readonly #wakeups: Wakeups;
  readonly #topic: string;
  #reign: Reign | undefined;
  #running = false;
  /** The role may not use the fencing table: campaigns take the key without a token. */
  #unfenced = false;
  /** The role may not write the record: terms are neither recorded nor bounded. */
  #unrecorded = false;

  /** @internal a Locker's `leaderElection(name)` */
  static create(
    locker: ElectionLocker,
    board: Leaderboard,
    wakeups: Wakeups,
    name: LockKeyInput,
    options: LeaderElectionOptions = {},
  ): LeaderElection {
    return new LeaderElection(locker, board, wakeups, name, options);
  }

  /** Use a Locker's `leaderElection(name)`. */
  private constructor(
    locker: ElectionLocker,
    board: Leaderboard,
    wakeups: Wakeups,
    name: LockKeyInput,
    options: LeaderElectionOptions,
  ) {
    super();
    optionsObject(options, "leaderElection", ["termMs", "owner"]);
    this.termMs = checkInteger(options.termMs, "leaderElection", "options.termMs", 300, 86_400_000) ?? DEFAULT_TERM_MS;
    if (options.owner !== undefined && (typeof options.owner !== "string" || options.owner.length === 0)) {
      throw new InvalidArgumentError(
        `leaderElection: options.owner must be a non-empty string, got ${describe(options.owner)}`,
      );
    }
    this.owner = options.owner ?? processLabel();
    this.#locker = locker;
    this.#board = board;
    this.#wakeups = wakeups;
    this.key = lockKey(name);
    this.#topic = `leader:${this.key.identity}`;
  }

  /** Whether this process leads now. */
  get isLeader(): boolean {
    return this.#reign !== undefined;
  }

  /** Who leads now, as the server says: `{ owner, payload, term, since }`, or null when nobody does. */
  leader(): Promise<Leadership | null> {
    return this.#board.read(this.key);
  }

  /**
   * The leadership now, then every change of it (a new term, or nobody), for any process, campaigning
   * or not. Woken by the leader's NOTIFY where the Locker can listen (session Locker), and reading the
   * record every 250 ms otherwise (leases) or every second (a leader that died sends nothing). Changes
   * closer together than that may be seen as one.
   * @example
   * const election = locker.leaderElection("billing-scheduler");
   * for await (const leadership of election.observe({ signal: shutdown })) {
   *   console.log(leadership ? `${leadership.owner} leads (term ${leadership.term})` : "nobody leads");
   * }
   */
  async *observe(options: ObserveOptions = {}): AsyncGenerator<Leadership | null, void, undefined> {
    optionsObject(options, "leaderElection.observe", ["signal"]);
    const signal = checkSignal(options.signal, "leaderElection.observe") ?? new AbortController().signal;
    const pollMs = this.#board.waitsOnServer ? OBSERVE_POLL_MS.server : OBSERVE_POLL_MS.polling;
    const wake = new Wake();
    const unsubscribe = await this.#wakeups.subscribe(this.#topic, () => wake.wake());
    let last: string | undefined;
    try {
      while (!signal.aborted) {
        let now: Leadership | null | undefined;
        try {
          now = await this.leader();
        } catch (error) {
          // Unreachable now (the database restarting): nothing is known, so nothing is reported. Any
          // other failure (a role that may not read the lease table) will not pass: the caller is told.
          if (!(error instanceof ConnectionError)) throw error;
        }
        if (now !== undefined) {
          const seen = now ? `${now.term} ${now.owner}` : "none";
          if (seen !== last) {
            last = seen;
            yield now;
          }
        }
        await wake.wait(pollMs, signal);
      }
    } finally {
      unsubscribe();
    }
  }

  /**
   * Hands leadership over now: the duties' signal aborts (an `AbortError`), the record and the lock
   * are given up, and a campaigner elsewhere takes over at once. Campaigns again afterwards unless
   * `campaign: false`, which ends `run()` once the duties have returned. Does nothing when not leading.
   */
  async resign(options: ResignOptions = {}): Promise<void> {
    optionsObject(options, "leaderElection.resign", ["campaign"]);
    const campaign = checkBoolean(options.campaign, "leaderElection.resign", "options.campaign") ?? true;
    const reign = this.#reign;
    if (!reign) return;
    reign.campaignAfter = campaign;
    if (reign.term !== undefined) await this.#board.resign(this.key, reign.term).catch(() => {});
    reign.ending.abort();
  }

  /**
   * Campaigns, runs `duties(signal, term)` while leader (the signal aborts when leadership is lost, on
   * `resign()`, or when `options.signal` aborts), and campaigns again after a loss, until
   * `options.signal` aborts or the duties return. Resolves when it stops; rejects if the duties throw
   * while still leader.
   */
  async run(
    duties: (signal: AbortSignal, term: LeaderTerm) => Promise<void> | void,
    options: LeaderRunOptions = {},
  ): Promise<void> {
    if (typeof duties !== "function") {
      throw new InvalidArgumentError(`leaderElection.run: duties must be a function, got ${describe(duties)}`);
    }
    optionsObject(options, "leaderElection.run", ["signal", "payload"]);
    const outer = checkSignal(options.signal, "leaderElection.run");
    const payload = checkPayload(options.payload);
    if (this.#running) throw new InvalidArgumentError("leaderElection.run: this election is already running");
    this.#running = true;
    try {
      while (!outer?.aborted) {
        const handle = await this.#campaign(outer);
        if (!handle) return;
        const term = handle.fencingToken;
        const recorded = await this.#proclaim(handle, term, payload);
        if (recorded === "retry") {
          await handle.release().catch(() => {});
          await sleep(RETRY_MS, outer).catch(() => {});
          continue;
        }
        const reign: Reign = { handle, term, ending: new AbortController(), campaignAfter: true };
        this.#reign = reign;
        this.emit("elected", term);
        const keeper = recorded === "recorded" && term !== undefined ? this.#keepTerm(reign, term) : () => {};
        const signal = linkSignals(handle.signal, outer, reign.ending.signal);
        let failure: { error: unknown } | undefined;
        try {
          await duties(signal.signal, { token: term, payload });
        } catch (error) {
          if (!signal.signal.aborted) failure = { error };
        } finally {
          signal.dispose();
          keeper();
        }
        const resigned = reign.ending.signal.aborted && !(reign.ending.signal.reason instanceof LockLostError);
        const lostReason = handle.signal.aborted
          ? handle.signal.reason
          : resigned
            ? undefined
            : reign.ending.signal.reason;
        // Told first: the duties have stopped, and a lost lock may be another's already.
        this.#reign = undefined;
        this.emit("demoted", lostReason);
        if (recorded === "recorded" && term !== undefined) await this.#board.resign(this.key, term).catch(() => {});
        await handle.release().catch(() => {});
        void this.#wakeups.notify(this.#topic).catch(() => {});
        if (failure) throw failure.error;
        if (resigned) {
          if (!reign.campaignAfter) return;
          await this.#untilSomeoneElseLeads(term, outer);
          continue;
        }
        if (lostReason === undefined) return;
      }
    } finally {
      this.#running = false;
    }
  }

  /**
   * Records the term. "retry" when the database could not be reached (campaign again); "unrecorded"
   * when the role may not write the lease table: the election still elects, as an election by the lock
   * alone, and says once what it cannot do.
   */
  async #proclaim(
    handle: LockHandle,
    term: bigint | undefined,
    payload: unknown,
  ): Promise<"recorded" | "unrecorded" | "retry"> {
    if (term === undefined || this.#unrecorded) return "unrecorded";
    try {
      const recorded = await this.#board.proclaim(handle, { owner: this.owner, payload }, term, this.termMs);
      if (!recorded || handle.signal.aborted) return "retry";
      void this.#wakeups.notify(this.#topic).catch(() => {});
      return "recorded";
    } catch (error) {
      if (error instanceof ConnectionError) return "retry";
      this.#unrecorded = true;
      warnOnce(
        `pglock: the election on ${this.key} cannot record its leader (${(error as Error).message}): it elects by ` +
          "the lock alone; leader(), observe() and the bound on a frozen leader do not work. Create the lease table " +
          "as its owner (leaseTableSql()) and grant SELECT, INSERT, UPDATE, DELETE on it to this role.",
      );
      return "unrecorded";
    }
  }

  /**
   * Renews the term every third of termMs, and ends it (LockLostError) when a renewal is refused, or
   * when this process's clock says termMs has passed since the last renewal that succeeded was sent:
   * by then a campaigner may have deposed it. Returns the function that stops it.
   */
  #keepTerm(reign: Reign, term: bigint): () => void {
    const started = performance.now();
    let deadline = started + this.termMs;
    const end = (why: string) => reign.ending.abort(new LockLostError(`leadership of ${this.key} ended: ${why}`));
    let renewTimer: ReturnType<typeof setTimeout> | undefined;
    let deadlineTimer: ReturnType<typeof setTimeout> | undefined;
    const armDeadline = () => {
      clearTimeout(deadlineTimer);
      deadlineTimer = setTimeout(
        () => {
          if (performance.now() >= deadline) end(`its term was not renewed within termMs (${this.termMs} ms)`);
          else armDeadline();
        },
        Math.max(0, deadline - performance.now()),
      );
      deadlineTimer.unref?.();
    };
    const renew = async () => {
      if (reign.ending.signal.aborted) return;
      const sentAt = performance.now();
      try {
        if (await this.#board.renew(this.key, term, this.termMs)) deadline = Math.max(deadline, sentAt + this.termMs);
        else end("its term ran out or a later term began");
      } catch {
        // Unanswered: the deadline decides.
      }
      if (!reign.ending.signal.aborted) {
        renewTimer = setTimeout(renew, this.termMs / 3);
        renewTimer.unref?.();
      }
    };
    renewTimer = setTimeout(renew, this.termMs / 3);
    renewTimer.unref?.();
    armDeadline();
    return () => {
      clearTimeout(renewTimer);
      clearTimeout(deadlineTimer);
    };
  }

  /** Waits for the key with a fencing token; undefined when `outer` aborts. */
  async #campaign(outer: AbortSignal | undefined): Promise<LockHandle | undefined> {
    const wake = new Wake();
    const unsubscribe = this.#board.waitsOnServer
      ? undefined
      : await this.#wakeups.subscribe(this.#topic, () => wake.wake()).catch(() => undefined);
    let lastDeposeCheck = performance.now();
    try {
      while (!outer?.aborted) {
        try {
          // Waiting on the server, the key is handed over the moment it is free; polling, only tried.
          return await this.#locker.acquire(this.key, {
            ...(outer ? { signal: outer } : {}),
            timeout: this.#board.waitsOnServer ? DEPOSE_CHECK_MS : 0,
            fencing: !this.#unfenced,
          });
        } catch (error) {
          if (outer?.aborted) return undefined;
          // A broken connection, or a wait the server ended (a caller-owned session's lock_timeout):
          // keep campaigning, or nobody would lead once the leader steps down (issue #18).
          if (error instanceof ConnectionError) {
            await sleep(RETRY_MS, outer).catch(() => {});
            continue;
          }
          if (!(error instanceof LockTimeoutError)) {
            // The role may not use the fencing table: elect by the lock alone rather than never.
            if (error instanceof DatabaseError && !this.#unfenced) {
              this.#unfenced = true;
              warnOnce(
                `pglock: the election on ${this.key} gets no fencing token (${error.message}): its terms have none, ` +
                  "and are neither recorded nor bounded.",
              );
              continue;
            }
            throw error;
          }
        }
        if (performance.now() - lastDeposeCheck >= DEPOSE_CHECK_MS) {
          lastDeposeCheck = performance.now();
          // Not permitted (pg_terminate_backend of another role) or unreachable: keep waiting.
          await this.#board.depose(this.key).catch(() => false);
        }
        if (!this.#board.waitsOnServer) {
          await wake.wait(CAMPAIGN_POLL_MS / 2 + Math.random() * CAMPAIGN_POLL_MS, outer);
        }
      }
      return undefined;
    } finally {
      unsubscribe?.();
    }
  }

  /** After resigning: campaign again once someone else leads, or after a while when nobody does. */
  async #untilSomeoneElseLeads(term: bigint | undefined, outer: AbortSignal | undefined) {
    const deadline = performance.now() + 2_000;
    while (performance.now() < deadline && !outer?.aborted) {
      const now = await this.leader().catch(() => null);
      if (now && now.term !== term) return;
      await sleep(50, outer).catch(() => {});
    }
  }
}

const warned = new Set<string>();

/** A process warning (`process.on("warning")`), once per message. */
function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  process.emitWarning(message, { code: "PGLOCK_ELECTION_DEGRADED" });
}

function checkPayload(payload: unknown): unknown {
  if (payload === undefined) return null;
  let text: string | undefined;
  try {
    text = JSON.stringify(payload);
  } catch {}
  if (text === undefined || Buffer.byteLength(text) > MAX_PAYLOAD_BYTES) {
    throw new InvalidArgumentError(
      `leaderElection.run: options.payload must be a JSON value of at most ${MAX_PAYLOAD_BYTES} bytes, got ${describe(payload)}`,
    );
  }
  return JSON.parse(text);
}
