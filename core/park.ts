/**
 * Parked streams: the park-store contract every backend implements, the records it keeps, and
 * the typed errors of its operations.
 *
 * A stream is parked by the `park` failure policy once its handler has failed `maxAttempts`
 * times: the failing events and every later event of the stream go to a {@linkcode ParkStore},
 * in order, instead of to the handler, and the checkpoint moves past them once they are stored.
 * Each time a stream parks starts an _episode_; an operator then asks for it to be released
 * (its events replayed through the handler, in order) or skipped (its events dropped, with a
 * reason). The request is recorded in the store; the running sink of the group claims it (so
 * that one sink acts on it even when several run), applies it and records the resolution.
 *
 * @module
 */
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import type { StreamEvent } from "./event.ts";
import type { StreamName } from "./streamName.ts";

/**
 * What an operator can ask for a parked stream: replay its events, or drop them.
 *
 * @example
 * ```ts
 * import type { ParkAction } from "@impel/impel";
 * const action: ParkAction = "release";
 * ```
 *
 * @category Parked streams
 */
export type ParkAction = "release" | "skip";

/**
 * The failure that parked a stream, as stored: the error as text, the attempts made and when.
 *
 * @example
 * ```ts
 * import type { ParkedFailure } from "@impel/impel";
 * const failure: ParkedFailure = {
 *   error: "Error: no such customer",
 *   attempts: 3,
 *   firstFailedAt: Date.now() - 1_000,
 *   lastFailedAt: Date.now(),
 * };
 * ```
 *
 * @category Parked streams
 */
export interface ParkedFailure {
  /** The last error, as text (`Name: message`). */
  readonly error: string;
  /** Consecutive failed attempts. */
  readonly attempts: number;
  /** When the first of them failed (ms since the epoch). */
  readonly firstFailedAt: number;
  /** When the last of them failed (ms since the epoch). */
  readonly lastFailedAt: number;
}

/**
 * One stream's part of a {@linkcode ParkStore.park} call.
 *
 * @example
 * ```ts
 * import type { ParkWrite } from "@impel/impel";
 * const write: ParkWrite = {
 *   stream: "Payment-1",
 *   events: [],
 *   failure: { error: "Error: declined", attempts: 3, firstFailedAt: 0, lastFailedAt: 1 },
 * };
 * ```
 *
 * @category Parked streams
 */
export interface ParkWrite {
  /** The stream. */
  readonly stream: StreamName;
  /**
   * Events to add, in ascending index order; those stored already (or below the episode's
   * `first`, handled) are ignored, so a write can be repeated safely.
   */
  readonly events: readonly StreamEvent[];
  /**
   * Set when the stream parks because it failed: starts an episode when none is active, or
   * (a release that failed again) updates the active one's error, attempts and last failure
   * time and clears its request and claim, recording a release being applied as a `failed`
   * entry of the history. Without it, the write only adds events to the
   * active episode.
   */
  readonly failure?: ParkedFailure;
  /**
   * With `failure`: the events below this index were handled by a release before it failed
   * again, and leave the episode.
   */
  readonly handledTo?: number;
  /**
   * The tranche the stream was read from (as its batches name it), recorded on the episode so
   * that, with several members, only the member owning that tranche claims its requests. A
   * write without it keeps what the episode has.
   */
  readonly tranche?: string;
}

/**
 * What a {@linkcode ParkWrite} did: `parked` (the events are stored), or `notParked` (a write
 * without `failure` found no active episode: it was released or skipped meanwhile, and the
 * caller handles the events itself).
 *
 * @example
 * ```ts
 * import type { ParkWriteOutcome } from "@impel/impel";
 * const outcome: ParkWriteOutcome = "parked";
 * ```
 *
 * @category Parked streams
 */
export type ParkWriteOutcome = "parked" | "notParked";

/**
 * A release or skip asked for by an operator.
 *
 * @example
 * ```ts
 * import type { ParkRequest } from "@impel/impel";
 * const request: ParkRequest = {
 *   action: "skip",
 *   by: "alice",
 *   reason: "test payment, refunded by hand",
 *   at: Date.now(),
 * };
 * ```
 *
 * @category Parked streams
 */
