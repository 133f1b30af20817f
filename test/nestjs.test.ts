// The NestJS recipe (examples/nestjs/once-per-tick.ts) with the real @nestjs/schedule: three
// application contexts play three replicas, each with the same @Cron method under @OncePerTick, their
// clocks 0, 100 and 200 ms apart; the job runs once per tick (issue #25). Node only: NestJS needs
// TypeScript's legacy decorators (tsconfig experimentalDecorators), which Deno does not apply to it.
import "reflect-metadata";
import { setTimeout as sleep } from "node:timers/promises";
import { Inject, Injectable, Module } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { Cron, ScheduleModule } from "@nestjs/schedule";
import { type AnyLocker, createLocker } from "pglock";
import { describe, expect, it } from "vitest";
import { LOCKER, OncePerTick } from "../examples/nestjs/once-per-tick.js";
import { makePool, uniqueName } from "./support/db.js";

const job = uniqueName("nest-report");
const runs: { second: number; replica: number }[] = [];
const SKEW = Symbol("clock skew");

@Injectable()
class Reports {
  /** The second the last cron call was for (cron fires on whole seconds, late under load, never early). */
  tick = 0;

  constructor(
    @Inject(LOCKER) readonly locker: AnyLocker,
    @Inject(SKEW) readonly skew: { ms: number; replica: number },
  ) {}

  // Stacked as the recipe says: @Cron sees the method that @Late and @OncePerTick wrapped.
  @Cron("* * * * * *")
  @Late()
  @OncePerTick(job, { atLeastMs: 500, atMostMs: 900 })
  async report() {
    runs.push({ second: this.tick, replica: this.skew.replica });
  }
}

/** This replica's clock is `skew.ms` late: the method runs that long after the tick. */
function Late() {
  return (_target: object, _property: string, descriptor: PropertyDescriptor): void => {
    const method = descriptor.value as () => Promise<void>;
    descriptor.value = async function (this: Reports) {
      this.tick = Math.round(Date.now() / 1000);
      await sleep(this.skew.ms);
      await method.call(this);
    };
  };
}

function replica(index: number) {
  const pool = makePool();
  @Module({
    imports: [ScheduleModule.forRoot()],
    providers: [
      Reports,
      { provide: LOCKER, useFactory: () => createLocker(pool) },
      { provide: SKEW, useValue: { ms: index * 100, replica: index } },
    ],
  })
  class ReplicaModule {}
  return NestFactory.createApplicationContext(ReplicaModule, { logger: false });
}

describe("the NestJS recipe", () => {
  it("@Cron with @OncePerTick runs the job on one of three replicas per tick", async () => {
    const apps = await Promise.all([0, 1, 2].map(replica));
    await sleep(3_500);
    await Promise.all(apps.map((app) => app.close()));
    await sleep(400);
    await Promise.all(apps.map((app) => app.get<AnyLocker>(LOCKER).close()));
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(new Set(runs.map((run) => run.second)).size).toBe(runs.length);
  }, 30_000);
});
