/**
 * What happens when a handler throws: retry with exponential backoff, and a policy that decides
 * between retrying forever, dead-lettering the stream, or faulting the pipeline.
 *
 * @module
 */
import type { StreamEvent } from "./event.ts";
import { checkInteger, checkNumber, ImpelError, InvalidArgumentError } from "./errors.ts";
import type { StreamName } from "./streamName.ts";

/**
 * Exponential backoff between attempts of a failing or stalled stream.
 *
 * @example
 * ```ts
 * import { type RetryOptions, streamsSink } from "@impel/impel";
 *
 * // 50 ms, 150 ms, 450 ms, ... up to 5 s, each spread by up to 20%.
 * const retry: RetryOptions = { initialDelayMs: 50, maxDelayMs: 5_000, factor: 3, jitter: 0.2 };
 * const sink = streamsSink({ handler: () => {}, retry });
 * await sink.stop();
 * ```
 *
 * @category Failures
 */
export interface RetryOptions {
  /** Delay before the second attempt (default 100 ms). */
  readonly initialDelayMs?: number;
  /** Upper bound of the delay (default 30 s). */
  readonly maxDelayMs?: number;
  /** Growth factor per attempt (default 2). */
  readonly factor?: number;
  /** Random spread as a fraction of the delay, 0..1 (default 0.1), so streams do not retry in lockstep. */
  readonly jitter?: number;
}

/**
 * A stream whose handler keeps failing, as handed to a dead-letter callback or named in a fault.
 *
 * @example
 * ```ts
 * import { run, type StreamFailure, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const parked: StreamFailure[] = [];
 * const sink = streamsSink({
 *   handler: () => {
 *     throw new Error("no such customer");
 *   },
 *   retry: { initialDelayMs: 1 },
 *   failure: { kind: "deadLetter", maxAttempts: 2, deadLetter: (f) => void parked.push(f) },
 * });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * for (const { stream, events, error, attempts, since } of parked) {
 *   console.log(stream, events.length, attempts, String(error), Date.now() - since >= 0);
 * } // Order-1 1 2 Error: no such customer true
 * ```
 *
 * @category Failures
 */
export interface StreamFailure {
  /** The failing stream. */
  readonly stream: StreamName;
  /** The events the last attempt was given. */
  readonly events: readonly StreamEvent[];
  /** The last error thrown. */
  readonly error: unknown;
  /** Consecutive failed attempts. */
  readonly attempts: number;
  /** When the first of those attempts failed (ms since epoch). */
  readonly since: number;
}

/**
 * How the scheduler reacts to a handler that throws. Every policy retries with backoff first.
 *
 * - `retry`: keep retrying; the stream shows as failing in stats until it succeeds.
 * - `deadLetter`: after `maxAttempts`, hand the events to `deadLetter` and move the stream past
 *   them; if `deadLetter` itself throws, the stream stays failing and is retried (nothing is lost).
 * - `fault`: stop the pipeline with a {@linkcode PipelineFaultError} once a stream has failed
 *   `maxAttempts` times (default 3), once more than `maxFailingStreams` streams are failing, or
 *   once a stream has been stuck (no progress while it has work: a hung handler, a handler that
 *   keeps returning without progress, a gap that never fills) for `maxStuckMs`, once a
 *   tranche's checkpoint commits have been failing for `maxCommitFailureMs`, or once the source
 *   has reported a failing problem (reads that keep failing, a consumer down) for
 *   `maxSourceFailureMs` (for sources run by `run()` that report `problems()`). All are checked
 *   on the sink's commit interval: a stuck fault comes at most `max(commitIntervalMs,
 *   maxStuckMs / 4)` after the limit is passed, the others at most `commitIntervalMs` after.
 *
 * @example
 * ```ts
 * import type { FailurePolicy } from "@impel/impel";
 * const policy: FailurePolicy = {
 *   kind: "deadLetter",
 *   maxAttempts: 5,
 *   deadLetter: (failure) => console.error("parked", failure.stream, failure.error),
 * };
 * ```
 *
 * @category Failures
 */
export type FailurePolicy =
  | { readonly kind: "retry" }
  | {
    readonly kind: "deadLetter";
    readonly maxAttempts: number;
    readonly deadLetter: (failure: StreamFailure) => Promise<void> | void;
  }
  | {
    readonly kind: "fault";
    readonly maxAttempts?: number;
    readonly maxFailingStreams?: number;
    readonly maxStuckMs?: number;
    readonly maxCommitFailureMs?: number;
    readonly maxSourceFailureMs?: number;
  };

/**
 * The pipeline stopped because failures passed the policy's threshold; `failures` names the
 * streams involved.
 *
 * @example
 * ```ts
 * import { PipelineFaultError } from "@impel/impel";
 * const e = new PipelineFaultError("too many failures", []);
 * console.log(e.code); // "PipelineFault"
 * ```
 *
 * @category Failures
 */