export interface ParkRequest {
  /** What was asked for. */
  readonly action: ParkAction;
  /** Who asked. */
  readonly by: string;
  /** Why (required for a skip). */
  readonly reason?: string;
  /** When (ms since the epoch). */
  readonly at: number;
  /**
   * A skip's bound: only the events below this index are dropped (the episode's `next` when it
   * was asked, unless the operator named one), so that events parked after the operator looked
   * are never dropped unseen; they stay parked, in the same episode. Absent on requests recorded
   * before skips were bounded: such a skip drops the whole episode.
   */
  readonly upTo?: number;
}

/**
 * A sink's claim on a request: it alone applies it until `until`, and renews the claim while it
 * works. The store gives each claim a new `token`; renewing, giving up and resolving name it, and
 * are refused once the claim has lapsed or been taken (a fenced claim), so a sink that was
 * paused past `until` cannot go on with a request someone else may be applying now.
 *
 * @example
 * ```ts
 * import type { ParkClaim } from "@impel/impel";
 * const claim: ParkClaim = { by: "reactor-1f3a", until: Date.now() + 10_000, token: "b3c1…" };
 * ```
 *
 * @category Parked streams
 */
export interface ParkClaim {
  /** The sink instance holding it. */
  readonly by: string;
  /** When it lapses unless renewed (ms since the epoch). */
  readonly until: number;
  /** Identifies this claim (opaque; new for every claim taken, kept by renewals). */
  readonly token: string;
}

/**
 * How an episode ended.
 *
 * @example
 * ```ts
 * import type { ParkResolution } from "@impel/impel";
 * const resolution: ParkResolution = {
 *   action: "skip",
 *   by: "alice",
 *   reason: "duplicate payment",
 *   at: Date.now(),
 *   appliedBy: "reactor-1f3a",
 *   events: 2,
 * };
 * ```
 *
 * @category Parked streams
 */
export interface ParkResolution {
  /** Released (replayed through the handler) or skipped (dropped). */
  readonly action: ParkAction;
  /** Who asked for it. */
  readonly by: string;
  /** Why, as given. */
  readonly reason?: string;
  /** When it was applied (ms since the epoch). */
  readonly at: number;
  /** The sink instance that applied it. */
  readonly appliedBy: string;
  /**
   * How many events were still parked when it was applied (for a bounded skip, how many it
   * dropped); for a `failed` release, how many it handled before it failed.
   */
  readonly events: number;
  /** A skip's bound (see {@linkcode ParkRequest.upTo}), when it had one. */
  readonly upTo?: number;
}

/**
 * One episode of a parked stream, as a store keeps it.
 *
 * @example
 * ```ts
 * import { memoryParkStore } from "@impel/impel/parked/memory";
 * import type { ParkedStream } from "@impel/impel";
 * const store = memoryParkStore();
 * await store.park("billing", [{
 *   stream: "Payment-1",
 *   events: [],
 *   failure: { error: "Error: declined", attempts: 3, firstFailedAt: 0, lastFailedAt: 1 },
 * }]);
 * const parked: ParkedStream | undefined = await store.get("billing", "Payment-1");
 * console.log(parked?.state, parked?.attempts, parked?.error); // "parked" 3 "Error: declined"
 * ```
 *
 * @category Parked streams
 */
export interface ParkedStream {
  /** The consumer group. */
  readonly group: string;
  /** The stream. */
  readonly stream: StreamName;
  /** The tranche the stream was last parked from, when the writer said (see `ParkWrite`). */
  readonly tranche?: string;
  /** Identifies the episode among the stream's episodes (opaque). */
  readonly episode: string;
  /**
   * `parked` while active; `released` or `skipped` once resolved. `failed` is the record (in the
   * history, never active) of a release that failed again: the stream parked again in the same
   * episode, which stays active with the events the release did not handle; the record keeps
   * who asked, why, which sink applied it, how many events it handled (`resolution.events`) and
   * the error it failed with (`error`, `attempts`, `lastFailedAt`).
   */
  readonly state: "parked" | "released" | "skipped" | "failed";
  /** The lowest index still parked (where a release starts). */
  readonly first: number;
  /** One past the highest index parked. */
  readonly next: number;
  /** Events parked now (0 once resolved). */
  readonly events: number;
  /** The last error, as text. */
  readonly error: string;
  /** Attempts made before the stream (last) parked. */
  readonly attempts: number;
  /** When the first failure of the episode happened (ms since the epoch). */
  readonly firstFailedAt: number;
  /** When the last failure happened (ms since the epoch). */
  readonly lastFailedAt: number;
  /** When the episode began (ms since the epoch). */
  readonly parkedAt: number;
  /** A pending release or skip. */
  readonly request?: ParkRequest;
  /** The sink applying the request, while it does. */
  readonly claim?: ParkClaim;
  /**
   * How the episode ended, once resolved. Also set on the still active episode that
   * {@linkcode ParkStore.resolve} answers for a bounded skip that left events at or above its
   * bound parked: what that skip dropped (the history keeps it as a `skipped` entry).
   */
  readonly resolution?: ParkResolution;
}

