// pglock/opentelemetry with the SDK's in-memory exporters (issue #16). The installed package's ESM
// and CommonJS builds run the same scenario in test/package.test.ts.
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
