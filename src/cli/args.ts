/** Command-line parsing for `pglock`: flags before `--`, the command after it. */

import { type ParseArgsConfig, parseArgs } from "node:util";
import { nearest } from "../validate.js";

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig["options"]>;

import { type LockKey, lockKey } from "../key.js";

/** A usage error: printed with the usage to stderr, exit code 2. */
export class UsageError extends Error {}

export type KeyFormat = "name" | "id" | "pair";

/** `<key>` as the user wrote it: a name (hashed), an integer with --id, or `a,b` with --pair. */
export function parseKey(text: string, format: KeyFormat): LockKey {
  try {
    if (format === "id") {
      if (!/^-?\d+$/.test(text)) throw new UsageError(`--id needs an integer key, got ${JSON.stringify(text)}`);
      return lockKey(BigInt(text));
    }
    if (format === "pair") {
      const match = /^(-?\d+),(-?\d+)$/.exec(text);
      if (!match) throw new UsageError(`--pair needs a key like 12,34, got ${JSON.stringify(text)}`);
      return lockKey([Number(match[1]), Number(match[2])]);
    }
    return lockKey(text);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError((error as Error).message);
  }
}

/** `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds (as flock -w). */
export function parseDuration(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!match) throw new UsageError(`${flag} needs a duration like 500ms, 10s or 2m, got ${JSON.stringify(text)}`);
  const factor = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[(match[2] ?? "s") as "ms" | "s" | "m" | "h"];
  const ms = Math.round(Number(match[1]) * factor);
  if (ms > 2 ** 31 - 1) throw new UsageError(`${flag} ${text} is longer than 24 days`);
  return ms;
}

export function parseExitCode(text: string, flag: string): number {
  if (!/^\d+$/.test(text) || Number(text) > 255) {
    throw new UsageError(`${flag} needs an exit code from 0 to 255, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

/** A negative int64 or a pair with a negative part: a value, never a short option (`-7…`, `-1,2`). */
const NEGATIVE_NUMBER = /^-\d+(?:,-?\d+)?$/;

/**
 * parseArgs with usage errors instead of TypeErrors, and negative numbers read as values.
 * parseArgs takes `-7671976228194938313` for a cluster of short options, yet half of all hashed
 * names are negative and `pglock key`/`ls` print them (issue #13). So a negative number is the value
 * of a string option written before it (`--key -5`), else a positional (`--id -5`); `--id=-5` and
 * `--pair=-1,2` are the key written after its flag.
 */
export function parseFlags<const T extends ParseArgsOptionsConfig>(args: string[], options: T) {
  const stash: string[] = [];
  const marker = (value: string) => `\u0000${stash.push(value) - 1}`;
  const rewritten: string[] = [];
  for (const [i, arg] of args.entries()) {
    const previous = rewritten[rewritten.length - 1];
    const keyFlag = /^--(id|pair)=(.*)$/s.exec(arg);
    if (keyFlag && options[keyFlag[1] as string]?.type === "boolean") {
      rewritten.push(`--${keyFlag[1]}`, marker(keyFlag[2] as string));
    } else if (NEGATIVE_NUMBER.test(arg) && !args.slice(0, i).includes("--")) {
      const option = previous?.startsWith("--") && !previous.includes("=") ? options[previous.slice(2)] : undefined;
      if (option?.type === "string") rewritten[rewritten.length - 1] = `${previous}=${arg}`;
      else rewritten.push(marker(arg));
    } else {
      rewritten.push(arg);
    }
  }
  for (const arg of rewritten) {
    if (arg === "--") break;
    const name = /^--([^=]+)/.exec(arg)?.[1];
    if (name !== undefined && !(name in options)) {
      const near = nearest(name, Object.keys(options));
      throw new UsageError(`unknown option --${name}${near ? ` (did you mean --${near}?)` : ""}`);
    }
  }
  try {
    const parsed = parseArgs({ args: rewritten, options, allowPositionals: true, strict: true as const });
    const restore = (value: string) => (value.startsWith("\u0000") ? (stash[Number(value.slice(1))] as string) : value);
    return { ...parsed, positionals: parsed.positionals.map(restore) };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export function keyFormat(values: { id?: unknown; pair?: unknown }): KeyFormat {
  if (values.id && values.pair) throw new UsageError("--id and --pair cannot be used together");
  return values.id ? "id" : values.pair ? "pair" : "name";
}