/**
 * Which episodes {@linkcode ParkStore.list} returns.
 *
 * @example
 * ```ts
 * import type { ParkListOptions } from "@impel/impel";
 * const pending: ParkListOptions = { requested: true };
 * ```
 *
 * @category Parked streams
 */
export interface ParkListOptions {
  /** Only active episodes with a pending request (what a running sink polls for). */
  readonly requested?: boolean;
  /** Also resolved episodes (the history), after the active ones of each stream. */
  readonly resolved?: boolean;
}

/**
 * A claim asked for with {@linkcode ParkStore.claim}: a new one (no `token`), or a renewal or
 * give-up of the claim `token` names.
 *
 * @example
 * ```ts
 * import type { ParkClaimRequest } from "@impel/impel";
 * const renew: ParkClaimRequest = {
 *   by: "reactor-1f3a",
 *   token: "b3c1…", // from the claim taken
 *   until: Date.now() + 10_000,
 *   handledTo: 7,
 * };
 * ```
 *
 * @category Parked streams
 */
export interface ParkClaimRequest {
  /** The claiming sink instance. */
  readonly by: string;
  /**
   * The claim renewed or given up; refused (`undefined`) unless it is still the episode's claim
   * and has not lapsed. Without it, a new claim is taken (with a new token) if none is held.
   */
  readonly token?: string;
  /** Until when (ms since the epoch); a time in the past gives the claim up. */
  readonly until: number;
  /** Progress of a release: the events below this index are handled and leave the episode. */
  readonly handledTo?: number;
}

/**
 * Where parked streams are kept: {@linkcode memoryParkStore} (tests), `postgresParkStore`
 * (`@impel/impel/parked/postgres`) and `dynamoParkStore` (`@impel/impel/parked/dynamo`). Every
 * operation is keyed by consumer group; every store passes one contract test suite
 * (`tests/parked/contract.ts`).
 *
 * @example
 * ```ts
 * import { memoryParkStore } from "@impel/impel/parked/memory";
 * import type { ParkStore } from "@impel/impel";
 * const store: ParkStore = memoryParkStore();
 * await store.park("billing", [{
 *   stream: "Payment-1",
 *   events: [],
 *   failure: { error: "Error: declined", attempts: 3, firstFailedAt: 0, lastFailedAt: 1 },
 * }]);
 * await store.request("billing", "Payment-1", { action: "skip", by: "alice", reason: "refunded" });
 * console.log((await store.list("billing", { requested: true })).length); // 1
 * ```
 *
 * @category Parked streams
 */
