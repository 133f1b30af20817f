/**
 * postgres.js and Bun's SQL infer no PostgreSQL type for a JS array of numbers or strings (postgres.js
 * would send it as "1,2"); pglock's array parameters (the batch) go as PostgreSQL array literals, as
 * pg sends them. Other values pass through.
 */
export function arrayLiteral(value: unknown): unknown {
  if (!Array.isArray(value)) return value;
  return `{${value.map((item) => (item === null ? "NULL" : `"${String(item).replace(/["\\]/g, "\\$&")}"`)).join(",")}}`;
}
