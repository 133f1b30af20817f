/**
 * Credentials out of text that pglock prints or puts into an error: a connection string passed where
 * something else was expected must not leak its password into logs (issue #27).
 */

/** `postgres://user:secret@host` → `postgres://user:***@host`; `password=secret` → `password=***`. */
export function redact(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^@\s]*@/gi, "$1***@")
    .replace(/(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;]*)/gi, "$1***");
}
