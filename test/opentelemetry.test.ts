// pglock/opentelemetry with the SDK's in-memory exporters (issue #16). The installed package's ESM
// and CommonJS builds run the same scenario in test/package.test.ts.
import type { MeterProvider as ApiMeterProvider } from "@opentelemetry/api";
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import * as pglock from "pglock";
import { instrumentPglock } from "pglock/opentelemetry";
import { describe, expect, it } from "vitest";
import { makePool, uniqueName } from "./support/db.js";
import { expectedSummary, otelScenario } from "./support/otel-scenario.js";

const admin = () => makePool({ max: 2 });
const pools = {
  make: () => makePool(),
  async terminate(app: string) {
    await admin().query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE split_part(application_name, ' ', 1) = $1",
      [app],
    );
  },
};
const keyText = (name: string) => pglock.lockKey(name).toString();

describe("pglock/opentelemetry", () => {
  it("records wait durations, held and waiting counts, losses, failures and one span per acquire", async () => {
    const key = uniqueName("otel");
    const summary = await otelScenario(pglock, instrumentPglock, pools, { key, app: uniqueName() });
    expect(summary).toEqual(expectedSummary(key, keyText, false));
  });

  it("puts the key on metrics only when asked (keyAttribute: true)", async () => {
    const key = uniqueName("otel");
    const summary = await otelScenario(pglock, instrumentPglock, pools, { key, app: uniqueName() }, true);
    expect(summary).toEqual(expectedSummary(key, keyText, true));
  });

  it("records the same for the lease Locker (its locks lost by revokeLock)", async () => {
    const key = uniqueName("otel");
    const summary = await otelScenario(pglock, instrumentPglock, pools, { key, app: uniqueName() }, false, true);
    expect(summary).toEqual(expectedSummary(key, keyText, false));
  });

  it("records nothing once disposed, and refuses options that are not an object", async () => {
    const key = uniqueName("otel");
    const stop = instrumentPglock();
    stop();
    stop(); // idempotent
    const summary = await otelScenario(pglock, () => () => {}, pools, { key, app: uniqueName() });
    expect(summary.waits).toEqual([]);
    expect(summary.spans).toEqual([]);
    expect(() => instrumentPglock(null as never)).toThrow(/options must be an object, got null/);
  });
});

describe("pglock/opentelemetry counts what it saw begin (issue #26)", () => {
  async function heldValue(reader: PeriodicExportingMetricReader): Promise<number> {
    const { resourceMetrics } = await reader.collect();
    let total = 0;
    for (const scope of resourceMetrics.scopeMetrics)
      for (const metric of scope.metrics)
        if (metric.descriptor.name === "pglock.lock.held")
          for (const point of metric.dataPoints) total += point.value as number;
    return total;
  }

  it("locks held before instrumenting do not drive the held count below zero; a second call does not count twice", async () => {
    const reader = new PeriodicExportingMetricReader({
      exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
      exportIntervalMillis: 60_000,
    });
    const meterProvider = new MeterProvider({ readers: [reader] }) as unknown as ApiMeterProvider;
    const locker = pglock.createLocker(makePool());
    const before = await Promise.all([uniqueName(), uniqueName()].map((key) => locker.acquire(key)));
    const stop = instrumentPglock({ meterProvider });
    const stopAgain = instrumentPglock({ meterProvider });
    try {
      await Promise.all(before.map((handle) => handle.release()));
      expect(await heldValue(reader)).toBe(0);
      const during = await locker.acquire(uniqueName());
      expect(await heldValue(reader)).toBe(1);
      stopAgain(); // the first call's recording goes on
      await during.release();
      expect(await heldValue(reader)).toBe(0);
    } finally {
      stop();
      await locker.close();
    }
  });
});
