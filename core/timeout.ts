/**
 * The one timeout: bound how long a promise may take, so that a hung store or handler turns
 * into a clear error instead of a stall.
 *
 * @module
 */
import { ImpelError } from "./errors.ts";

/**
 * A promise given to {@linkcode withTimeout} did not settle in time.
 *
 * @example
 * ```ts
 * import { TimeoutError, withTimeout } from "./timeout.ts";
 * const never = new Promise<void>(() => {});
 * await withTimeout(never, 10, "the final commit").catch((e) => {
 *   console.log(e instanceof TimeoutError, e.message); // true "the final commit took over 10 ms"
 * });
 * ```
 */
export class TimeoutError extends ImpelError {
  /** How long was waited, ms. */
  readonly ms: number;
  /** Creates the error; `what` names what took too long. */
  constructor(what: string, ms: number, code = "Timeout") {
    super(code, `${what} took over ${ms} ms`);
    this.ms = ms;
  }
}

/**
 * Resolves or rejects as `promise` does, or rejects with a {@linkcode TimeoutError} naming `what`
 * once `ms` have passed; the timer never keeps the process alive past the promise.
 *
 * @example
 * ```ts
 * import { withTimeout } from "./timeout.ts";
 * const value = await withTimeout(Promise.resolve(42), 1_000, "reading the head");
 * console.log(value); // 42
 * ```
 */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  code?: string,
  signal?: AbortSignal,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(what, ms, code)), ms);
    // Given up at once on `signal`, so that a stop waits neither for `ms` nor for an operation
    // that never settles (a query on a pool its owner ended meanwhile).
    if (signal === undefined) return;
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([promise, timeout]).finally(() => {
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
  });
}