export interface ParkStore {
  /**
   * Stores events of parked streams, one {@linkcode ParkWrite} per stream (a stream at most once
   * per call), atomically per stream; resolves with each write's outcome, in order.
   */
  park(group: string, writes: readonly ParkWrite[]): Promise<readonly ParkWriteOutcome[]>;
  /**
   * Episodes of `group` (every group when omitted), by group, stream and age: the active ones,
   * and with `resolved` the history too. Event counts, not events.
   */
  list(group?: string, options?: ParkListOptions): Promise<readonly ParkedStream[]>;
  /** The stream's active episode, else its latest resolved one, else `undefined`. */
  get(group: string, stream: StreamName): Promise<ParkedStream | undefined>;
  /**
   * Up to `limit` events of an active episode from index `from` (or its `first`, if higher), in
   * index order; none once the episode is resolved. Exactly `limit` events unless the episode
   * has no more: a shorter answer ends the episode for its reader (a store whose backend pages,
   * such as DynamoDB's 1 MB Query pages, reads on until it has `limit` or the end).
   */
  events(
    group: string,
    stream: StreamName,
    episode: string,
    from: number,
    limit: number,
  ): Promise<readonly StreamEvent[]>;
  /**
   * Records a release or skip of the stream's active episode; idempotent: the same action again
   * (pending, or already applied and no new episode since) changes nothing and answers the
   * episode. Another action replaces a pending one that no sink has claimed. A skip records its
   * bound (`upTo`, default the episode's `next` now; see {@linkcode ParkRequest.upTo}). Throws
   * {@linkcode StreamNotParkedError} when the stream is not parked,
   * {@linkcode ParkRequestConflictError} when another action is being applied, and
   * `InvalidArgumentError` for an `upTo` not above the episode's `first` or above its `next`.
   */
  request(
    group: string,
    stream: StreamName,
    request: ParkRequestInput,
  ): Promise<ParkedStream>;
  /**
   * Claims (or with `token` renews, or with a past `until` gives up) the pending request of an
   * active episode for one sink; answers the episode, or `undefined` if the episode is not
   * active, has no request, a claim is held and has not lapsed (a new claim), or the claim
   * `token` names has lapsed or been replaced (a renewal: the sink must stop applying it).
   */
  claim(
    group: string,
    stream: StreamName,
    episode: string,
    claim: ParkClaimRequest,
  ): Promise<ParkedStream | undefined>;
  /**
   * Applies the claimed request: the episode becomes `released` or `skipped`, with the
   * requester, reason and `by` recorded, and its events are dropped. A release resolves only if
   * the episode's `next` is still `expectedNext` (no events were added since the caller read
   * them). A skip with a bound (`request.upTo`) drops only the events below it: if the episode
   * has events at or above it, it stays active (its `first` the bound, request and claim
   * cleared), the skip is recorded in the history as a `skipped` entry, and the answer is the
   * active episode with `resolution` saying what was dropped. Answers the resolved episode, or
   * `undefined` if nothing changed (not active, the claim `token` names has lapsed or is not the
   * episode's any more, or `next` moved).
   */
  resolve(
    group: string,
    stream: StreamName,
    episode: string,
    resolution: { readonly by: string; readonly token: string; readonly expectedNext?: number },
  ): Promise<ParkedStream | undefined>;
}

/**
 * What an operator asks with {@linkcode ParkStore.request}: the action, who, why (required for a
 * skip) and, for a skip, optionally the bound (`upTo`: drop the events below this index only).
 *
 * @example
 * ```ts
 * import type { ParkRequestInput } from "@impel/impel";
 * const ask: ParkRequestInput = { action: "skip", by: "alice", reason: "refunded", upTo: 2 };
 * ```
 *
 * @category Parked streams
 */
export interface ParkRequestInput {
  /** What is asked for. */
  readonly action: ParkAction;
  /** Who asks. */
  readonly by: string;
  /** Why (required for a skip). */
  readonly reason?: string;
  /** A skip's bound; default: the episode's `next` when asked. Refused for a release. */
  readonly upTo?: number;
}

/**
 * Whether `request` asks the same as the standing request `pending`: same action, requester,
 * reason and (when `upTo` is given) bound. The same request again changes nothing; a different
 * one of the same action is refused by the HTTP and CLI front ends rather than dropped silently.
 *
 * @example
 * ```ts
 * import { sameParkRequest } from "./park.ts";
 * const pending = { action: "skip" as const, by: "alice", reason: "r", at: 0, upTo: 2 };
 * console.log(sameParkRequest(pending, { action: "skip", by: "alice", reason: "r" })); // true
 * ```
 */
export function sameParkRequest(pending: ParkRequest, request: ParkRequestInput): boolean {
  return pending.action === request.action && pending.by === request.by &&
    (pending.reason ?? undefined) === (request.reason ?? undefined) &&
    (request.upTo === undefined || pending.upTo === request.upTo);
}

/**
 * The bound a skip of `entry` records: the operator's `upTo`, checked against the episode, or the
 * episode's `next` now. Throws {@linkcode InvalidArgumentError} naming `upTo` when it is not an
 * integer above `first` and at most `next`, or is given for a release.
 *
 * @example
 * ```ts
 * import { skipBound } from "./park.ts";
 * console.log(skipBound({ first: 0, next: 5 }, { action: "skip", by: "a", reason: "r" })); // 5
 * ```
 */
