/**
 * Typed errors raised at impel's public boundary. Each carries a stable `code` so that callers
 * can branch without matching on messages.
 *
 * @module
 */

/**
 * Base class of every error impel throws on purpose.
 *
 * @example
 * ```ts
 * import { ImpelError, parseStreamName } from "@impel/impel";
 * try {
 *   parseStreamName("nodash");
 * } catch (e) {
 *   if (e instanceof ImpelError) console.log(e.code); // "InvalidStreamName"
 * }
 * ```
 *
 * @category Errors
 */
export class ImpelError extends Error {
  /** A stable identifier of the kind of error. */
  readonly code: string;
  /** Creates an error with a stable `code` and a message naming what was wrong. */
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * A value given to a public function was not acceptable; `field` names the offending option.
 *
 * @example
 * ```ts
 * import { InvalidArgumentError } from "@impel/impel";
 * const e = new InvalidArgumentError("maxConcurrentStreams", "must be a positive integer, got 0");
 * console.log(e.message); // "maxConcurrentStreams must be a positive integer, got 0"
 * ```
 *
 * @category Errors
 */
export class InvalidArgumentError extends ImpelError {
  /** The name of the argument or option that was rejected. */
  readonly field: string;
  /** Creates the error for `field`; `problem` completes the sentence "field ...". */
  constructor(field: string, problem: string) {
    super("InvalidArgument", `${field} ${problem}`);
    this.field = field;
  }
}

/** Throws {@linkcode InvalidArgumentError} unless `value` is an integer in `[min, max]`. */
export function checkInteger(
  field: string,
  value: unknown,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new InvalidArgumentError(field, `must be an integer ${range}, got ${describe(value)}`);
  }
  return value;
}

/** Throws {@linkcode InvalidArgumentError} unless `value` is a finite number `>= min`. */
export function checkNumber(field: string, value: unknown, min: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
    throw new InvalidArgumentError(
      field,
      `must be a finite number >= ${min}, got ${describe(value)}`,
    );
  }
  return value;
}

/** A short rendering of a rejected value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 80 ? value.slice(0, 77) + "..." : value);
  }
  if (typeof value === "bigint") return `${value}n`;
  if (value === null || typeof value !== "object") return String(value);
  return Array.isArray(value) ? `an array of ${value.length}` : "an object";
}
