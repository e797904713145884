/**
 * What the delivery client and the remote source both read of the server's answers (internal).
 *
 * @module
 */
import { ImpelError } from "../core/errors.ts";

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

/** The longest Retry-After honoured (a proxy's "come back tomorrow" is not waited for whole). */
const MAX_RETRY_AFTER_MS = 10 * 60_000;

/**
 * A transient refusal (408/425/429/5xx), with the server's Retry-After if it gave one: core's
 * `retrying` waits at least `retryAfterMs` before the next attempt.
 */
export class SubscriptionUnavailableError extends ImpelError {
  readonly retryAfterMs: number;
  constructor(status: number, retryAfterMs: number) {
    super("SubscriptionUnavailable", `the server answered ${status}`);
    this.retryAfterMs = retryAfterMs;
  }
}

/** Retry-After as seconds or an HTTP date, in ms from now (0 when absent or unreadable). */
export function retryAfterMs(header: string | null): number {
  if (header === null) return 0;
  const ms = /^\s*\d+\s*$/.test(header) ? Number(header) * 1000 : Date.parse(header) - Date.now();
  return Number.isFinite(ms) ? Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms)) : 0;
}
