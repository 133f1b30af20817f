/** Argument checks that run before anything touches the database; each error names the value and the rule. */
import { InvalidArgumentError } from "./errors.js";
import { describe } from "./key.js";

export function optionsObject(options: unknown, where: string): void {
  if (options === undefined) return;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new InvalidArgumentError(`${where}: options must be an object, got ${describe(options)}`);
  }
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

export function checkInteger(value: unknown, where: string, name: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidArgumentError(`${where}: ${name} must be an integer >= ${min}, got ${describe(value)}`);
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
  return value;
}