export class PipelineFaultError extends ImpelError {
  /** The failing streams at the time of the fault. */
  readonly failures: readonly StreamFailure[];
  /** Creates the error; `cause` defaults to the first failure's error. */
  constructor(reason: string, failures: readonly StreamFailure[], cause?: unknown) {
    const names = failures.slice(0, 5).map((f) =>
      `${f.stream} (${f.attempts} attempts: ${errorText(f.error)})`
    );
    const more = failures.length > 5 ? ` and ${failures.length - 5} more` : "";
    const streams = failures.length > 0 ? `; failing streams: ${names.join(", ")}${more}` : "";
    super("PipelineFault", `pipeline faulted: ${reason}${streams}`, {
      cause: cause ?? failures[0]?.error,
    });
    this.failures = failures;
  }
}

/**
 * A handler returned something other than an integer index or nothing. It counts as a failed
 * attempt, so the failure policy decides what happens next.
 *
 * @example
 * ```ts
 * import { InvalidHandlerResultError, PipelineFaultError, run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const sink = streamsSink({
 *   handler: (_stream, events) => events.length / 2, // a bug: 0.5 is not an index
 *   failure: { kind: "fault", maxAttempts: 1 },
 * });
 * await run(memorySource({ store }), sink).catch((e) => {
 *   if (e instanceof PipelineFaultError && e.cause instanceof InvalidHandlerResultError) {
 *     console.log(e.cause.message); // handler for Order-1 returned 0.5; expected an integer ...
 *   }
 * });
 * ```
 *
 * @category Failures
 */
export class InvalidHandlerResultError extends ImpelError {
  /** Creates the error naming the stream and the value returned. */
  constructor(stream: StreamName, value: unknown) {
    super(
      "InvalidHandlerResult",
      `handler for ${stream} returned ${String(value)}; expected an integer next index or nothing`,
    );
  }
}

/**
 * A stream's events are missing below what was read, in a source where they can never arrive
 * (a batch marked `gapsAreFinal`): a deleted message, or a row written around the store's lock.
 *
 * @example
 * ```ts
 * import { StreamGapError } from "@impel/impel";
 * const gap = new StreamGapError("Order-1", 3, 5);
 * console.log(gap.message); // Order-1: events 3 to 4 are missing and can never arrive (next present: 5); ...
 * ```
 *
 * @category Failures
 */
export class StreamGapError extends ImpelError {
  /** The stream. */
  readonly stream: StreamName;
  /** The first missing index (the stream's write position). */
  readonly missingFrom: number;
  /** The first index present after the gap. */
  readonly next: number;
  /** Creates the error. */
  constructor(stream: StreamName, missingFrom: number, next: number) {
    super(
      "StreamGap",
      `${stream}: events ${missingFrom} to ${
        next - 1
      } are missing and can never arrive (next present: ${next}); the sink's gaps option ` +
        `decides: "fault" (default), "skip" to carry on past it, "deadLetter" to park what follows`,
    );
    this.stream = stream;
    this.missingFrom = missingFrom;
    this.next = next;
  }
}

/** Backoff parameters with defaults applied and checked. */
export interface Backoff {
  /** The delay before attempt `attempt + 1`, given `attempt` failures so far (>= 1). */
  delay(attempt: number): number;
}

/** Builds a {@linkcode Backoff} from options, rejecting bad values with an {@linkcode InvalidArgumentError}. */
export function backoff(options: RetryOptions = {}): Backoff {
  const initial = checkNumber("retry.initialDelayMs", options.initialDelayMs ?? 100, 0);
  const max = checkNumber("retry.maxDelayMs", options.maxDelayMs ?? 30_000, initial);
  const factor = checkNumber("retry.factor", options.factor ?? 2, 1);
  const jitter = checkNumber("retry.jitter", options.jitter ?? 0.1, 0);
  if (jitter > 1) {
    throw new InvalidArgumentError("retry.jitter", `must be in [0, 1], got ${jitter}`);
  }
  return {
    delay(attempt) {
      const base = Math.min(max, initial * factor ** Math.max(0, attempt - 1));
      return base * (1 - jitter / 2 + Math.random() * jitter);
    },
  };
}

/** Checks a failure policy at the public boundary. */
export function checkFailurePolicy(policy: FailurePolicy): FailurePolicy {
  switch (policy?.kind) {
    case "retry":
      return policy;
    case "deadLetter":
      checkInteger("failure.maxAttempts", policy.maxAttempts, 1);
      if (typeof policy.deadLetter !== "function") {
        throw new InvalidArgumentError("failure.deadLetter", "must be a function");
      }
      return policy;
    case "fault":
      if (policy.maxAttempts !== undefined) {
        checkInteger("failure.maxAttempts", policy.maxAttempts, 1);
      }
      if (policy.maxFailingStreams !== undefined) {
        checkInteger("failure.maxFailingStreams", policy.maxFailingStreams, 0);
      }
      if (policy.maxStuckMs !== undefined) checkNumber("failure.maxStuckMs", policy.maxStuckMs, 0);
      if (policy.maxCommitFailureMs !== undefined) {
        checkNumber("failure.maxCommitFailureMs", policy.maxCommitFailureMs, 0);
      }
      if (policy.maxSourceFailureMs !== undefined) {
        checkNumber("failure.maxSourceFailureMs", policy.maxSourceFailureMs, 0);
      }
      return policy;
    default:
      throw new InvalidArgumentError(
        "failure.kind",
        `must be "retry", "deadLetter" or "fault", got ${
          JSON.stringify((policy as { kind?: unknown })?.kind)
        }`,
      );
  }
}

/** A one-line rendering of a thrown value. */
export function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
