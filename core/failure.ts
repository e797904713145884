/**
 * What happens when a handler throws: retry with exponential backoff, and a policy that decides
 * between retrying forever, dead-lettering the stream, parking it in a durable store, or
 * faulting the pipeline, for all streams or by stream name.
 *
 * @module
 */
import type { StreamEvent } from "./event.ts";
import { checkInteger, checkNumber, describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import { checkParkStore, type ParkStore } from "./park.ts";
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
 * The durable, ordered dead letter: after `maxAttempts` failed attempts the whole stream is
 * parked in `store`. The failing events and every later event of the stream are written there,
 * in order, instead of being handled, and the checkpoint moves past them once they are stored;
 * other streams carry on. If the store fails, the stream stays failing and the write is retried
 * (nothing is dropped). A parked stream stays parked across restarts (the sink reads the store
 * before it handles anything) until an operator releases it (its events are replayed through the
 * handler in order, then normal handling resumes) or skips it (its events are dropped, with the
 * reason recorded): see `ParkStore.request`, the HTTP routes and `impel parked`. The running sink
 * looks for such requests every `pollMs`.
 *
 * @example
 * ```ts
 * import { type ParkPolicy, streamsSink } from "@impel/impel";
 * import { memoryParkStore } from "@impel/impel/parked/memory";
 * const policy: ParkPolicy = { kind: "park", maxAttempts: 3, store: memoryParkStore() };
 * const sink = streamsSink({ group: "billing", handler: () => {}, failure: policy });
 * await sink.stop();
 * ```
 *
 * @category Failures
 */
export interface ParkPolicy {
  /** Selects this policy. */
  readonly kind: "park";
  /** Failed attempts after which the stream parks (at least 1). */
  readonly maxAttempts: number;
  /** Where parked streams are kept. */
  readonly store: ParkStore;
  /**
   * How often the running sink looks for release and skip requests, ms (default 1000); a claim
   * on a request lapses after ten times this when its sink is gone.
   */
  readonly pollMs?: number;
}

/**
 * Hands a failing stream's events to a callback after `maxAttempts` and moves the stream past
 * them; if the callback throws, the stream stays failing and is retried (nothing is lost). Later
 * events of the stream are handled as usual: for an ordered, durable variant use
 * {@linkcode ParkPolicy}.
 *
 * @example
 * ```ts
 * import type { DeadLetterPolicy } from "@impel/impel";
 * const policy: DeadLetterPolicy = {
 *   kind: "deadLetter",
 *   maxAttempts: 5,
 *   deadLetter: (failure) => console.error("dead-lettered", failure.stream, failure.error),
 * };
 * ```
 *
 * @category Failures
 */
export interface DeadLetterPolicy {
  /** Selects this policy. */
  readonly kind: "deadLetter";
  /** Failed attempts after which the events go to `deadLetter` (at least 1). */
  readonly maxAttempts: number;
  /** Takes the failing events; a throw (or rejection) keeps the stream failing. */
  readonly deadLetter: (failure: StreamFailure) => Promise<void> | void;
}

/**
 * What a {@linkcode StreamRule} can choose for the streams it matches: retry forever,
 * dead-letter, park, or fault the pipeline once one of them has failed `maxAttempts` times.
 *
 * @example
 * ```ts
 * import type { StreamPolicy } from "@impel/impel";
 * const policy: StreamPolicy = { kind: "fault", maxAttempts: 10 };
 * ```
 *
 * @category Failures
 */
export type StreamPolicy =
  | { readonly kind: "retry" }
  | DeadLetterPolicy
  | ParkPolicy
  | { readonly kind: "fault"; readonly maxAttempts?: number };

/**
 * One entry of a `byStream` failure policy: the streams whose names match `match` get `policy`.
 * `match` is a stream name in which `*` stands for any run of characters: `Payment-*` is every
 * stream of category `Payment`, `*` every stream.
 *
 * @example
 * ```ts
 * import type { StreamRule } from "@impel/impel";
 * import { memoryParkStore } from "@impel/impel/parked/memory";
 * const rule: StreamRule = {
 *   match: "Payment-*",
 *   policy: { kind: "park", maxAttempts: 3, store: memoryParkStore() },
 * };
 * ```
 *
 * @category Failures
 */
export interface StreamRule {
  /** A stream name pattern; `*` matches any characters. */
  readonly match: string;
  /** The policy of the matching streams. */
  readonly policy: StreamPolicy;
}

/**
 * How the scheduler reacts to a handler that throws. Every policy retries with backoff first.
 *
 * - `retry`: keep retrying; the stream shows as failing in stats until it succeeds.
 * - `deadLetter` ({@linkcode DeadLetterPolicy}): after `maxAttempts`, hand the events to
 *   `deadLetter` and move the stream past them.
 * - `park` ({@linkcode ParkPolicy}): after `maxAttempts`, park the whole stream, in order, in a
 *   durable store until it is released or skipped.
 * - `byStream`: a policy per stream name pattern, first match wins ({@linkcode StreamRule});
 *   streams no rule matches are retried forever. For example, streams of `Payment` park after
 *   3 attempts while all others retry.
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
 * import { memoryParkStore } from "@impel/impel/parked/memory";
 * const policy: FailurePolicy = {
 *   kind: "byStream",
 *   rules: [
 *     { match: "Payment-*", policy: { kind: "park", maxAttempts: 3, store: memoryParkStore() } },
 *     { match: "Audit-*", policy: { kind: "fault", maxAttempts: 5 } },
 *   ], // everything else retries forever
 * };
 * ```
 *
 * @category Failures
 */
export type FailurePolicy =
  | { readonly kind: "retry" }
  | DeadLetterPolicy
  | ParkPolicy
  | { readonly kind: "byStream"; readonly rules: readonly StreamRule[] }
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

/** Checks a failure policy at the public boundary; errors name the offending field. */
export function checkFailurePolicy(policy: FailurePolicy, field = "failure"): FailurePolicy {
  switch (policy?.kind) {
    case "retry":
      return policy;
    case "deadLetter":
      checkInteger(`${field}.maxAttempts`, policy.maxAttempts, 1);
      if (typeof policy.deadLetter !== "function") {
        throw new InvalidArgumentError(`${field}.deadLetter`, "must be a function");
      }
      return policy;
    case "park":
      checkInteger(`${field}.maxAttempts`, policy.maxAttempts, 1);
      checkParkStore(`${field}.store`, policy.store);
      if (policy.pollMs !== undefined) {
        checkNumber(`${field}.pollMs`, policy.pollMs, 1);
        // Timers take at most 2^31 - 1 ms: above, setInterval fires about every millisecond.
        if (policy.pollMs > MAX_TIMER_MS) {
          throw new InvalidArgumentError(
            `${field}.pollMs`,
            `must be at most ${MAX_TIMER_MS} ms (about 24.8 days), got ${policy.pollMs}`,
          );
        }
      }
      return policy;
    case "byStream": {
      if (field !== "failure") {
        throw new InvalidArgumentError(`${field}.kind`, `"byStream" cannot be nested`);
      }
      if (!Array.isArray(policy.rules) || policy.rules.length === 0) {
        throw new InvalidArgumentError(
          "failure.rules",
          `must be a non-empty array of { match, policy }, got ${describe(policy.rules)}`,
        );
      }
      policy.rules.forEach((rule, i) => {
        const at = `failure.rules[${i}]`;
        if (rule === null || typeof rule !== "object") {
          throw new InvalidArgumentError(at, `must be { match, policy }, got ${describe(rule)}`);
        }
        checkPattern(`${at}.match`, rule.match);
        const p = rule.policy as FailurePolicy;
        if (p?.kind === "fault") {
          const extra = Object.keys(p).filter((k) => k !== "kind" && k !== "maxAttempts");
          if (extra.length > 0) {
            throw new InvalidArgumentError(
              `${at}.policy.${extra[0]}`,
              "is a pipeline-wide limit: a rule's fault policy takes only maxAttempts",
            );
          }
        }
        checkFailurePolicy(p, `${at}.policy`);
      });
      return policy;
    }
    case "fault":
      if (policy.maxAttempts !== undefined) {
        checkInteger(`${field}.maxAttempts`, policy.maxAttempts, 1);
      }
      if (policy.maxFailingStreams !== undefined) {
        checkInteger(`${field}.maxFailingStreams`, policy.maxFailingStreams, 0);
      }
      if (policy.maxStuckMs !== undefined) {
        checkNumber(`${field}.maxStuckMs`, policy.maxStuckMs, 0);
      }
      if (policy.maxCommitFailureMs !== undefined) {
        checkNumber(`${field}.maxCommitFailureMs`, policy.maxCommitFailureMs, 0);
      }
      if (policy.maxSourceFailureMs !== undefined) {
        checkNumber(`${field}.maxSourceFailureMs`, policy.maxSourceFailureMs, 0);
      }
      return policy;
    default:
      throw new InvalidArgumentError(
        `${field}.kind`,
        `must be "retry", "deadLetter", "park", "byStream" or "fault", got ${
          JSON.stringify((policy as { kind?: unknown })?.kind)
        }`,
      );
  }
}

function checkPattern(field: string, match: unknown): string {
  if (typeof match !== "string" || match.length === 0 || match.length > 1_000) {
    throw new InvalidArgumentError(
      field,
      `must be a stream name pattern (1 to 1000 characters, * for any), got ${describe(match)}`,
    );
  }
  if (match.trim() !== match) {
    throw new InvalidArgumentError(
      field,
      `has leading or trailing spaces, so it never matches a stream name: ${describe(match)}`,
    );
  }
  if (!match.includes("-") && !match.includes("*")) {
    throw new InvalidArgumentError(
      field,
      `never matches a stream name (\`{category}-{id}\`: a name has a '-'; write ${
        describe(`${match}-*`)
      } for a category): ${describe(match)}`,
    );
  }
  return match;
}

/** The longest delay a timer takes (2^31 - 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The policy of each stream under a checked failure policy (never `byStream`). */
export type StreamPolicyOf = (stream: StreamName) => Exclude<FailurePolicy, { kind: "byStream" }>;

/**
 * Resolves a checked failure policy per stream: itself, or for `byStream` the policy of the
 * first rule whose pattern matches the stream name, else `retry`.
 */
export function streamPolicies(policy: FailurePolicy): StreamPolicyOf {
  if (policy.kind !== "byStream") return () => policy;
  const rules = policy.rules.map((r) => ({
    test: new RegExp(
      "^" + r.match.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(
        "[\\s\\S]*",
      ) + "$",
    ),
    policy: r.policy,
  }));
  const retry = { kind: "retry" } as const;
  return (stream) => rules.find((r) => r.test.test(stream))?.policy ?? retry;
}

/** The park policies a failure policy uses, one per distinct store. */
export function parkPolicies(policy: FailurePolicy): ParkPolicy[] {
  const all = policy.kind === "park"
    ? [policy]
    : policy.kind === "byStream"
    ? policy.rules.map((r) => r.policy).filter((p): p is ParkPolicy => p.kind === "park")
    : [];
  const byStore = new Map<ParkStore, ParkPolicy>();
  for (const p of all) {
    const seen = byStore.get(p.store);
    if (seen === undefined || (p.pollMs ?? 1000) < (seen.pollMs ?? 1000)) byStore.set(p.store, p);
  }
  return [...byStore.values()];
}

/** A one-line rendering of a thrown value. */
export function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