export function skipBound(
  entry: { readonly first: number; readonly next: number },
  request: ParkRequestInput,
): number | undefined {
  if (request.action !== "skip") {
    if (request.upTo !== undefined) {
      throw new InvalidArgumentError("upTo", "is for a skip only (a release replays every event)");
    }
    return undefined;
  }
  if (request.upTo === undefined) return entry.next;
  const upTo = checkInteger("upTo", request.upTo, 0);
  if (upTo <= entry.first || upTo > entry.next) {
    throw new InvalidArgumentError(
      "upTo",
      `must be above the episode's first parked index (${entry.first}) and at most its next (${entry.next}), got ${upTo}`,
    );
  }
  return upTo;
}

/**
 * A release or skip was asked for a stream that is not parked in the group.
 *
 * @example
 * ```ts
 * import { memoryParkStore } from "@impel/impel/parked/memory";
 * import { StreamNotParkedError } from "@impel/impel";
 * const store = memoryParkStore();
 * await store.request("billing", "Payment-1", { action: "release", by: "alice" }).catch((e) => {
 *   console.log(e instanceof StreamNotParkedError, e.code); // true "StreamNotParked"
 * });
 * ```
 *
 * @category Parked streams
 */
export class StreamNotParkedError extends ImpelError {
  /** The group. */
  readonly group: string;
  /** The stream. */
  readonly stream: StreamName;
  /** Creates the error. */
  constructor(group: string, stream: StreamName) {
    super("StreamNotParked", `stream ${stream} is not parked in group ${group}`);
    this.group = group;
    this.stream = stream;
  }
}

/**
 * A release or skip was asked while the other one is being applied to the same episode.
 *
 * @example
 * ```ts
 * import { ParkRequestConflictError } from "@impel/impel";
 * const e = new ParkRequestConflictError("billing", "Payment-1", "release", "skip");
 * console.log(e.code, e.message);
 * // "ParkRequestConflict" "stream Payment-1 of group billing is being released; ..."
 * ```
 *
 * @category Parked streams
 */
export class ParkRequestConflictError extends ImpelError {
  /** Creates the error: `pending` is being applied, `asked` was refused. */
  constructor(group: string, stream: StreamName, pending: ParkAction, asked: ParkAction) {
    super(
      "ParkRequestConflict",
      `stream ${stream} of group ${group} is being ${
        pending === "release" ? "released" : "skipped"
      }; a ${asked} can be asked once that is done`,
    );
  }
}

const PARK_STORE_METHODS = [
  "park",
  "list",
  "get",
  "events",
  "request",
  "claim",
  "resolve",
] as const;

/**
 * Throws {@linkcode InvalidArgumentError} naming `field` unless `value` is a {@linkcode ParkStore}.
 *
 * @example
 * ```ts
 * import { checkParkStore } from "./park.ts";
 * import { memoryParkStore } from "../parked/memory.ts";
 * checkParkStore("failure.store", memoryParkStore());
 * ```
 */
export function checkParkStore(field: string, value: unknown): ParkStore {
  const missing = value === null || typeof value !== "object"
    ? undefined
    : PARK_STORE_METHODS.find((m) => typeof (value as Record<string, unknown>)[m] !== "function");
  if (value === null || typeof value !== "object" || missing !== undefined) {
    throw new InvalidArgumentError(
      field,
      `must be a ParkStore (memoryParkStore, postgresParkStore, dynamoParkStore)${
        missing ? `; it has no ${missing}()` : ""
      }, got ${describe(value)}`,
    );
  }
  return value as ParkStore;
}

const MAX_NAME = 1_000;

/**
 * Throws {@linkcode InvalidArgumentError} unless `value` is a non-empty string of at most 1000
 * characters.
 *
 * @example
 * ```ts
 * import { checkParkName } from "./park.ts";
 * checkParkName("group", "billing"); // "billing"
 * ```
 */
export function checkParkName(field: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_NAME) {
    throw new InvalidArgumentError(
      field,
      `must be a non-empty string of at most ${MAX_NAME} characters, got ${describe(value)}`,
    );
  }
  return value;
}

/**
 * Checks a request at the public boundary: a known action, who asks, and a reason for a skip.
 *
 * @example
 * ```ts
 * import { checkParkRequest } from "./park.ts";
 * checkParkRequest({ action: "skip", by: "alice", reason: "refunded by hand" });
 * ```
 */
