/**
 * Leader election: the holder of one lock leads. Followers wait on the server, so when the leader
 * releases or its session ends (its process killed, its connection cut), a follower is granted the
 * lock at once.
 */
import { EventEmitter } from "node:events";
import type { LockHandle } from "../contract/handle.js";
import { ConnectionError, InvalidArgumentError, LockTimeoutError } from "../errors.js";
import { describe, type LockKey, type LockKeyInput, lockKey } from "../key.js";
import { linkSignals, sleep } from "../signals.js";
import { checkSignal, optionsObject } from "../validate.js";

/** What an election needs from a Locker: a wait for one key. */
export interface ElectionLocker {
  acquire(key: LockKey, options?: { signal?: AbortSignal }): Promise<LockHandle>;
}

/** The events of a {@link LeaderElection}. */
export interface LeaderElectionEvents {
  /** This process became the leader. */
  elected: [];
  /** This process stopped leading; `reason` is the `LockLostError` when leadership was lost. */
  demoted: [reason: unknown];
}

/** Retry delay after a campaign failed (the database restarting, say). */
const RETRY_MS = 500;

/**
 * Leader election: the holder of one lock leads. Make one with a Locker's `leaderElection(name)`;
 * `run(duties)` leads when elected and campaigns again after a loss.
 */
export class LeaderElection extends EventEmitter<LeaderElectionEvents> {
  /** The key whose holder leads. */
  readonly key: LockKey;
  readonly #locker: ElectionLocker;
  #leader = false;
  #running = false;

  /** @internal a Locker's `leaderElection(name)` */
  static create(locker: ElectionLocker, name: LockKeyInput): LeaderElection {
    return new LeaderElection(locker, name);
  }

  /** Use a Locker's `leaderElection(name)`. */
  private constructor(locker: ElectionLocker, name: LockKeyInput) {
    super();
    this.#locker = locker;
    this.key = lockKey(name);
  }

  /** Whether this process leads now. */
  get isLeader(): boolean {
    return this.#leader;
  }

  /**
   * Campaigns, runs `duties(signal)` while leader (the signal aborts when leadership is lost or
   * `options.signal` aborts), and campaigns again after a loss, until `options.signal` aborts or the
   * duties return. Resolves when it stops; rejects if the duties throw while still leader.
   */
  async run(
    duties: (signal: AbortSignal) => Promise<void> | void,
    options: { signal?: AbortSignal } = {},
  ): Promise<void> {
    if (typeof duties !== "function") {
      throw new InvalidArgumentError(`leaderElection.run: duties must be a function, got ${describe(duties)}`);
    }
    optionsObject(options, "leaderElection.run", ["signal"]);
    const outer = checkSignal(options.signal, "leaderElection.run");
    if (this.#running) throw new InvalidArgumentError("leaderElection.run: this election is already running");
    this.#running = true;
    try {
      while (!outer?.aborted) {
        let handle: LockHandle;
        try {
          handle = await this.#locker.acquire(this.key, outer ? { signal: outer } : {});
        } catch (error) {
          if (outer?.aborted) return;
          // A broken connection, or a wait the server ended (a caller-owned session's lock_timeout):
          // keep campaigning, or nobody would lead once the leader steps down (issue #18).
          if (error instanceof ConnectionError || error instanceof LockTimeoutError) {
            await sleep(RETRY_MS);
            continue;
          }
          throw error;
        }
        this.#leader = true;
        this.emit("elected");
        const term = linkSignals(handle.signal, outer);
        let failure: { error: unknown } | undefined;
        try {
          await duties(term.signal);
        } catch (error) {
          if (!handle.signal.aborted) failure = { error };
        } finally {
          term.dispose();
        }
        const lost = handle.signal.aborted;
        await handle.release().catch(() => {});
        this.#leader = false;
        this.emit("demoted", lost ? handle.signal.reason : undefined);
        if (failure) throw failure.error;
        if (!lost) return;
      }
    } finally {
      this.#running = false;
    }
  }
}
