// What the multi-process test programs share: a line on stdout, the parent's "go" on stdin, and how
// a wait ended ("granted <ms>" or "failed <code> <ms>").
import { createInterface } from "node:readline";

export const say = (text: string) => process.stdout.write(`${text}\n`);

/** Resolves with the parent's first line on stdin; `close()` lets the process exit afterwards. */
export function goSignal(): { go: Promise<string>; close(): void } {
  const lines = createInterface({ input: process.stdin });
  const go = new Promise<string>((resolve) => lines.once("line", resolve));
  return { go, close: () => lines.close() };
}

/** Runs `wait` and says how it ended, and after how many ms. */
export async function report(wait: () => Promise<unknown>): Promise<void> {
  const started = performance.now();
  const ms = () => Math.round(performance.now() - started);
  try {
    await wait();
    say(`granted ${ms()}`);
  } catch (error) {
    say(`failed ${(error as { code?: string }).code ?? (error as Error).message} ${ms()}`);
  }
}
