/**
 * `pglock/opentelemetry`: metrics and spans for a Locker's locks, from pglock's diagnostics channels.
 * `@opentelemetry/api` is an optional peer dependency of this entry only; the main entry never loads
 * it. Names and units follow OpenTelemetry's semantic-convention style
 * (https://opentelemetry.io/docs/specs/semconv/general/metrics/): durations in seconds, `error.type`
 * for why something failed. The key is a span attribute, never a metric attribute unless asked for
 * (`keyAttribute`): a metric attribute per key would make one time series per key.
 */
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import {
  type Attributes,
  type MeterProvider,
  metrics,
  type Span,
  SpanStatusCode,
  type TracerProvider,
  trace,
} from "@opentelemetry/api";
import {
  type AcquiredEvent,
  type AcquireEndEvent,
  type AcquireStartEvent,
  channels,
  type LostEvent,
  type ReleasedEvent,
} from "./contract/events.js";
import type { LockKey } from "./key.js";

/** Options of `instrumentPglock`. */
export interface InstrumentPglockOptions {
  /** Where the metrics go (default: the global MeterProvider). */
  meterProvider?: MeterProvider;
  /** Where the spans go (default: the global TracerProvider). */
  tracerProvider?: TracerProvider;
  /**
   * Add `pglock.lock.key` to metric attributes too (default false). Only for a small, fixed set of
   * keys: every key becomes a time series of its own.
   */
  keyAttribute?: boolean;
}

const SCOPE = "pglock";
const WAIT_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * Starts recording, for every Locker of this process:
 * - `pglock.lock.wait.duration` (histogram, s): how long each acquire call took, with its outcome;
 * - `pglock.lock.held` and `pglock.lock.waiting` (up-down counters): handles held, calls in progress;
 * - `pglock.lock.lost` and `pglock.lock.acquire.failures` (counters), the latter with `error.type`;
 * - a span `pglock.acquire` per acquire call, from the call to the grant or the failure, with
 *   `pglock.lock.key`, `pglock.lock.mode` and `pglock.lock.outcome`.
 * Returns a disposer that stops recording (and ends the spans of calls still in progress). Only
 * locks acquired while instrumented are counted, so `pglock.lock.held` never goes below zero; a
 * second call for the same MeterProvider shares the first one's recording (it does not count twice),
 * and recording stops when both disposers have been called.
 *
 * @example
 * const stop = instrumentPglock({ meterProvider, tracerProvider });
 * // ... on shutdown:
 * stop();
 */
export function instrumentPglock(options: InstrumentPglockOptions = {}): () => void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`instrumentPglock: options must be an object, got ${String(options)}`);
  }
  // A second call for the same MeterProvider shares the first one's recording instead of counting
  // everything twice (issue #26); recording stops when the last disposer has been called.
  const meterProvider = options.meterProvider ?? metrics.getMeterProvider();
  let active = instrumented.get(meterProvider);
  if (!active) {
    active = { users: 0, stop: record(meterProvider, options) };
    instrumented.set(meterProvider, active);
  }
  const shared = active;
  shared.users++;
  let disposed = false;
  return () => {
    if (disposed) return;
    disposed = true;
    if (--shared.users > 0) return;
    instrumented.delete(meterProvider);
    shared.stop();
  };
}

const instrumented = new WeakMap<MeterProvider, { users: number; stop(): void }>();