export function checkParkRequest(request: ParkRequestInput): ParkRequestInput {
  if (request === null || typeof request !== "object") {
    throw new InvalidArgumentError("request", `must be an object, got ${describe(request)}`);
  }
  if (request.action !== "release" && request.action !== "skip") {
    throw new InvalidArgumentError(
      "action",
      `must be "release" or "skip", got ${describe(request.action)}`,
    );
  }
  checkParkName("by", request.by);
  if (request.reason !== undefined || request.action === "skip") {
    if (typeof request.reason !== "string" || request.reason.trim() === "") {
      throw new InvalidArgumentError(
        "reason",
        `must be a non-empty string${request.action === "skip" ? " (a skip needs one)" : ""}, got ${
          describe(request.reason)
        }`,
      );
    }
    if (request.reason.length > 2_000) {
      throw new InvalidArgumentError("reason", "must be at most 2000 characters");
    }
  }
  if (request.upTo !== undefined) checkInteger("upTo", request.upTo, 0);
  return request;
}

/**
 * Checks the arguments of {@linkcode ParkStore.park} at a store's boundary: names, one write per
 * stream, ascending event indexes, a well-formed failure.
 *
 * @example
 * ```ts
 * import { checkParkWrites } from "./park.ts";
 * checkParkWrites("billing", [{ stream: "Payment-1", events: [] }]);
 * ```
 */
export function checkParkWrites(group: string, writes: readonly ParkWrite[]): void {
  checkParkName("group", group);
  if (!Array.isArray(writes)) {
    throw new InvalidArgumentError("writes", `must be an array, got ${describe(writes)}`);
  }
  const seen = new Set<string>();
  writes.forEach((w, i) => {
    const stream = checkParkName(`writes[${i}].stream`, w?.stream);
    if (seen.has(stream)) {
      throw new InvalidArgumentError(`writes[${i}].stream`, `names ${stream} a second time`);
    }
    seen.add(stream);
    if (!Array.isArray(w.events)) {
      throw new InvalidArgumentError(`writes[${i}].events`, "must be an array");
    }
    let last = -1;
    (w.events as readonly StreamEvent[]).forEach((e, k) => {
      const index = checkInteger(`writes[${i}].events[${k}].index`, e?.index, 0);
      if (index <= last) {
        throw new InvalidArgumentError(
          `writes[${i}].events[${k}].index`,
          `must be above the previous event's (${last}), got ${index}`,
        );
      }
      last = index;
    });
    if (w.failure !== undefined) {
      const f = w.failure;
      if (typeof f?.error !== "string") {
        throw new InvalidArgumentError(`writes[${i}].failure.error`, "must be a string");
      }
      checkInteger(`writes[${i}].failure.attempts`, f.attempts, 0);
      checkInteger(`writes[${i}].failure.firstFailedAt`, f.firstFailedAt, 0);
      checkInteger(`writes[${i}].failure.lastFailedAt`, f.lastFailedAt, 0);
    }
    if (w.handledTo !== undefined) checkInteger(`writes[${i}].handledTo`, w.handledTo, 0);
    if (w.tranche !== undefined) checkParkName(`writes[${i}].tranche`, w.tranche);
  });
}

/**
 * Some writes of one {@linkcode ParkStore.park} call failed and the others were done: `outcomes`
 * holds the outcome of each write that was done and `errors` the error of each that was not (by
 * index in the call), so that one write a store cannot take (an event too large, say) fails its
 * own stream only. A sink retries the failed streams alone.
 *
 * @example
 * ```ts
 * import { ParkWritesError } from "@impel/impel";
 * const e = new ParkWritesError(["parked", undefined], [undefined, new Error("too large")]);
 * console.log(e.code, e.outcomes[0], String(e.errors[1])); // "ParkWrites" "parked" "Error: too large"
 * ```
 *
 * @category Parked streams
 */
export class ParkWritesError extends ImpelError {
  /** The outcome of each write done (`undefined` where it failed). */
  readonly outcomes: readonly (ParkWriteOutcome | undefined)[];
  /** The error of each write that failed (`undefined` where it was done). */
  readonly errors: readonly unknown[];
  /** Creates the error from the per-write results of one call. */
  constructor(outcomes: readonly (ParkWriteOutcome | undefined)[], errors: readonly unknown[]) {
    const failed = errors.filter((e) => e !== undefined);
    super(
      "ParkWrites",
      `${failed.length} of ${outcomes.length} park writes failed; first: ${
        (failed[0] as Error)?.message ?? failed[0]
      }`,
      { cause: failed[0] },
    );
    this.outcomes = outcomes;
    this.errors = errors;
  }
}

