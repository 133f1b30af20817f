// pglock's metrics for Prometheus, through OpenTelemetry's Prometheus exporter, served on the
// application's own HTTP server at /metrics (the exporter can also listen on its own port, 9464).
import { createServer } from "node:http";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { MeterProvider } from "@opentelemetry/sdk-metrics";
import pg from "pg";
import { createLocker } from "pglock";
import { instrumentPglock } from "pglock/opentelemetry";

const exporter = new PrometheusExporter({ preventServerStart: true });
const meterProvider = new MeterProvider({ readers: [exporter] });
const stopInstrumenting = instrumentPglock({ meterProvider });
const server = createServer((request, response) => exporter.getMetricsRequestHandler(request, response));
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const locker = createLocker(pool);
const held = await locker.acquire("example-prometheus-job");
await locker.tryAcquire("example-prometheus-job"); // busy: the same Locker holds it
await held.release();

const { port } = server.address() as { port: number };
const scraped = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
const lines = scraped.split("\n").filter((line) => line.startsWith("pglock_"));
console.log(lines.join("\n"));
for (const metric of ["pglock_lock_wait_duration_count", "pglock_lock_held", "pglock_lock_waiting"]) {
  if (!lines.some((line) => line.startsWith(metric))) throw new Error(`${metric} is missing from /metrics`);
}

stopInstrumenting();
await locker.close();
await pool.end();
await meterProvider.shutdown();
server.close();