function record(meterProvider: MeterProvider, options: InstrumentPglockOptions): () => void {
  const meter = meterProvider.getMeter(SCOPE);
  const tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer(SCOPE);
  const withKey = options.keyAttribute === true;

  const waitDuration = meter.createHistogram("pglock.lock.wait.duration", {
    description: "How long acquire calls took, from the call to the grant or the failure",
    unit: "s",
    // The SDK's default boundaries are for milliseconds; a lock wait spans 1 ms to minutes.
    advice: { explicitBucketBoundaries: WAIT_BUCKETS_S },
  });
  const held = meter.createUpDownCounter("pglock.lock.held", {
    description: "Lock handles held now",
    unit: "{lock}",
  });
  const waiting = meter.createUpDownCounter("pglock.lock.waiting", {
    description: "Acquire calls in progress",
    unit: "{call}",
  });
  const lost = meter.createCounter("pglock.lock.lost", {
    description: "Lock handles lost: their session ended while they were held",
    unit: "{lock}",
  });
  const failures = meter.createCounter("pglock.lock.acquire.failures", {
    description: "Acquire calls that failed (a tryAcquire that finds the lock busy is not a failure)",
    unit: "{call}",
  });

  const spans = new Map<AcquireStartEvent, Span>();
  const attributes = (key: LockKey, shared: boolean): Attributes => ({
    "pglock.lock.mode": shared ? "shared" : "exclusive",
    ...(withKey ? { "pglock.lock.key": keyText(key) } : {}),
  });

  // Only what began while instrumented is counted down again: a release of a lock acquired before
  // instrumentPglock was called would drive the held count below zero (issue #26).
  const heldHere = new WeakSet<object>();
  const onStart = (message: unknown) => {
    const event = message as AcquireStartEvent;
    waiting.add(1, attributes(event.key, event.shared));
    spans.set(
      event,
      tracer.startSpan("pglock.acquire", {
        attributes: {
          "pglock.lock.key": keyText(event.key),
          "pglock.lock.mode": event.shared ? "shared" : "exclusive",
        },
      }),
    );
  };
  const onEnd = (message: unknown) => {
    const event = message as AcquireEndEvent;
    const base = attributes(event.key, event.shared);
    if (spans.has(event)) waiting.add(-1, base);
    const failed = event.outcome !== "granted" && event.outcome !== "busy";
    const errorType = failed ? errorTypeOf(event.error) : undefined;
    const outcome = {
      ...base,
      "pglock.lock.outcome": event.outcome,
      ...(errorType ? { "error.type": errorType } : {}),
    };
    waitDuration.record(event.durationMs / 1000, outcome);
    if (failed) failures.add(1, outcome);
    const span = spans.get(event);
    if (!span) return;
    spans.delete(event);
    span.setAttribute("pglock.lock.outcome", event.outcome);
    if (errorType) {
      span.setAttribute("error.type", errorType);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (event.error as Error | undefined)?.message ?? errorType });
    }
    span.end();
  };
  const onAcquired = (message: unknown) => {
    const event = message as AcquiredEvent;
    heldHere.add(event.handle);
    held.add(1, attributes(event.key, event.shared));
  };
  const onReleased = (message: unknown) => {
    const event = message as ReleasedEvent;
    if (heldHere.delete(event.handle)) held.add(-1, attributes(event.key, event.shared));
  };
  const onLost = (message: unknown) => {
    const event = message as LostEvent;
    if (heldHere.delete(event.handle)) held.add(-1, attributes(event.key, event.shared));
    lost.add(1, { ...attributes(event.key, event.shared), "error.type": errorTypeOf(event.error) });
  };

  const subscriptions: [string, (message: unknown) => void][] = [
    [channels.acquireStart, onStart],
    [channels.acquireEnd, onEnd],
    [channels.acquired, onAcquired],
    [channels.released, onReleased],
    [channels.lost, onLost],
  ];
  for (const [name, listener] of subscriptions) subscribe(name, listener);
  let disposed = false;
  return () => {
    if (disposed) return;
    disposed = true;
    for (const [name, listener] of subscriptions) unsubscribe(name, listener);
    for (const span of spans.values()) {
      span.setAttribute("pglock.lock.outcome", "unknown");
      span.end();
    }
    spans.clear();
  };
}

function keyText(key: LockKey): string {
  return key.toString();
}

/** `error.type`: a pglock error's code, else the error's name (an AbortSignal's reason). */
function errorTypeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code.startsWith("ERR_PGLOCK")) return code;
  return (error as Error | null)?.name ?? "_OTHER";
}
