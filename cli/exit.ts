/**
 * The CLI's exit codes and the failures that carry them. Internal to the `impel` command line.
 *
 * @module
 */
import { ImpelError } from "../core/errors.ts";

/**
 * The exit codes that scripts can rely on. `interrupted` (130, 128 + SIGINT, as shells report a
 * process a Ctrl-C ended) is a long-running command that Ctrl-C stopped before it was done
 * (`impel replay`); a second Ctrl-C, or one during a command that does not take it over, ends the
 * process with it too.
 *
 * @example
 * ```ts
 * import { EXIT } from "@impel/impel/cli";
 * // impel checkpoints show --source messagedb --group reactor; [ $? -eq 4 ] && echo "none yet"
 * console.log(EXIT.notFound); // 4
 * ```
 */
export const EXIT: {
  readonly ok: 0;
  readonly failed: 1;
  readonly usage: 2;
  readonly unavailable: 3;
  readonly notFound: 4;
  readonly connection: 5;
  readonly interrupted: 130;
} = { ok: 0, failed: 1, usage: 2, unavailable: 3, notFound: 4, connection: 5, interrupted: 130 };

/** A failure with the exit code it maps to. */
export class CliError extends ImpelError {
  /** The process exit code, one of {@linkcode EXIT}. */
  readonly exitCode: number;
  /** Creates a failure that ends the command with `exitCode`. */
  constructor(exitCode: number, code: string, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.exitCode = exitCode;
  }
}

/** A usage error (exit 2): the command line itself is wrong. */
export const usage = (message: string): CliError => new CliError(EXIT.usage, "Usage", message);

/** Nothing to act on (exit 4): no checkpoints, no such table or tranche. */
export const notFound = (message: string): CliError =>
  new CliError(EXIT.notFound, "NotFound", message);

/** A missing impel module or backend schema (exit 3). */
export const unavailable = (message: string, cause?: unknown): CliError =>
  new CliError(EXIT.unavailable, "NotAvailable", `not available: ${message}`, { cause });

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ECONNRESET",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "3D000",
  "28P01",
  "28000",
]);

/** Whether `error` (or one of its causes) means the backend could not be reached (exit 5). */
export function isConnectionError(error: unknown): boolean {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_CODES.has(code)) return true;
    if (/ECONNREFUSED|connection refused|getaddrinfo/i.test(String((e as Error).message ?? ""))) {
      return true;
    }
    const errors = (e as { errors?: unknown[] }).errors;
    if (Array.isArray(errors) && errors.some(isConnectionError)) return true;
  }
  return false;
}
