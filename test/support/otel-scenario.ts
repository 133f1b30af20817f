// The OpenTelemetry scenario, shared by the in-repo test (source) and the installed-package probes
// (ESM and CommonJS builds): five acquire calls with five different ends, recorded with the SDK's
// in-memory exporters, summed up as plain data to compare.
import type { MeterProvider as ApiMeterProvider } from "@opentelemetry/api";
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";

interface ScenarioLocker {
  acquire(key: string, options?: Record<string, unknown>): Promise<{ release(): Promise<void>; signal: AbortSignal }>;
  tryAcquire(key: string): Promise<{ release(): Promise<void> } | null>;
  close(): Promise<void>;
}

export interface Pglock {
  createLocker(db: unknown, options?: Record<string, unknown>): ScenarioLocker;
  createLeaseLocker?(db: unknown, options?: Record<string, unknown>): ScenarioLocker;
  revokeLock?(db: unknown, key: string): Promise<unknown>;
}
type Instrument = (options: Record<string, unknown>) => () => void;

export interface Summary {
  waits: { outcome: string; mode: string; errorType: string | null; count: number; keyed: boolean }[];
  held: number;
  waiting: number;
  lost: number;
  failures: { errorType: string; count: number }[];
  spans: { name: string; key: string; mode: string; outcome: string; error: boolean }[];
}

export async function otelScenario(
  pglock: Pglock,
  instrumentPglock: Instrument,
  pools: { make(): unknown; terminate(applicationName: string): Promise<void> },
  names: { key: string; app: string },
  keyAttribute = false,
  lease = false,
): Promise<Summary> {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const spanExporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] });
  const stop = instrumentPglock({
    meterProvider: meterProvider as unknown as ApiMeterProvider,
    tracerProvider,
    keyAttribute,
  });
  // On leases, the two locks are lost by an operator's revokeLock: each holder is told at its next renewal.
  const leasePool = lease ? pools.make() : undefined;
  const holder = leasePool
    ? (pglock.createLeaseLocker?.(leasePool, { ttlMs: 1_000 }) as ScenarioLocker)
    : pglock.createLocker(pools.make(), { applicationName: names.app });
  const other = leasePool
    ? (pglock.createLeaseLocker?.(leasePool, { ttlMs: 1_000 }) as ScenarioLocker)
    : pglock.createLocker(pools.make());
  try {
    const held = await holder.acquire(names.key); // granted
    if ((await other.tryAcquire(names.key)) !== null) throw new Error("tryAcquire should find the lock busy");
    await other.acquire(names.key, { timeout: 50 }).then(
      () => Promise.reject(new Error("should time out")),
      () => undefined,
    ); // timeout
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await other.acquire(names.key, { signal: controller.signal }).then(
      () => Promise.reject(new Error("should be aborted")),
      () => undefined,
    ); // aborted
    // Granted; then both held locks are lost when the holder's sessions are terminated.
    const second = await holder.acquire(`${names.key}-2`, { shared: true });
    const lost = new Promise((resolve) => second.signal.addEventListener("abort", resolve, { once: true }));
    if (leasePool) {
      const heldLost = new Promise((resolve) => held.signal.addEventListener("abort", resolve, { once: true }));
      await pglock.revokeLock?.(leasePool, names.key);
      await pglock.revokeLock?.(leasePool, `${names.key}-2`);
      await heldLost;
    } else {
      await pools.terminate(names.app);
    }
    await lost;
    await held.release().catch(() => {});
  } finally {
    await Promise.all([holder.close(), other.close()]);
    stop();
  }
  await reader.forceFlush();
  const metrics =
    exporter
      .getMetrics()
      .at(-1)
      ?.scopeMetrics.flatMap((scope) => scope.metrics) ?? [];
  const metric = (name: string) => metrics.find((m) => m.descriptor.name === name);
  const sum = (name: string) =>
    (metric(name)?.dataPoints ?? []).reduce((total, point) => total + Number(point.value as number), 0);
  const summary: Summary = {
    waits: (metric("pglock.lock.wait.duration")?.dataPoints ?? [])
      .map((point) => ({
        outcome: String(point.attributes["pglock.lock.outcome"]),
        mode: String(point.attributes["pglock.lock.mode"]),
        errorType: (point.attributes["error.type"] as string | undefined) ?? null,
        count: (point.value as { count: number }).count,
        keyed: "pglock.lock.key" in point.attributes,
      }))
      .sort((a, b) => order(`${a.outcome} ${a.mode}`, `${b.outcome} ${b.mode}`)),
    held: sum("pglock.lock.held"),
    waiting: sum("pglock.lock.waiting"),
    lost: sum("pglock.lock.lost"),
    failures: (metric("pglock.lock.acquire.failures")?.dataPoints ?? [])
      .map((point) => ({ errorType: String(point.attributes["error.type"]), count: Number(point.value) }))
      .sort((a, b) => order(a.errorType, b.errorType)),
    spans: spanExporter
      .getFinishedSpans()
      .map((span) => ({
        name: span.name,
        key: String(span.attributes["pglock.lock.key"]),
        mode: String(span.attributes["pglock.lock.mode"]),
        outcome: String(span.attributes["pglock.lock.outcome"]),
        error: span.status.code === 2,
      }))
      .sort((a, b) => order(`${a.outcome} ${a.key}`, `${b.outcome} ${b.key}`)),
  };
  await Promise.all([meterProvider.shutdown(), tracerProvider.shutdown()]);
  return summary;
}

const order = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** What the scenario must record; `keyText` is how pglock writes a named key (`"name" (id)`). */
export function expectedSummary(key: string, keyText: (name: string) => string, keyed: boolean): Summary {
  return {
    waits: [
      { outcome: "aborted", mode: "exclusive", errorType: "AbortError", count: 1, keyed },
      { outcome: "busy", mode: "exclusive", errorType: null, count: 1, keyed },
      { outcome: "granted", mode: "exclusive", errorType: null, count: 1, keyed },
      { outcome: "granted", mode: "shared", errorType: null, count: 1, keyed },
      { outcome: "timeout", mode: "exclusive", errorType: "ERR_PGLOCK_TIMEOUT", count: 1, keyed },
    ],
    held: 0,
    waiting: 0,
    lost: 2,
    failures: [
      { errorType: "AbortError", count: 1 },
      { errorType: "ERR_PGLOCK_TIMEOUT", count: 1 },
    ],
    spans: [
      { name: "pglock.acquire", key: keyText(key), mode: "exclusive", outcome: "aborted", error: true },
      { name: "pglock.acquire", key: keyText(key), mode: "exclusive", outcome: "busy", error: false },
      { name: "pglock.acquire", key: keyText(key), mode: "exclusive", outcome: "granted", error: false },
      { name: "pglock.acquire", key: keyText(`${key}-2`), mode: "shared", outcome: "granted", error: false },
      { name: "pglock.acquire", key: keyText(key), mode: "exclusive", outcome: "timeout", error: true },
    ],
  };
}
