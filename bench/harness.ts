/**
 * What every scenario shares: the report being written, interleaved measurement, timing, tables.
 * Ratios are always against a baseline measured in the same run (the guide's rule for benchmarks).
 */
import { ratio, type Summary, summarize, us } from "./stats.js";

export const quick = process.argv.includes("--quick");
export const WARMUP = quick ? 5 : 300;
/**
 * Each implementation is measured in ROUNDS slices, taken in turn, so that a drift of the machine
 * (the server's other work, CPU frequency) spreads over all of them instead of favouring one.
 */
export const ROUNDS = quick ? 2 : 10;

const lines: string[] = [];
export function log(line = "") {
  console.log(line);
  lines.push(line);
}
export const reportText = () => `${lines.join("\n")}\n`;

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let nextKey = 1_000_000n;
export const freshKey = () => nextKey++;

export type Row = [string, Summary | string];

export interface Contender {
  name: string;
  /** Samples per round, when the implementation is too slow for the full count. */
  perRound?: number;
  setup(): Promise<{ measure(count: number): Promise<number[]>; teardown(): Promise<void> }>;
}

export async function interleaved(contenders: Contender[], perRound: number): Promise<Row[]> {
  const running = [];
  for (const contender of contenders)
    running.push({ contender, ...(await contender.setup()), samples: [] as number[] });
  for (let round = 0; round < ROUNDS; round++) {
    for (const entry of running) entry.samples.push(...(await entry.measure(entry.contender.perRound ?? perRound)));
  }
  for (const entry of running) await entry.teardown();
  return running.map((entry) => [entry.contender.name, summarize(entry.samples)]);
}

export async function timeEach(count: number, op: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < Math.min(WARMUP, count); i++) await op();
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await op();
    samples.push(performance.now() - start);
  }
  return samples;
}

/** A contender that times one operation at a time. */
export function sequential(
  name: string,
  setup: () => Promise<{ op(): Promise<unknown>; teardown(): Promise<void> }>,
  perRound?: number,
): Contender {
  return {
    name,
    perRound,
    async setup() {
      const { op, teardown } = await setup();
      return { measure: (count) => timeEach(count, op), teardown };
    },
  };
}

/** Median, p99 and the ratio of the median to the first row's (or `floor`'s). */
export function latencyTable(rows: Row[], floor = rows[0]?.[1]) {
  log("| implementation | median µs | p99 µs | median vs baseline |");
  log("| --- | --- | --- | --- |");
  for (const [name, value] of rows) {
    if (typeof value === "string") log(`| ${name} | ${value} | | |`);
    else
      log(`| ${name} | ${us(value.median)} | ${us(value.p99)} | ${ratio(value.median, (floor as Summary).median)} |`);
  }
  log();
}

export function find(rows: Row[], includes: string): Summary | undefined {
  const row = rows.find(([name, value]) => name.includes(includes) && typeof value !== "string");
  return row?.[1] as Summary | undefined;
}
