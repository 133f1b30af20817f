/**
 * Wake-ups over LISTEN/NOTIFY: one LISTEN session per Locker, open only while someone waits.
 * A NOTIFY is a hint, never a guarantee (a holder that dies sends none), so waiters also poll,
 * slowly. https://www.postgresql.org/docs/current/sql-notify.html
 */

import type { Wakeups } from "../contract/backend.js";
import type { Session } from "../session/session.js";
import type { Statement } from "../sql/advisory.js";
import * as sql from "../sql/notify.js";

/**
 * What the notifier needs from a Locker's backend: a session of its own to LISTEN on, and a way to
 * run a NOTIFY.
 */
export interface NotifyHost {
  openDedicatedSession(): Promise<Session>;
  releaseDedicatedSession(session: Session): Promise<void>;
  runShort(statement: Statement): Promise<void>;
}

const notifiers = new WeakMap<NotifyHost, Notifier>();

export function notifierOf(locker: NotifyHost): Notifier {
  let notifier = notifiers.get(locker);
  if (!notifier) {
    notifier = new Notifier(locker);
    notifiers.set(locker, notifier);
  }
  return notifier;
}

export class Notifier implements Wakeups {
  readonly #locker: NotifyHost;
  readonly #listeners = new Map<string, Set<() => void>>();
  #session: Promise<Session> | undefined;

  constructor(locker: NotifyHost) {
    this.#locker = locker;
  }

  /** Calls `wake` on every NOTIFY for `topic` until the returned function is called. Resolves once LISTEN is active. */
  async subscribe(topic: string, wake: () => void): Promise<() => void> {
    const listeners = this.#listeners.get(topic) ?? new Set();
    this.#listeners.set(topic, listeners);
    listeners.add(wake);
    const unsubscribe = () => {
      listeners.delete(wake);
      if (listeners.size === 0) this.#listeners.delete(topic);
      if (this.#listeners.size === 0) this.#close();
    };
    try {
      await this.#listen();
    } catch {
      // Without LISTEN the waiter still polls; a wake-up is an optimisation, never a requirement.
    }
    return unsubscribe;
  }

  /** Sends a wake-up for `topic` to every Locker that listens, in any process. */
  notify(topic: string): Promise<void> {
    return this.#locker.runShort(sql.notify(topic));
  }

  #listen(): Promise<Session> {
    this.#session ??= (async () => {
      const session = await this.#locker.openDedicatedSession();
      session.onNotification((_channel, topic) => {
        for (const wake of this.#listeners.get(topic) ?? []) wake();
      });
      session.lostSignal.addEventListener("abort", () => {
        this.#session = undefined;
      });
      await session.query(sql.listen());
      return session;
    })().catch((error) => {
      this.#session = undefined;
      throw error;
    });
    return this.#session;
  }

  #close() {
    const opening = this.#session;
    this.#session = undefined;
    void opening?.then(
      async (session) => {
        await session.run(sql.unlisten());
        await this.#locker.releaseDedicatedSession(session);
      },
      () => {},
    );
  }
}