/** New claims' tokens: unguessable, so a sink cannot renew a claim it was not given. */
export function newClaimToken(): string {
  return crypto.randomUUID();
}

/**
 * Cuts an error text to at most `maxBytes` bytes of UTF-8 (never inside a character), saying so
 * at its end, so that a store with an item size limit keeps the start of the error rather than
 * refusing the record.
 *
 * @example
 * ```ts
 * import { truncateParkError } from "./park.ts";
 * console.log(truncateParkError("x".repeat(100), 60));
 * // "xxxx… [error text truncated: 100 bytes]" (60 bytes at most)
 * ```
 */
export function truncateParkError(text: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= maxBytes) return text;
  const note = `… [error text truncated: ${bytes.length} bytes]`;
  let end = Math.max(0, maxBytes - new TextEncoder().encode(note).length);
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--; // not inside a character
  return new TextDecoder().decode(bytes.subarray(0, end)) + note;
}

// Values JSON cannot hold are tagged so that they come back as they were.
const TAG = "$impel";

/**
 * An event as stored by the park stores: JSON text in which `time` is an ISO string and byte
 * arrays and bigints anywhere in `data` or `meta` are tagged objects (`{ "$impel": "bytes",
 * "v": base64 }`, `{ "$impel": "bigint", "v": "123" }`), so that they round-trip.
 *
 * @example
 * ```ts
 * import { decodeParkedEvent, encodeParkedEvent } from "./park.ts";
 * const event = { index: 0, type: "T", data: new Uint8Array([1]), meta: null, id: "a", time: new Date(0), size: 1 };
 * const back = decodeParkedEvent(encodeParkedEvent(event));
 * console.log(back.data, back.time.getTime()); // Uint8Array(1) [ 1 ] 0
 * ```
 */
export function encodeParkedEvent(event: StreamEvent): string {
  const bad = unreadable.get(event);
  return JSON.stringify(
    {
      index: event.index,
      type: event.type,
      data: event.data,
      meta: event.meta,
      id: event.id,
      time: event.time instanceof Date ? event.time.toISOString() : event.time,
      ...(event.correlationId === undefined ? {} : { correlationId: event.correlationId }),
      ...(event.causationId === undefined ? {} : { causationId: event.causationId }),
      size: event.size,
      ...(bad === undefined ? {} : { [INVALID]: { name: bad.name, message: bad.message } }),
    },
    function (this: Record<string, unknown>, key, value) {
      // The holder's own value: a Buffer has already been turned into { type, data } by toJSON.
      const raw = this[key];
      if (typeof raw === "bigint") return { [TAG]: "bigint", v: raw.toString() };
      if (raw instanceof Uint8Array) return { [TAG]: "bytes", v: toBase64(raw) };
      return value;
    },
  );
}

/**
 * The inverse of {@linkcode encodeParkedEvent}.
 *
 * @example
 * ```ts
 * import { decodeParkedEvent } from "./park.ts";
 * const e = decodeParkedEvent('{"index":0,"type":"T","data":{"$impel":"bigint","v":"7"},"meta":null,"id":"a","time":"1970-01-01T00:00:00.000Z","size":1}');
 * console.log(e.data, e.time.getTime()); // 7n 0
 * ```
 */
export function decodeParkedEvent(text: string): StreamEvent {
  const e = JSON.parse(text, (_key, value) => {
    if (value !== null && typeof value === "object" && typeof value[TAG] === "string") {
      if (value[TAG] === "bigint") return BigInt(value.v);
      if (value[TAG] === "bytes") return fromBase64(value.v);
    }
    return value;
  });
  const bad = e[INVALID];
  if (bad === undefined) return { ...e, time: new Date(e.time) };
  delete e[INVALID];
  const event = { ...e, time: new Date(e.time) };
  const error = new Error(String(bad?.message ?? bad));
  if (typeof bad?.name === "string") error.name = bad.name;
  unreadable.set(event, error);
  return event;
}

/** The key of the mark of an unreadable record in a parked event's JSON. */
const INVALID = "$invalid";

/**
 * Records a source could not read (`BatchItem.invalid`), by event object: the scheduler marks
 * them; {@linkcode encodeParkedEvent} keeps the mark in the park store and
 * {@linkcode decodeParkedEvent} restores it, so that a released unreadable record goes to the
 * failure policy again, never to the handler. Internal (not exported by the package).
 */
export const unreadable: WeakMap<StreamEvent, Error> = new WeakMap();

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}
