// pglock's metrics and spans through OpenTelemetry, printed to the console. In production, give
// instrumentPglock the providers your OpenTelemetry setup already has (or none: it uses the global ones).
import { ConsoleMetricExporter, MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { BasicTracerProvider, ConsoleSpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import pg from "pg";
import { createLocker } from "pglock";
import { instrumentPglock } from "pglock/opentelemetry";

const reader = new PeriodicExportingMetricReader({ exporter: new ConsoleMetricExporter() });
const meterProvider = new MeterProvider({ readers: [reader] });
const tracerProvider = new BasicTracerProvider({
  spanProcessors: [new SimpleSpanProcessor(new ConsoleSpanExporter())],
});
const stopInstrumenting = instrumentPglock({ meterProvider, tracerProvider });

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const locker = createLocker(pool);
await locker.withLock("example-otel-report", async () => {
  // the critical section; its acquire is a span, its wait a histogram sample
});
await locker.close();
await pool.end();

stopInstrumenting();
await meterProvider.forceFlush(); // prints pglock.lock.wait.duration, pglock.lock.held, ...
await Promise.all([meterProvider.shutdown(), tracerProvider.shutdown()]);
