/**
 * What the delivery client and the remote source both read of the server's answers (internal).
 *
 * @module
 */

/**
 * The code and message of a delivery handler's error body, `{ error: { code, message } }` (the
 * management handler's shape); each `undefined` when the body is not of that shape (a proxy's
 * own error page).
 */
export function refusalOf(body: unknown): { code?: string; message?: string } {
  const error = (body as { error?: unknown } | null)?.error as
    | { code?: unknown; message?: unknown }
    | null
    | undefined;
  if (error === null || typeof error !== "object") return {};
  const text = (v: unknown) => typeof v === "string" ? v : undefined;
  return { code: text(error.code), message: text(error.message) };
}

/** Statuses that say "later", not "no" (a timeout, too early, rate limited): retried, like 5xx. */
export const RETRIED_4XX: ReadonlySet<number> = new Set([408, 425, 429]);
