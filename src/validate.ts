/** Argument checks that run before anything touches the database; each error names the value and the rule. */
import { InvalidArgumentError } from "./errors.js";
import { describe } from "./key.js";

/**
 * `options` is undefined or an object whose every property is one of `known`: a misspelt option
 * (`{ timout: 5000 }`) would otherwise be ignored in silence (issue #27).
 */
export function optionsObject(options: unknown, where: string, known: readonly string[]): void {
  if (options === undefined) return;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new InvalidArgumentError(`${where}: options must be an object, got ${describe(options)}`);
  }
  for (const name of Object.keys(options)) {
    if (known.includes(name)) continue;
    const near = nearest(name, known);
    throw new InvalidArgumentError(
      `${where}: unknown option ${JSON.stringify(name)}${near ? ` (did you mean ${JSON.stringify(near)}?)` : ""}; ` +
        `the options are ${known.join(", ")}`,
    );
  }
}

/** The one of `known` that `name` was probably meant to be (a typo or two away), for "did you mean". */
export function nearest(name: string, known: readonly string[]): string | undefined {
  return known.find((candidate) => editDistance(candidate.toLowerCase(), name.toLowerCase()) <= 2);
}

/** Levenshtein distance, for "did you mean". */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length] as number;
}

export function checkSignal(signal: unknown, where: string): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError(`${where}: options.signal must be an AbortSignal, got ${describe(signal)}`);
  }
  return signal;
}

export function checkString(value: unknown, where: string, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length === 0) {
    throw new InvalidArgumentError(`${where}: options.${name} must be a non-empty string, got ${describe(value)}`);
  }
  return value;
}

export function checkBoolean(value: unknown, where: string, name: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "boolean") {
    throw new InvalidArgumentError(`${where}: options.${name} must be a boolean, got ${describe(value)}`);
  }
  return value;
}

/** A duration in milliseconds: finite, >= 0, at most 2^31-1 (setTimeout's limit). */
export function checkMs(value: unknown, where: string, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > 2 ** 31 - 1) {
    throw new InvalidArgumentError(
      `${where}: options.${name} must be a number of milliseconds in [0, 2147483647], got ${describe(value)}`,
    );
  }
  return value;
}

export function checkInteger(
  value: unknown,
  where: string,
  name: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    const rule = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new InvalidArgumentError(`${where}: ${name} must be an integer ${rule}, got ${describe(value)}`);
  }
  return value;
}

/** A table name pglock puts into SQL (identifiers cannot be parameters): `name` or `schema.name`, lower case. */
export function checkTableName(value: unknown, where: string, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !/^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$/.test(value)) {
    throw new InvalidArgumentError(
      `${where}: options.${name} must be a lower-case SQL name, optionally schema-qualified (like pglock_fencing), got ${describe(value)}`,
    );
  }
  const reserved = value.split(".").find((part) => RESERVED.has(part));
  if (reserved !== undefined) {
    throw new InvalidArgumentError(
      `${where}: options.${name} must not be a word PostgreSQL reserves (${JSON.stringify(reserved)} would need quotes in every statement); pick another name, like pglock_${reserved}`,
    );
  }
  return value;
}

/**
 * The key words PostgreSQL reserves, which cannot name a table unquoted (both "reserved" columns of
 * https://www.postgresql.org/docs/current/sql-keywords-appendix.html).
 */
const RESERVED = new Set(
  (
    "all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate collation " +
    "column concurrently constraint create cross current_catalog current_date current_role current_schema current_time " +
    "current_timestamp current_user default deferrable desc distinct do else end except false fetch for foreign freeze " +
    "from full grant group having ilike in initially inner intersect into is isnull join lateral leading left like limit " +
    "localtime localtimestamp natural not notnull null offset on only or order outer overlaps placing primary references " +
    "returning right select session_user similar some symmetric system_user table tablesample then to trailing true " +
    "union unique user using variadic verbose when where window with"
  ).split(" "),
);
