/** Sample statistics for the benchmarks. */
export interface Summary {
  median: number;
  p99: number;
  n: number;
}

export function summarize(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
  return { median: at(0.5), p99: at(0.99), n: sorted.length };
}

/** Microseconds with one decimal, for tables. */
export const us = (ms: number) => (ms * 1000).toFixed(1);
export const ratio = (value: number, floor: number) => `${(value / floor).toFixed(2)}×`;
