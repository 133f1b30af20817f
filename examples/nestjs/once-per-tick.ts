// Recipe: @nestjs/schedule's @Cron on every replica, the job once per tick. `@OncePerTick` goes
// under `@Cron` (decorators apply bottom-up, and @Cron must see the wrapped method) and runs the
// method under tryWithLock with atLeastMs: the key stays taken for the rest of the tick, by the
// server's clock, so replicas whose timers fire later skip it. A few lines: no pglock/nestjs package.
//
//   @Injectable()
//   class Reports {
//     constructor(@Inject(LOCKER) readonly locker: AnyLocker) {}
//
//     @Cron("0 * * * * *")
//     @OncePerTick("reports:hourly", { atLeastMs: 30_000, atMostMs: 50_000 })
//     async hourly() { … }
//   }
import type { AnyLocker, RunLengthOptions } from "pglock";

/** The provider token of the application's Locker. */
export const LOCKER = Symbol("pglock Locker");

/** Runs the decorated method on one replica per tick: the instance's `locker` takes `key`. */
export function OncePerTick(key: string, options: RunLengthOptions) {
  return (_target: object, _property: string | symbol, descriptor: PropertyDescriptor): void => {
    const job = descriptor.value as (...args: unknown[]) => unknown;
    descriptor.value = async function (this: { locker: AnyLocker }, ...args: unknown[]): Promise<void> {
      await this.locker.tryWithLock(key, () => job.apply(this, args), options);
    };
  };
}
