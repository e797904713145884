/**
 * The scheduler: buffers events per stream and runs the handler at most once at a time per
 * stream, many streams at once; tracks which batches each stream holds up, so that a handler
 * result touches only the batches waiting on that stream.
 *
 * @module
 */
import type { Batch, Position } from "./batch.ts";
import { checkInteger, checkNumber, ImpelError, InvalidArgumentError } from "./errors.ts";
import { insertEvent, type StreamEvent } from "./event.ts";
import {
  backoff,
  checkFailurePolicy,
  errorText,
  type FailurePolicy,
  InvalidHandlerResultError,
  parkPolicies,
  type ParkPolicy,
  PipelineFaultError,
  type RetryOptions,
  type StreamFailure,
  StreamGapError,
  streamPolicies,
} from "./failure.ts";
import { createHistogram, type Histogram } from "./histogram.ts";
import type { Ownership } from "./ownership.ts";
import type {
  ParkAction,
  ParkedFailure,
  ParkedStream,
  ParkStore,
  ParkWrite,
  ParkWriteOutcome,
} from "./park.ts";
import { truncateParkError, unreadable } from "./park.ts";
import type { StreamName } from "./streamName.ts";

/** Busy runs measure handler latency on one call in this many (a power of two). */
const LATENCY_SAMPLE = 64;

/**
 * What a handler is told besides the stream and its events.
 *
 * @example
 * ```ts
 * import { type HandlerContext, streamsSink } from "@impel/impel";
 * import type { StreamEvent, StreamName } from "@impel/impel";
 *
 * async function notify(stream: StreamName, events: readonly StreamEvent[], ctx: HandlerContext) {
 *   if (ctx.attempt > 1) console.warn(`${stream}: retrying, attempt ${ctx.attempt}`);
 *   // Handing on the signal lets a stop that has run out of patience cancel the request.
 *   await fetch("http://127.0.0.1:8080/notifications", {
 *     method: "POST",
 *     body: JSON.stringify({ stream, types: events.map((e) => e.type) }),
 *     signal: ctx.signal,
 *   });
 * }
 * const sink = streamsSink({ handler: notify });
 * await sink.stop();
 * ```
 *
 * @category Pipeline
 */
export interface HandlerContext {
  /** Aborted when the pipeline stops and the stop timeout has passed: give up promptly. */
  readonly signal: AbortSignal;
  /** 1 for a first attempt at these events, higher for retries after failures. */
  readonly attempt: number;
}

/**
 * Handles a span of one stream. Returns the index it has reached: nothing (or the end of the
 * span) for "all handled", a lower index to leave the rest queued, or a higher one when the
 * stream is known to be further along (buffered events below it are dropped, and dedup'd when
 * they arrive later). Never called twice at once for one stream.
 *
 * @example
 * ```ts
 * import type { Handler } from "@impel/impel";
 * const handler: Handler = async (stream, events) => {
 *   for (const e of events) console.log(stream, e.index, e.type);
 * };
 * ```
 *
 * @category Pipeline
 */
export type Handler = (
  stream: StreamName,
  events: readonly StreamEvent[],
  context: HandlerContext,
) => Promise<number | void> | number | void;

/**
 * Options of the scheduler: the part of {@linkcode StreamsSinkOptions} that decides how the
 * handler is called.
 *
 * @example
 * ```ts
 * import { type SchedulerOptions, streamsSink } from "@impel/impel";
 *
 * const scheduling: SchedulerOptions = {
 *   handler: (stream, events) => console.log(stream, events.length),
 *   maxConcurrentStreams: 32,
 *   maxEventsPerCall: 500,
 *   maxBytesPerCall: 256 * 1024,
 *   retry: { initialDelayMs: 200, maxDelayMs: 10_000 },
 *   failure: { kind: "fault", maxAttempts: 5, maxStuckMs: 120_000 },
 *   stuckAfterMs: 30_000,
 * };
 * const sink = streamsSink({ ...scheduling, group: "notifier" });
 * await sink.stop();
 * ```
 *
 * @category Pipeline
 */
export interface SchedulerOptions {
  /** The application handler. */
  readonly handler: Handler;
  /** Most streams handled at once (default 16). */
  readonly maxConcurrentStreams?: number;
  /** Most events given to one handler call (default 1000). */
  readonly maxEventsPerCall?: number;
  /** Most bytes (by `event.size`) given to one handler call; one event always goes (default 1 MiB). */
  readonly maxBytesPerCall?: number;
  /** Backoff between attempts of a failing or stalled stream. */
  readonly retry?: RetryOptions;
  /** What to do about a handler that keeps throwing (default: retry forever). */
  readonly failure?: FailurePolicy;
  /** A stream with work that has made no progress for this long is classed stuck (default 60 s). */
  readonly stuckAfterMs?: number;
  /**
   * Most idle stream states kept (default 10 000). A stream is idle when nothing of it is
   * buffered, running, failing, or waited on by an unfinished batch; past this many states the
   * oldest idle ones are forgotten, so memory stays flat however many streams there are. A
   * forgotten stream starts afresh at its next event (the first event seen starts a stream),
   * so dedup of events that arrive again after that is the checkpoint's job.
   */
  readonly maxIdleStreams?: number;
  /**
   * What to do about a permanent gap in a stream (events missing below its buffer, in a batch
   * marked `gapsAreFinal`): `"fault"` the pipeline (default), `"skip"` to the next event
   * present (logged and counted in `gapsSkipped`), or `"deadLetter"` to hand the events after
   * the gap to the stream's dead letter: the `deadLetter` callback, or the park store (the
   * stream parks), as its failure policy says (needs a `deadLetter` or `park` policy, or a
   * `byStream` rule with one; a stream whose policy has neither faults). A gap in other
   * batches waits for the missing events and shows as stuck after `stuckAfterMs`.
   */
  readonly gaps?: "fault" | "skip" | "deadLetter";
}

/**
 * A busy, failing or stuck stream as shown in stats.
 *
 * @example
 * ```ts
 * import { run, type StreamStatus, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const describe = (s: StreamStatus) =>
 *   `${s.stream}: ${s.attempts} attempt(s) in ${s.ageMs} ms` + (s.error ? `, ${s.error}` : "");
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * let failing: readonly StreamStatus[] = [];
 * const sink = streamsSink({
 *   handler: (_stream, _events, { attempt }) => {
 *     if (attempt === 1) throw new Error("database unavailable");
 *     failing = sink.stats().failing; // during the retry, the last failure still shows
 *   },
 *   retry: { initialDelayMs: 1 },
 * });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * console.log(failing.map(describe));
 * // ["Order-1: 1 attempt(s) in 2 ms, Error: database unavailable"]
 * ```
 *
 * @category Stats
 */
export interface StreamStatus {
  /** The stream. */
  readonly stream: StreamName;
  /** How long it has been in this state, ms. */
  readonly ageMs: number;
  /** Attempts made at the current events. */
  readonly attempts: number;
  /** The last error, for failing streams. */
  readonly error?: unknown;
}

/**
 * The states a stream with work can be in, most urgent first.
 *
 * @example
 * ```ts
 * import { type StreamStateName, streamsSink } from "@impel/impel";
 *
 * const sink = streamsSink({ handler: () => {} });
 * const alarming: StreamStateName[] = ["stuck", "failing"];
 * const troubled = alarming.reduce((n, state) => n + sink.stats().states[state].streams, 0);
 * console.log(troubled); // 0
 * await sink.stop();
 * ```
 *
 * @category Stats
 */
export type StreamStateName = "stuck" | "failing" | "active" | "ready" | "buffered";

/**
 * Every {@linkcode StreamStateName}, in the order of the `states` of a
 * {@linkcode SchedulerSnapshot}: for reporting each state without naming them all.
 *
 * @example
 * ```ts
 * import { STREAM_STATES, streamsSink } from "@impel/impel";
 *
 * const sink = streamsSink({ handler: () => {} });
 * const { states } = sink.stats();
 * for (const state of STREAM_STATES) {
 *   console.log(`${state}: ${states[state].streams} streams, ${states[state].events} events`);
 * }
 * await sink.stop();
 * ```
 *
 * @category Stats
 */
export const STREAM_STATES: readonly StreamStateName[] = [
  "stuck",
  "failing",
  "active",
  "ready",
  "buffered",
];

/**
 * Streams, buffered events and bytes (by `event.size`) in one state.
 *
 * @example
 * ```ts
 * import { STREAM_STATES, type StreamStateTotals, streamsSink } from "@impel/impel";
 *
 * const sink = streamsSink({ handler: () => {} });
 * const backlog: StreamStateTotals = { streams: 0, events: 0, bytes: 0 };
 * for (const state of STREAM_STATES) {
 *   const t = sink.stats().states[state];
 *   backlog.streams += t.streams;
 *   backlog.events += t.events;
 *   backlog.bytes += t.bytes;
 * }
 * console.log(backlog); // { streams: 0, events: 0, bytes: 0 }
 * await sink.stop();
 * ```
 *
 * @category Stats
 */
export interface StreamStateTotals {
  /** Streams in the state. */
  streams: number;
  /** Events buffered for those streams. */
  events: number;
  /** Bytes buffered for those streams. */
  bytes: number;
}

/**
 * A point-in-time view of the scheduler; part of a sink's {@linkcode SinkStats}.
 *
 * @example
 * ```ts
 * import { type SchedulerSnapshot, streamsSink } from "@impel/impel";
 *
 * const healthy = (s: SchedulerSnapshot) => s.stuck.length === 0 && s.failing.length < 10;
 *
 * const sink = streamsSink({ handler: () => {} });
 * const snapshot: SchedulerSnapshot = sink.stats();
 * console.log(healthy(snapshot), snapshot.streams, snapshot.bufferedEvents); // true 0 0
 * console.log(snapshot.busy.length, snapshot.uncompletedBatches); // 0 0
 * console.log(snapshot.states.ready); // { streams: 0, events: 0, bytes: 0 }
 * await sink.stop();
 * ```
 *
 * @category Stats
 */
export interface SchedulerSnapshot {
  /** Streams with state (buffered events or a known write position). */
  readonly streams: number;
  /** Events buffered and not yet handled. */
  readonly bufferedEvents: number;
  /**
   * Streams with work by state; each stream counts in the first that applies: stuck, failing
   * (its last attempt threw), active (a call in flight), ready (can start now), buffered
   * (waiting for a backoff or for missing events).
   */
  readonly states: Readonly<Record<StreamStateName, Readonly<StreamStateTotals>>>;
  /** Handler calls in flight. */
  readonly busy: readonly StreamStatus[];
  /** Streams whose last attempt threw. */
  readonly failing: readonly StreamStatus[];
  /** Streams with work and no progress for `stuckAfterMs` (stalled or running that long). */
  readonly stuck: readonly StreamStatus[];
  /** Batches ingested and not yet complete. */
  readonly uncompletedBatches: number;
  /** Parked streams, as this sink knows them. */
  readonly parked: ParkedSnapshot;
}

/**
 * A parked stream as shown in stats.
 *
 * @example
 * ```ts
 * import type { ParkedStatus } from "@impel/impel";
 * const line = (p: ParkedStatus) => `${p.stream}: ${p.events} parked for ${p.ageMs} ms (${p.error})`;
 * ```
 *
 * @category Stats
 */
export interface ParkedStatus {
  /** The stream. */
  readonly stream: StreamName;
  /** Events parked (as this sink knows: loaded at start, plus its own writes). */
  readonly events: number;
  /** How long since it parked, ms. */
  readonly ageMs: number;
  /** Attempts before it parked. */
  readonly attempts: number;
  /**
   * The error that parked it, as text: at most its first 256 bytes (cut saying so), since every
   * member holds every parked stream of its group; the park store keeps it whole.
   */
  readonly error: string;
  /** `parked`, or the request being applied. */
  readonly state: "parked" | "releasing" | "skipping";
}

/**
 * Parked streams of a sink: part of a {@linkcode SchedulerSnapshot}.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * const sink = streamsSink({ handler: () => {} });
 * const { streams, events, oldestMs } = sink.stats().parked;
 * console.log(streams, events, oldestMs); // 0 0 0
 * await sink.stop();
 * ```
 *
 * @category Stats
 */
export interface ParkedSnapshot {
  /** Streams parked, including those being released or skipped. */
  readonly streams: number;
  /** Events parked in them. */
  readonly events: number;
  /** Age of the oldest parked stream, ms (0 when none). */
  readonly oldestMs: number;
  /** The oldest parked streams, at most 20, oldest first. */
  readonly oldest: readonly ParkedStatus[];
  /**
   * Set while the park store cannot be read (at start, or when polling for requests) or
   * written: since when, and the last error.
   */
  readonly storeFailing?: { readonly since: number; readonly error: unknown };
  /**
   * Set while release or skip requests of the group have waited unclaimed (no claim, or one
   * that lapsed) for longer than a claim lasts (ten polls, at least 1 s), as this sink's last
   * poll of each park store saw them: no member that may apply them has (every member owning
   * the tranche busy with others, or none running, or claims failing). How many, and the one
   * waiting longest: what was asked, by whom and when (`at`), and since when it can be claimed
   * (`since`: when it was asked, or when the last claim on it lapsed).
   */
  readonly unclaimed?: {
    readonly requests: number;
    readonly oldest: {
      readonly stream: string;
      readonly action: ParkAction;
      readonly by: string;
      readonly at: number;
      readonly since: number;
      readonly tranche?: string;
    };
  };
}

/**
 * Running totals since the scheduler started.
 *
 * @example
 * ```ts
 * import { run, type SchedulerCounters, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }, { type: "Paid", data: {} }], 0);
 * await store.append("Order-2", [{ type: "Placed", data: {} }], 0);
 * const sink = streamsSink({ handler: () => {} });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * const c: Readonly<SchedulerCounters> = sink.stats().counters;
 * console.log(c.events, c.handled, c.calls, c.failures, c.deadLettered); // 3 3 2 0 0
 * console.log(c.batchesCompleted === c.batches); // true
 * ```
 *
 * @category Stats
 */
export interface SchedulerCounters {
  /** Batches ingested. */
  batches: number;
  /** Batches complete. */
  batchesCompleted: number;
  /** Events ingested (including duplicates). */
  events: number;
  /** Events discarded on arrival because they were below the stream's write position. */
  duplicates: number;
  /** Events handled (the handler reported past them). */
  handled: number;
  /** Handler calls that returned. */
  calls: number;
  /** Handler calls that threw. */
  failures: number;
  /** Streams handed to the dead-letter callback. */
  deadLettered: number;
  /** Streams parked (the `park` policy). */
  parked: number;
  /** Events written to the park store. */
  parkedEvents: number;
  /** Parked streams released (replayed, then handled as usual). */
  released: number;
  /** Parked streams skipped. */
  skipped: number;
  /** Park store operations that failed (and were retried). */
  parkFailures: number;
  /**
   * Releases that failed again: the stream's policy gave up on an event of the replay and the
   * stream parked again (also counted in `parked`; the store's history keeps a `failed` entry).
   */
  releaseFailures: number;
  /** Batches dropped because the source lost their tranche (revocation). */
  revokedBatches: number;
  /** Idle stream states forgotten to keep memory flat (`maxIdleStreams`). */
  purgedStreams: number;
  /** Permanent gaps skipped under `gaps: "skip"`. */
  gapsSkipped: number;
  /** Attempts at records a source could not read (`BatchItem.invalid`), also in `failures`. */
  unreadable: number;
}

/** Per tranche: how far its batches are complete, in batch order. */
export interface TrancheProgress {
  /** The tranche name. */
  readonly name: string;
  /** Whether the latest batch of this tranche reached the tail. */
  readonly isTail: boolean;
  /** The position of the latest batch such that it and every batch before it are complete. */
  readonly completed: Position | undefined;
  /** How to record `completed` (from the batch that carried it). */
  readonly commit: ((position: Position) => Promise<void>) | undefined;
  /** Batches ingested and not yet passed by `completed`. */
  readonly readAhead: number;
  /** The ownership its batches carry, for sources that can lose the tranche. */
  readonly ownership: Ownership | undefined;
}

interface TrancheState extends TrancheProgress {
  isTail: boolean;
  completed: Position | undefined;
  commit: ((position: Position) => Promise<void>) | undefined;
  readAhead: number;
  ownership: Ownership | undefined;
  /** Batches not yet passed by `completed`, from `head` on, in ingestion order. */
  readonly queue: Tracker[];
  head: number;
  /** Set once the tranche is being revoked: nothing starts on its streams any more. */
  revoked: boolean;
  /** Aborts the calls on its streams when a revocation runs out of patience. */
  abort: AbortController | undefined;
  /** The context handed to first attempts on its streams (shared, to save an object per call). */
  firstAttempt: HandlerContext;
}

/** One ingested batch: how many of its streams are still short of its events. */
interface Tracker {
  readonly tranche: TrancheState;
  readonly position: Position;
  readonly commit: ((position: Position) => Promise<void>) | undefined;
  /** Ingestion order, across tranches: the oldest batch is dispatched first. */
  readonly seq: number;
  pending: number;
  /** Streams ready to run whose oldest unfinished batch is this one, in FIFO order. */
  ready: StreamState[] | undefined;
  readyHead: number;
}

interface StreamState {
  /** Set anew when a purged state is reused for another stream (see `spare`). */
  name: StreamName;
  /** The tranche its events were last read from. */
  tranche: TrancheState;
  /** Next index to handle; -1 while unknown (first event seen starts the stream). */
  writePos: number;
  /** Buffered events at or above writePos, sorted, no duplicates; NO_EVENTS when empty. */
  buffer: StreamEvent[];
  /**
   * The batch waiting on this stream that needs the lowest index of it, and that index;
   * undefined when none. Most streams have one batch waiting at a time: kept here, it costs no
   * array.
   */
  wait: Tracker | undefined;
  waitTo: number;
  /**
   * The other batches waiting on it, as pairs (tracker, index it needs the stream to reach),
   * sorted by that index (none below `waitTo`); undefined when none. Set only while `wait` is.
   */
  waits: Array<Tracker | number> | undefined;
  busy: boolean;
  queued: boolean;
  /** Waiting in the idle queue to be purged. */
  idle: boolean;
  /** Its events come from a source whose gaps are permanent. */
  finalGaps: boolean;
  /** Scratch for ingestion: the tracker this stream was last seen in, and its highest index + 1. */
  mark: Tracker | undefined;
  markRequired: number;
  /** When the running call started (ms since epoch), for busy ages. */
  startedAt: number;
  /** performance.now() at the start of a call whose latency is sampled, else -1. */
  timedAt: number;
  /** Failure and stall state, allocated only for streams that had trouble. */
  trouble: Trouble | undefined;
  /** Set while the stream is parked. */
  park: ParkState | undefined;
}

/**
 * Bytes of a parked stream's error text kept in memory (stats, health): every member holds every
 * parked stream of its group, and errors with stacks run to kilobytes each; the store keeps the
 * whole text (`impel parked show`).
 */
const PARKED_ERROR_BYTES = 256;

/**
 * A parked stream's state. While `parked`, its events go to the store instead of the handler
 * and its write position is the store's `next`; `release` replays the stored events through the
 * handler (new arrivals wait behind them in the buffer), `skip` resolves the episode and moves
 * on. Store operations hold the stream busy, like handler calls, so nothing overlaps.
 */
interface ParkState {
  readonly store: ParkStore;
  mode: "parked" | ParkAction;
  /** The episode, once known (loaded, or from a claimed request). */
  episode: string | undefined;
  /** The store's first and next indexes and event count, as known here. */
  first: number;
  next: number;
  events: number;
  since: number;
  error: string;
  attempts: number;
  /** A failure to record with the next write (the stream just parked, or parked again). */
  failure: ParkedFailure | undefined;
  handledTo: number | undefined;
  /** A claimed request that starts once the stream is not busy. */
  starting: ParkedStream | undefined;
  /** Release: the store's next when the replay began, and the next index to fetch. */
  replayEnd: number;
  fetched: number;
  /** The claim was lost to another sink: go back to parked at the next step. */
  lost: boolean;
}

/**
 * Everything that can go wrong with a stream. The scheduler keeps the troubled streams in sets
 * by kind; `troubles.set` and `troubles.clear` are the only places that change both, so the two
 * cannot disagree.
 */
interface Trouble {
  /** Consecutive failed attempts at the current events (failing when > 0). */
  attempts: number;
  failingSince: number;
  lastError: unknown;
  /** Consecutive calls that made no progress (stalled when > 0). */
  stalls: number;
  stalledSince: number;
  /** When the stream was first seen waiting for events missing below its buffer (0: not waiting). */
  gapSince: number;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
}

/** A handler call awaiting its promise; reused from call to call (see `newSlot`). */
interface CallSlot {
  s: StreamState | undefined;
  span: StreamEvent[];
  readonly ok: (next: unknown) => void;
  readonly err: (error: unknown) => void;
}

// The intrinsic `then`: a promise using it calls back at most once.
const promiseThen = Promise.prototype.then;

// Shared by every stream with nothing buffered, so that an idle stream costs no array.
const NO_EVENTS: StreamEvent[] = [];
Object.freeze(NO_EVENTS);

/**
 * How long, in expected handler time, one call may reach beyond the events its oldest unfinished
 * batch needs. Slow handlers then finish the oldest batch first (so checkpoints advance under
 * crashes); fast ones still get whole backlogs per call.
 */
const REACH_MS = 100;

/** Most events in one handler call of a release's replay (see `take`). */
const REPLAY_CALL = 100;

/** Most purged stream states kept for reuse (a batch's worth of new streams, and more). */
const MAX_SPARE = 4096;

/** The scheduler engine used by the streams sink. */
export interface Scheduler {
  /** Buffers a batch's events and starts handlers. */
  ingest(batch: Batch): void;
  /** Batches ingested and not yet complete. */
  readonly uncompleted: number;
  /** Batches ingested and not yet passed by their tranche's completed position (all tranches). */
  readonly readAhead: number;
  /** Handler calls and park store operations in flight. */
  readonly active: number;
  /** Per tranche progress, by tranche name. */
  readonly tranches: ReadonlyMap<string, TrancheProgress>;
  /** Running totals. */
  readonly counters: Readonly<SchedulerCounters>;
  /** Handler latency of calls that returned, and of calls that threw. */
  readonly latency: { readonly ok: Histogram; readonly failed: Histogram };
  /** Stops starting handlers and cancels pending retries; in-flight calls run on. */
  stop(): void;
  /** Aborts the signal handed to in-flight handlers. */
  abortHandlers(reason: unknown): void;
  /** A view of busy, failing and stuck streams. */
  snapshot(): SchedulerSnapshot;
  /** Faults the pipeline if the policy's `maxStuckMs` is set and a stream is stuck that long. */
  checkStuck(): void;
  /** Faults the pipeline (for failures the sink sees, such as commits). */
  fault(error: PipelineFaultError): void;
  /**
   * Starts revoking a tranche: nothing more starts on its streams and their buffered events are
   * dropped. Resolves once no call on its streams is running; in-flight calls still complete
   * its batches meanwhile, so the completed position can be committed before `forget`.
   */
  revoke(tranche: string): Promise<void>;
  /** Aborts the handler signal of calls still running on a revoked tranche; returns how many. */
  abandon(tranche: string): number;
  /**
   * Resolves once no call on the tranche's streams runs any more, abandoned ones included (it
   * still resolves after `forget`, when the last of them ends). Ask before `forget`.
   */
  ended(tranche: string): Promise<void>;
  /** Drops a revoked tranche's batches and streams; its read-ahead is released. */
  forget(tranche: string): void;
  /**
   * Takes the store's active episodes as parked (at start, before anything is handled, when a
   * tranche is newly owned, and every few polls); idle parked streams of `store` this sink does
   * not read (loaded only: their tranche is another member's) that are not among them were
   * resolved elsewhere and are forgotten. Streams this sink reads are never un-parked by a list:
   * one read before this sink's own write would miss an episode that exists.
   */
  markParked(store: ParkStore, entries: readonly ParkedStream[]): void;
  /** Starts applying a request this sink has claimed. */
  apply(store: ParkStore, entry: ParkedStream): void;
  /** The requests being applied, with the release's progress, for claim renewal. */
  applying(): Array<{
    store: ParkStore;
    stream: StreamName;
    episode: string;
    /** Set once a release replays: the events below it are handled. */
    handledTo?: number;
  }>;
  /** A claim renewal failed: another sink holds the request now. */
  claimLost(stream: StreamName): void;
}

/**
 * The park store as the scheduler uses it; the sink supplies it (coalescing writes, bounding
 * each call with a timeout, keyed by its group and its claims' instance).
 */
export interface ParkIo {
  /** Writes one stream's part of a park call. */
  write(store: ParkStore, write: ParkWrite): Promise<ParkWriteOutcome>;
  /** Up to `limit` events of an episode from `from`. */
  page(
    store: ParkStore,
    stream: StreamName,
    episode: string,
    from: number,
    limit: number,
  ): Promise<readonly StreamEvent[]>;
  /** Resolves the claimed request (a release only if the store's next is `expectedNext`). */
  resolve(
    store: ParkStore,
    stream: StreamName,
    episode: string,
    expectedNext: number | undefined,
  ): Promise<ParkResolveResult>;
  /**
   * A release whose claim was lost went back to parked, its events below `handledTo` handled:
   * said once no call of it runs any more, so that a call in flight when the claim was lost
   * counts if it succeeded (and not if it failed).
   */
  lost?(store: ParkStore, stream: StreamName, episode: string, handledTo: number): void;
}

/**
 * What resolving a request came to: done; not yet, because events were added (a release then
 * replays up to `next`); the claim is another sink's now; or the episode is no longer active.
 */
export type ParkResolveResult =
  | { readonly kind: "resolved"; readonly entry: ParkedStream }
  | { readonly kind: "moved"; readonly next: number }
  | { readonly kind: "lost" }
  | { readonly kind: "gone" };

/** Hooks through which the scheduler reports to its sink. */
export interface SchedulerHooks {
  /** Called after batches completed or handlers finished (at most once per scheduler turn). */
  onProgress(): void;
  /** Called once when the failure policy faults the pipeline. */
  onFault(error: PipelineFaultError): void;
  /** Called when a handler throws, or a record could not be read (`unreadable`), for logging. */
  onHandlerError(failure: StreamFailure, unreadable: boolean): void;
  /** Called when a permanent gap is skipped (the `gaps: "skip"` policy), for logging. */
  onGapSkipped?(gap: StreamGapError): void;
  /** The park store, needed by the `park` policy. */
  readonly parking?: ParkIo;
  /** Called when a stream parks, a park store operation fails, or a request is applied, for logging. */
  onPark?(event: ParkEvent): void;
}

/** What {@linkcode SchedulerHooks.onPark} reports. */
export type ParkEvent =
  | { readonly kind: "parked"; readonly stream: StreamName; readonly failure: ParkedFailure }
  | {
    readonly kind: "storeFailed";
    readonly stream: StreamName;
    readonly error: unknown;
    readonly attempts: number;
  }
  | { readonly kind: "resolved"; readonly entry: ParkedStream }
  | { readonly kind: "claimLost"; readonly stream: StreamName };

/** Checks scheduler options at the public boundary and applies defaults. */
function resolveOptions(options: SchedulerOptions) {
  if (typeof options?.handler !== "function") {
    throw new InvalidArgumentError("handler", "must be a function");
  }
  const stuckAfterMs = checkNumber("stuckAfterMs", options.stuckAfterMs ?? 60_000, 0);
  const failure = checkFailurePolicy(options.failure ?? { kind: "retry" });
  if (
    failure.kind === "fault" && failure.maxStuckMs !== undefined &&
    failure.maxStuckMs < stuckAfterMs
  ) {
    // Streams are only classed stuck after stuckAfterMs, so a lower limit could never apply.
    throw new InvalidArgumentError(
      "failure.maxStuckMs",
      `must be >= stuckAfterMs (${stuckAfterMs}), got ${failure.maxStuckMs}`,
    );
  }
  const gaps = options.gaps ?? "fault";
  if (gaps !== "fault" && gaps !== "skip" && gaps !== "deadLetter") {
    throw new InvalidArgumentError(
      "gaps",
      `must be "fault", "skip" or "deadLetter", got ${JSON.stringify(gaps)}`,
    );
  }
  const hasDeadLetter = (p: FailurePolicy) => p.kind === "deadLetter" || p.kind === "park";
  if (
    gaps === "deadLetter" && !hasDeadLetter(failure) &&
    !(failure.kind === "byStream" && failure.rules.some((r) => hasDeadLetter(r.policy)))
  ) {
    throw new InvalidArgumentError(
      "gaps",
      `"deadLetter" needs a failure policy with a dead letter ("deadLetter" or "park")`,
    );
  }
  return {
    handler: options.handler,
    maxConcurrentStreams: checkInteger(
      "maxConcurrentStreams",
      options.maxConcurrentStreams ?? 16,
      1,
    ),
    maxEventsPerCall: checkInteger("maxEventsPerCall", options.maxEventsPerCall ?? 1000, 1),
    maxBytesPerCall: checkNumber("maxBytesPerCall", options.maxBytesPerCall ?? 1 << 20, 1),
    maxIdleStreams: checkInteger("maxIdleStreams", options.maxIdleStreams ?? 10_000, 0),
    backoff: backoff(options.retry),
    failure,
    policyOf: streamPolicies(failure),
    parks: parkPolicies(failure),
    gaps,
    stuckAfterMs,
  };
}

/**
 * Creates the scheduler engine. Most applications use {@linkcode streamsSink}, which wraps it
 * in a `WritableStream` with checkpointing, a monitor and stats.
 *
 * @example
 * ```ts
 * import { createScheduler } from "./scheduler.ts";
 * const scheduler = createScheduler({ handler: () => {} }, {
 *   onProgress() {},
 *   onFault(error) {
 *     throw error;
 *   },
 *   onHandlerError() {},
 * });
 * scheduler.ingest({ tranche: "0", position: 1n, isTail: true, items: [] });
 * scheduler.uncompleted; // 0
 * ```
 *
 * @category Pipeline
 */
export function createScheduler(options: SchedulerOptions, hooks: SchedulerHooks): Scheduler {
  const opts = resolveOptions(options);
  const { handler, maxConcurrentStreams, maxEventsPerCall, maxBytesPerCall, maxIdleStreams } = opts;
  const io = hooks.parking;
  if (opts.parks.length > 0 && io === undefined) {
    throw new InvalidArgumentError("failure", "the park policy needs the park store of a sink");
  }
  const streams = new Map<StreamName, StreamState>();
  // Parked streams: never purged, and not counted against maxIdleStreams.
  const parkedSet = new Set<StreamState>();
  // Park store failures by stream, each until an operation of that stream succeeds (one
  // stream's success says nothing of another's write).
  const storeTroubles = new Map<StreamState, { since: number; error: unknown }>();
  const tranches = new Map<string, TrancheState>();
  const failing = new Set<StreamState>();
  const stalled = new Set<StreamState>();
  const gapped = new Set<StreamState>();
  const delayed = new Set<StreamState>();
  // Trackers with ready streams, oldest first (at most the uncompleted batches).
  const buckets: Tracker[] = [];
  // Ready streams without an unfinished batch (only possible after a revocation dropped it).
  const loose: StreamState[] = [];
  // Streams that went idle, oldest first: the candidates for purging.
  const idleQueue: StreamState[] = [];
  // Purged states, reused for new streams: with many streams, a state allocated afresh outlives
  // a young-generation collection (it waits behind read-ahead and the idle bound), and copying
  // it there cost more than all of the scheduler's own work on it. A purged state is referenced
  // from nowhere (not busy, queued, buffered, awaited, troubled or parked; its idle entry is
  // consumed), so it can be another stream's.
  const spare: StreamState[] = [];
  let idleHead = 0;
  // Records that could not be read as events, by the event object the scheduler buffers.
  // Shared with the park stores' encoding, which keeps the mark of a parked one.
  const invalid = unreadable;
  // Lookups in `invalid` cost a WeakMap probe per event: skipped until a source sends one.
  let anyInvalid = false;
  let seq = 0;
  let active = 0;
  // Park store operations in flight (they hold their stream busy, not a handler slot).
  let parkOps = 0;
  let uncompleted = 0;
  let readAhead = 0;
  let stopping = false;
  let faulted = false;
  let dispatching = false;
  let dispatchQueued = false;
  let progressed = false;
  // Expected handler time per event, from timed calls; 0 until measured.
  let msPerEvent = 0;
  const handlerAbort = new AbortController();
  const counters: SchedulerCounters = {
    batches: 0,
    batchesCompleted: 0,
    events: 0,
    duplicates: 0,
    handled: 0,
    calls: 0,
    failures: 0,
    deadLettered: 0,
    parked: 0,
    parkedEvents: 0,
    released: 0,
    skipped: 0,
    parkFailures: 0,
    releaseFailures: 0,
    revokedBatches: 0,
    purgedStreams: 0,
    gapsSkipped: 0,
    unreadable: 0,
  };
  const latency = { ok: createHistogram(), failed: createHistogram() };
  const touched: StreamState[] = [];
  let sampleSeq = 0;
  let lastTimed = 0;
  let lastStuckCheck = 0;

  const troubleOf = (s: StreamState): Trouble =>
    s.trouble ??= {
      attempts: 0,
      failingSince: 0,
      lastError: undefined,
      stalls: 0,
      stalledSince: 0,
      gapSince: 0,
      retryTimer: undefined,
    };
  /** The one owner of the troubled-stream sets, alongside `s.trouble`. */
  const troubles = {
    failed(s: StreamState, error: unknown): Trouble {
      const t = troubleOf(s);
      if (t.attempts++ === 0) t.failingSince = Date.now();
      t.lastError = error;
      failing.add(s);
      return t;
    },
    stalled(s: StreamState): Trouble {
      const t = troubleOf(s);
      if (t.stalls++ === 0) t.stalledSince = Date.now();
      stalled.add(s);
      return t;
    },
    gap(s: StreamState) {
      const t = troubleOf(s);
      if (t.gapSince === 0) t.gapSince = Date.now();
      gapped.add(s);
    },
    gapFilled(s: StreamState) {
      if (s.trouble === undefined || s.trouble.gapSince === 0) return;
      s.trouble.gapSince = 0;
      gapped.delete(s);
    },
    delay(s: StreamState, ms: number) {
      const t = troubleOf(s);
      delayed.add(s);
      t.retryTimer = setTimeout(() => {
        t.retryTimer = undefined;
        delayed.delete(s);
        enqueue(s);
        dispatch();
      }, ms);
    },
    /** Progress was made: the stream is no longer failing, stalled or gapped. */
    clear(s: StreamState) {
      const t = s.trouble;
      if (t === undefined) return;
      clearTimeout(t.retryTimer);
      s.trouble = undefined;
      failing.delete(s);
      stalled.delete(s);
      gapped.delete(s);
      delayed.delete(s);
    },
  };

  function stateOf(name: StreamName, tranche: TrancheState): StreamState {
    let s = streams.get(name);
    if (s === undefined) {
      s = spare.pop();
      if (s !== undefined) {
        s.name = name;
        s.tranche = tranche;
        streams.set(name, s);
        return s;
      }
      s = {
        name,
        tranche,
        writePos: -1,
        buffer: NO_EVENTS,
        wait: undefined,
        waitTo: 0,
        waits: undefined,
        busy: false,
        queued: false,
        idle: false,
        finalGaps: false,
        mark: undefined,
        markRequired: 0,
        startedAt: 0,
        timedAt: -1,
        trouble: undefined,
        park: undefined,
      };
      streams.set(name, s);
    }
    return s;
  }

  /** Files a stream under the oldest batch it holds up, so that batch completes first. */
  function enqueue(s: StreamState) {
    if (s.queued || s.busy || s.trouble?.retryTimer !== undefined || s.tranche.revoked) return;
    s.queued = true;
    const oldest = s.wait;
    if (oldest === undefined) {
      loose.push(s);
      return;
    }
    if (oldest.ready === undefined) {
      oldest.ready = [s];
      oldest.readyHead = 0;
      let i = buckets.length;
      while (i > 0 && buckets[i - 1].seq > oldest.seq) i--;
      buckets.splice(i, 0, oldest);
    } else oldest.ready.push(s);
  }

  /** The next ready stream, oldest batch first; undefined when none. */
  function nextReady(): StreamState | undefined {
    while (buckets.length > 0) {
      const b = buckets[0];
      const list = b.ready!;
      if (b.readyHead < list.length) return list[b.readyHead++];
      b.ready = undefined;
      buckets.shift();
    }
    return loose.pop();
  }

  function trancheOf(name: string): TrancheState {
    let t = tranches.get(name);
    if (t === undefined) {
      t = {
        name,
        isTail: false,
        completed: undefined,
        commit: undefined,
        readAhead: 0,
        ownership: undefined,
        queue: [],
        head: 0,
        revoked: false,
        abort: undefined,
        firstAttempt: firstAttempt,
      };
      tranches.set(name, t);
    }
    return t;
  }
  const firstAttempt: HandlerContext = Object.freeze({ signal: handlerAbort.signal, attempt: 1 });
  // The tranche of parked streams loaded from the store before any of their events is read: in
  // no tranche's scan, so never revoked.
  const detached: TrancheState = {
    name: "",
    isTail: true,
    completed: undefined,
    commit: undefined,
    readAhead: 0,
    ownership: undefined,
    queue: [],
    head: 0,
    revoked: false,
    abort: undefined,
    firstAttempt,
  };

  function ingest(batch: Batch) {
    checkBatch(batch); // before touching any state, so that a bad batch changes nothing
    const ownership = batch.ownership;
    if (ownership?.signal.aborted) {
      counters.revokedBatches++; // read before the source lost the tranche; never handled
      return;
    }
    const tranche = trancheOf(batch.tranche);
    if (ownership !== tranche.ownership) {
      if (tranche.ownership !== undefined || tranche.queue.length > tranche.head) {
        throw new ImpelError(
          "InvalidBatch",
          `tranche ${batch.tranche} changed ownership before the previous one was revoked`,
        );
      }
      tranche.ownership = ownership;
      if (ownership !== undefined) {
        // Calls on a revocable tranche can be aborted on their own when a revocation times out.
        tranche.abort = new AbortController();
        tranche.firstAttempt = Object.freeze({
          signal: AbortSignal.any([handlerAbort.signal, tranche.abort.signal]),
          attempt: 1,
        });
      }
    }
    const tracker: Tracker = {
      tranche,
      position: batch.position,
      commit: batch.commit,
      seq: seq++,
      pending: 0,
      ready: undefined,
      readyHead: 0,
    };
    const items = batch.items;
    const finalGaps = batch.gapsAreFinal === true;
    counters.batches++;
    counters.events += items.length;
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      const s = stateOf(item.stream, tranche);
      let event = item.event;
      let index = event.index;
      if (item.invalid !== undefined) {
        // Of a parked stream, every index below the write position is handled or in the park
        // store (which keeps an unreadable record too): one there again is a re-read (a
        // restart before the checkpoint), not to be parked a second time under a later index.
        if (s.park !== undefined && index < s.writePos) {
          counters.duplicates++;
          continue;
        }
        // Otherwise an unreadable record is never dropped as a duplicate: it goes after what is
        // known of its stream, so that it reaches the failure policy whatever index its source
        // gave it.
        let at = index < s.writePos ? s.writePos : index;
        const last = s.buffer.length > 0 ? s.buffer[s.buffer.length - 1].index : -1;
        if (last >= at) at = last + 1;
        if (at !== index) {
          event = { ...event, index: at };
          index = at;
        }
        invalid.set(event, item.invalid);
        anyInvalid = true;
      } else if (index < s.writePos) {
        counters.duplicates++;
        continue;
      }
      if (s.buffer === NO_EVENTS) s.buffer = [event];
      else insertEvent(s.buffer, event, s.writePos);
      if (s.mark !== tracker) {
        s.mark = tracker;
        s.markRequired = index + 1;
        touched.push(s);
      } else if (index >= s.markRequired) {
        s.markRequired = index + 1;
      }
    }
    // Per stream of the batch, not per item: the tranche it was last read from, its gap rule.
    for (let i = 0; i < touched.length; i++) {
      const s = touched[i];
      s.mark = undefined;
      s.tranche = tranche;
      if (finalGaps) s.finalGaps = true;
      addWaiter(s, tracker, s.markRequired);
      tracker.pending++;
      enqueue(s);
    }
    touched.length = 0;
    tranche.isTail = batch.isTail;
    tranche.queue.push(tracker);
    tranche.readAhead++;
    readAhead++;
    if (tracker.pending > 0) uncompleted++;
    else {
      counters.batchesCompleted++;
      advance(tranche);
    }
    if (streams.size - parkedSet.size > maxIdleStreams) purge();
    dispatch();
  }

  function addWaiter(s: StreamState, tracker: Tracker, required: number) {
    if (s.wait === undefined) {
      s.wait = tracker;
      s.waitTo = required;
      return;
    }
    if (required < s.waitTo) {
      // The new batch needs less of the stream: it goes first, the former first to the others.
      const first = s.wait, to = s.waitTo;
      s.wait = tracker;
      s.waitTo = required;
      if (s.waits === undefined) s.waits = [first, to];
      else s.waits.unshift(first, to);
      return;
    }
    const waits = s.waits;
    if (waits === undefined) {
      s.waits = [tracker, required];
      return;
    }
    let i = waits.length;
    // Batches usually need ever higher indexes of a stream: insertion is at the end.
    while (i > 0 && (waits[i - 1] as number) > required) i -= 2;
    if (i === waits.length) waits.push(tracker, required);
    else waits.splice(i, 0, tracker, required);
  }

  function advance(t: TrancheState) {
    const q = t.queue;
    let h = t.head;
    while (h < q.length && q[h].pending === 0) {
      t.completed = q[h].position;
      t.commit = q[h].commit ?? t.commit;
      h++;
    }
    readAhead -= h - t.head;
    t.readAhead = q.length - h;
    if (h > 1024 && h * 2 > q.length) {
      q.splice(0, h);
      h = 0;
    }
    t.head = h;
  }

  /** Releases the batches that needed `s` to reach at most its write position. */
  function release(s: StreamState) {
    const first = s.wait;
    if (first === undefined || s.waitTo > s.writePos) return;
    done(first);
    const waits = s.waits;
    if (waits === undefined) {
      s.wait = undefined;
      return;
    }
    let n = 0;
    while (n < waits.length && (waits[n + 1] as number) <= s.writePos) {
      done(waits[n] as Tracker);
      n += 2;
    }
    if (n === waits.length) {
      s.wait = undefined;
      s.waits = undefined;
      return;
    }
    // The lowest still waiting moves up into `wait`.
    s.wait = waits[n] as Tracker;
    s.waitTo = waits[n + 1] as number;
    n += 2;
    if (n === waits.length) s.waits = undefined;
    else waits.splice(0, n);
  }

  /** One stream fewer short of a batch's events. */
  function done(tracker: Tracker) {
    if (--tracker.pending === 0) {
      uncompleted--;
      counters.batchesCompleted++;
      advance(tracker.tranche);
      progressed = true;
    }
  }

  /** After a call: queue the stream again, or file it as idle when nothing waits on it. */
  function settle(s: StreamState) {
    const p = s.park;
    if (s.buffer.length > 0 || s.wait !== undefined || s.trouble !== undefined) {
      enqueue(s);
    } else if (p !== undefined) {
      // A parked stream is never purged; it only has work when a request or a failure waits.
      if (p.mode !== "parked" || p.starting !== undefined || p.failure !== undefined) enqueue(s);
    } else if (!s.idle) {
      s.idle = true;
      idleQueue.push(s);
    }
  }

  /**
   * Forgets idle streams, oldest idle first, until at most `maxIdleStreams` states are kept: a
   * stream with nothing buffered, no call, no trouble and no batch waiting on it carries only its
   * write position, and the checkpoint already covers that.
   */
  function purge() {
    while (streams.size - parkedSet.size > maxIdleStreams && idleHead < idleQueue.length) {
      const s = idleQueue[idleHead++];
      if (!s.idle) continue; // forgotten by a revocation
      s.idle = false;
      if (
        s.busy || s.queued || s.buffer.length > 0 || s.wait !== undefined ||
        s.trouble !== undefined || s.park !== undefined
      ) continue; // busy again (or parked since); filed anew when it next goes idle
      // A state left behind by a revocation may have been replaced for its name since. Every
      // other way out of `streams` goes with a revoked tranche, which costs no second lookup.
      if (s.tranche.revoked) continue;
      streams.delete(s.name);
      counters.purgedStreams++;
      if (spare.length < MAX_SPARE) {
        // Everything else is at its initial value already: that is what made it purgeable.
        s.writePos = -1;
        s.finalGaps = false;
        s.mark = undefined;
        s.markRequired = 0;
        s.startedAt = 0;
        s.timedAt = -1;
        if (storeTroubles.size > 0) storeTroubles.delete(s);
        spare.push(s);
      }
    }
    if (idleHead === idleQueue.length) {
      idleQueue.length = 0;
      idleHead = 0;
    } else if (idleHead > 4096 && idleHead * 2 > idleQueue.length) {
      idleQueue.splice(0, idleHead);
      idleHead = 0;
    }
  }

  /**
   * Dispatches once after the handler calls that end in this microtask run: calls resolved
   * together then share one dispatch (one clock read, one progress report) instead of one each.
   */
  function dispatchSoon() {
    if (dispatchQueued) return;
    dispatchQueued = true;
    queueMicrotask(queuedDispatch);
  }
  function queuedDispatch() {
    dispatchQueued = false;
    dispatch();
  }

  function dispatch() {
    if (dispatching) return;
    dispatching = true;
    // One clock read per dispatch, not per call: a run of quick calls shares it.
    let now = 0;
    try {
      while (!stopping && active < maxConcurrentStreams) {
        const s = nextReady();
        if (s === undefined) break;
        s.queued = false;
        if (s.busy || s.trouble?.retryTimer !== undefined || s.tranche.revoked) continue;
        // Past a lease's deadline, before the source's revocation timer has run (a process that
        // resumes runs its overdue timers in order): no new call on a tranche no longer held.
        if (s.tranche.ownership?.held?.() === false) continue;
        if (s.park !== undefined && parkStep(s)) continue;
        if (s.buffer.length === 0) continue;
        if (s.writePos >= 0 && s.buffer[0].index !== s.writePos) {
          if (s.finalGaps) gapFound(s, now === 0 ? (now = Date.now()) : now);
          else troubles.gap(s); // wait for the missing events, visibly (stuck after stuckAfterMs)
          continue;
        }
        start(s, now === 0 ? (now = Date.now()) : now);
      }
    } finally {
      dispatching = false;
    }
    if (progressed) {
      progressed = false;
      hooks.onProgress();
    }
  }

  /** A gap that can never fill: apply the gap policy. */
  function gapFound(s: StreamState, now: number) {
    const error = new StreamGapError(s.name, s.writePos, s.buffer[0].index);
    troubles.gap(s);
    const policy = opts.gaps === "deadLetter" ? opts.policyOf(s.name) : undefined;
    if (opts.gaps === "skip" || (policy !== undefined && s.park !== undefined)) {
      // Skipped, or parked already: what follows the gap is parked (or replayed) like the rest.
      if (opts.gaps === "skip") {
        counters.gapsSkipped++;
        hooks.onGapSkipped?.(error);
      }
      troubles.gapFilled(s);
      s.writePos = s.buffer[0].index;
      start(s, now);
    } else if (policy?.kind === "deadLetter") {
      const span = take(s);
      const t = troubles.failed(s, error);
      deadLetter(s, span, failureOf(s, span, t), policy.deadLetter);
    } else if (policy?.kind === "park") {
      const t = troubles.failed(s, error);
      s.writePos = s.buffer[0].index; // the stream parks from the first event after the gap
      parkStream(s, policy, t);
    } else {
      const t = troubles.failed(s, error);
      fault(new PipelineFaultError(error.message, [failureOf(s, s.buffer, t)]));
    }
  }

  function take(s: StreamState): StreamEvent[] {
    const buf = s.buffer;
    if (buf.length === 1) {
      // One event always goes, readable or not, whatever the limits (a replay ends past it):
      // without reading it, since it was last touched a whole read-ahead ago.
      s.buffer = NO_EVENTS;
      return buf;
    }
    if (anyInvalid && invalid.has(buf[0])) return buf.splice(0, 1);
    const first = buf[0].index;
    let bytes = buf[0].size || 0;
    let n = 1;
    let limit = Math.min(buf.length, maxEventsPerCall);
    if (msPerEvent > 0 && s.wait !== undefined) {
      const needed = s.waitTo - first;
      limit = Math.min(limit, Math.max(needed, 1) + Math.floor(REACH_MS / msPerEvent));
    }
    // A replay ends where the parked events do: arrivals behind it wait for the release to be
    // recorded. Its calls are short (REPLAY_CALL events, about REACH_MS of handler time), since
    // its progress is recorded between calls (with each claim renewal): a restart resumes there.
    if (s.park !== undefined && s.park.mode === "release" && first < s.park.replayEnd) {
      limit = Math.min(limit, s.park.replayEnd - first, REPLAY_CALL);
      if (msPerEvent > 0) limit = Math.min(limit, Math.max(1, Math.floor(REACH_MS / msPerEvent)));
    }
    while (n < limit && buf[n].index === first + n && !(anyInvalid && invalid.has(buf[n]))) {
      const b = bytes + (buf[n].size || 0);
      if (b > maxBytesPerCall) break;
      bytes = b;
      n++;
    }
    if (n === buf.length) {
      s.buffer = NO_EVENTS;
      return buf;
    }
    return buf.splice(0, n);
  }

  function start(s: StreamState, now: number) {
    troubles.gapFilled(s);
    if (s.park !== undefined && s.park.mode === "parked") return writePark(s, take(s), now);
    const span = take(s);
    s.busy = true;
    active++;
    s.startedAt = now;
    // performance.now() costs ~100 ns in Deno: time the first call of each millisecond (every
    // call when calls are sparse) plus one in LATENCY_SAMPLE, not every call of a busy run.
    if (now !== lastTimed || (++sampleSeq & (LATENCY_SAMPLE - 1)) === 0) {
      lastTimed = now;
      s.timedAt = performance.now();
    } else s.timedAt = -1;
    const bad = anyInvalid ? invalid.get(span[0]) : undefined;
    if (bad !== undefined) {
      // Never shown to the handler: the failure policy decides, as if the handler had thrown.
      counters.unreadable++;
      finish(s, latency.failed);
      failed(s, span, bad);
      return;
    }
    let result;
    try {
      const attempts = s.trouble?.attempts ?? 0;
      result = handler(
        s.name,
        span,
        attempts === 0 ? s.tranche.firstAttempt : {
          signal: s.tranche.firstAttempt.signal,
          attempt: attempts + 1,
        },
      );
    } catch (error) {
      finish(s, latency.failed);
      failed(s, span, error);
      return;
    }
    let then: unknown;
    let adopted: Promise<unknown> | undefined;
    try {
      then = result !== null && typeof result === "object"
        ? (result as Promise<unknown>).then
        : undefined;
      // A native promise is itself (no copy); anything else that has a `then` is adopted.
      if (typeof then === "function") adopted = Promise.resolve(result);
    } catch (error) {
      // A `then` getter that throws is the handler's failure, not the scheduler's.
      finish(s, latency.failed);
      failed(s, span, error);
      return;
    }
    if (adopted !== undefined) {
      const slot = freeSlots.pop() ?? newSlot();
      slot.s = s;
      slot.span = span;
      // Through the intrinsic `then`, so that each callback runs once, whatever a `then` of the
      // object's own would do (call back twice, or both): the slot is then freed exactly once.
      promiseThen.call(adopted, slot.ok, slot.err);
    } else {
      finish(s, latency.ok, span.length);
      returned(s, span, result as number | void);
    }
  }

  // Slots of calls awaiting their promise, free for reuse: at most as many exist as calls ever
  // ran at once, and a call allocates no closures of its own.
  const freeSlots: CallSlot[] = [];
  function newSlot(): CallSlot {
    const slot: CallSlot = {
      s: undefined,
      span: NO_EVENTS,
      ok(next) {
        const s = slot.s!, span = slot.span;
        slot.s = undefined;
        slot.span = NO_EVENTS;
        freeSlots.push(slot);
        finish(s, latency.ok, span.length);
        returned(s, span, next as number | void);
        dispatchSoon();
      },
      err(error) {
        const s = slot.s!, span = slot.span;
        slot.s = undefined;
        slot.span = NO_EVENTS;
        freeSlots.push(slot);
        finish(s, latency.failed);
        failed(s, span, error);
        dispatchSoon();
      },
    };
    return slot;
  }

  function finish(s: StreamState, histogram: Histogram, events = 0) {
    s.busy = false;
    callEnded(s);
    active--;
    if (s.timedAt >= 0) {
      const ms = performance.now() - s.timedAt;
      histogram.record(ms);
      if (events > 0) {
        msPerEvent = msPerEvent === 0 ? ms / events : 0.8 * msPerEvent + 0.2 * ms / events;
      }
    }
    progressed = true;
    if (s.tranche.revoked) {
      revoking.get(s.tranche)?.();
      leftBehind(s);
    }
  }

  /** Puts back the events of `span` at or above the write position, merged with arrivals. */
  function requeue(s: StreamState, span: StreamEvent[]) {
    if (s.tranche.revoked) return;
    const from = s.writePos < 0 ? 0 : s.writePos - span[0].index;
    if (from >= span.length) return;
    const rest = span.slice(Math.max(0, from)); // a copy: the handler may still hold `span`
    for (const e of s.buffer) insertEvent(rest, e, s.writePos);
    s.buffer = rest;
  }

  function returned(s: StreamState, span: StreamEvent[], result: number | void) {
    counters.calls++;
    const first = span[0].index;
    const end = first + span.length;
    let next: number;
    if (result === undefined) next = end;
    else if (typeof result === "number" && Number.isInteger(result) && result >= 0) next = result;
    else return failed(s, span, new InvalidHandlerResultError(s.name, result));
    const before = s.writePos < 0 ? first : s.writePos;
    if (next <= before) {
      // No progress: leave the events queued and back off, so a handler that is waiting on
      // something outside does not spin.
      requeue(s, span);
      delay(s, troubles.stalled(s).stalls);
      return;
    }
    counters.handled += Math.min(next, end) - Math.max(before, first);
    s.writePos = next;
    troubles.clear(s);
    if (next < end) requeue(s, span);
    else trim(s);
    release(s);
    if (stopping || s.tranche.revoked) return;
    settle(s);
  }

  function trim(s: StreamState, duplicates = true) {
    const buf = s.buffer;
    if (buf.length === 0 || buf[0].index >= s.writePos) return;
    let i = 0;
    while (i < buf.length && buf[i].index < s.writePos) i++;
    if (duplicates) counters.duplicates += i;
    buf.splice(0, i);
  }

  function failed(s: StreamState, span: StreamEvent[], error: unknown) {
    counters.failures++;
    requeue(s, span);
    if (s.tranche.revoked) return;
    const t = troubles.failed(s, error);
    const failure = failureOf(s, span, t);
    hooks.onHandlerError(failure, invalid.has(span[0]));
    const policy = opts.policyOf(s.name);
    if (policy.kind === "fault") {
      const maxAttempts = policy.maxAttempts ?? 3;
      const maxFailing = policy.maxFailingStreams ?? Infinity;
      if (t.attempts >= maxAttempts || failing.size > maxFailing) {
        const reason = t.attempts >= maxAttempts
          ? `${s.name} failed ${t.attempts} times`
          : `${failing.size} streams failing (limit ${maxFailing})`;
        return fault(
          new PipelineFaultError(reason, [...failing].map((f) => failureOf(f, f.buffer))),
        );
      }
    } else if (policy.kind === "deadLetter" && t.attempts >= policy.maxAttempts) {
      return deadLetter(s, span, failure, policy.deadLetter);
    } else if (policy.kind === "park" && t.attempts >= policy.maxAttempts) {
      return parkStream(s, policy, t);
    }
    delay(s, t.attempts);
  }

  function deadLetter(
    s: StreamState,
    span: StreamEvent[],
    failure: StreamFailure,
    park: (failure: StreamFailure) => Promise<void> | void,
  ) {
    // The stream stays busy while parked so that nothing else runs for it meanwhile.
    s.busy = true;
    active++;
    s.startedAt = Date.now();
    const done = (ok: boolean, error?: unknown) => {
      s.busy = false;
      callEnded(s);
      active--;
      if (s.tranche.revoked) {
        revoking.get(s.tranche)?.();
        leftBehind(s);
      } else if (!ok) {
        const t = troubleOf(s);
        t.lastError = error;
        delay(s, t.attempts);
      } else {
        counters.deadLettered++;
        troubles.clear(s);
        const end = span[0].index + span.length;
        if (end > s.writePos) s.writePos = end;
        trim(s, false); // the parked events, put back when they failed: not duplicates
        release(s);
        settle(s);
      }
      progressed = true;
      dispatch();
    };
    Promise.resolve().then(() => park(failure)).then(() => done(true), (e) => done(false, e));
  }

  // ---- Parking: a parked stream's events go to its park store, in order, until released or
  // skipped. Store operations hold the stream busy, as calls do, but take no handler slot: they
  // are the store's to bound (the sink coalesces them), and a stop waits for them too.

  /** Parks `s` after its handler failed `t.attempts` times (or parks it again, mid-release). */
  function parkStream(s: StreamState, policy: ParkPolicy, t: Trouble) {
    const failure: ParkedFailure = {
      error: errorText(t.lastError),
      attempts: t.attempts,
      firstFailedAt: t.failingSince,
      lastFailedAt: Date.now(),
    };
    troubles.clear(s);
    const p = s.park;
    if (p === undefined) {
      const first = s.buffer.length > 0 ? s.buffer[0].index : Math.max(0, s.writePos);
      s.park = {
        store: policy.store,
        mode: "parked",
        episode: undefined,
        first,
        next: first,
        events: 0,
        since: failure.lastFailedAt,
        error: truncateParkError(failure.error, PARKED_ERROR_BYTES),
        attempts: failure.attempts,
        failure,
        handledTo: undefined,
        starting: undefined,
        replayEnd: 0,
        fetched: 0,
        lost: false,
      };
      parkedSet.add(s);
      counters.parked++;
    } else {
      // A release failed again: what it handled leaves the episode, the rest stays parked (and
      // is dropped from the buffer: it is stored), arrivals behind it are parked after it.
      p.failure = failure;
      p.handledTo = Math.max(0, s.writePos);
      p.error = truncateParkError(failure.error, PARKED_ERROR_BYTES);
      p.attempts = failure.attempts;
      p.first = p.handledTo;
      toParked(s, p);
      counters.parked++; // it parked again: counted as each parking is (the store records why)
      counters.releaseFailures++;
    }
    enqueue(s);
  }

  /** Back to parked (a release that failed again or lost its claim): stored events leave the buffer. */
  function toParked(s: StreamState, p: ParkState) {
    p.mode = "parked";
    p.starting = undefined;
    if (p.replayEnd > p.next) p.next = p.replayEnd;
    p.events = Math.max(0, p.next - p.first);
    if (s.writePos < p.next) s.writePos = p.next;
    trim(s, false);
  }

  /**
   * Back to parked after the claim was lost (the stream is not busy): a release says how far it
   * got, calls that were in flight when the claim was lost included, since the sink recorded its
   * progress as it was then and would replay those events again if it claims the request anew.
   */
  function claimGone(s: StreamState, p: ParkState) {
    if (p.mode === "release" && p.episode !== undefined) {
      io?.lost?.(p.store, s.name, p.episode, Math.max(p.first, s.writePos));
    }
    toParked(s, p);
  }

  function unpark(s: StreamState) {
    s.park = undefined;
    parkedSet.delete(s);
  }

  /**
   * Runs one store operation for a parked stream, holding it busy; `ok` or `fail` runs after,
   * unless the stream was let go of meanwhile (revoked, forgotten or unparked).
   */
  function parkOp<T>(
    s: StreamState,
    op: () => Promise<T>,
    ok: (value: T, p: ParkState) => void,
  ) {
    const p = s.park!;
    s.busy = true;
    parkOps++;
    s.startedAt = Date.now();
    s.timedAt = -1;
    const after = (then: () => void) => {
      s.busy = false;
      callEnded(s);
      parkOps--;
      progressed = true;
      if (s.tranche.revoked) {
        revoking.get(s.tranche)?.();
        leftBehind(s);
      } else if (s.park === p) then();
      dispatch();
    };
    Promise.resolve().then(op).then(
      (value) =>
        after(() => {
          storeTroubles.delete(s);
          ok(value, p);
        }),
      (error) => after(() => storeFailed(s, error)),
    );
  }

  function storeFailed(s: StreamState, error: unknown) {
    counters.parkFailures++;
    const trouble = storeTroubles.get(s);
    if (trouble === undefined) storeTroubles.set(s, { since: Date.now(), error });
    else trouble.error = error;
    const t = troubles.failed(s, error);
    hooks.onPark?.({ kind: "storeFailed", stream: s.name, error, attempts: t.attempts });
    delay(s, t.attempts);
  }

  /** Writes `span` (and a pending failure) of a parked stream to its store. */
  function writePark(s: StreamState, span: StreamEvent[], now: number) {
    const p = s.park!;
    const { failure, handledTo } = p;
    // The tranche it was read from, so that with several members only its owner claims it.
    const from = s.tranche === detached ? {} : { tranche: s.tranche.name };
    const write: ParkWrite = failure === undefined
      ? { stream: s.name, events: span, ...from }
      : handledTo === undefined
      ? { stream: s.name, events: span, failure, ...from }
      : { stream: s.name, events: span, failure, handledTo, ...from };
    s.startedAt = now;
    parkOp(s, () =>
      io!.write(p.store, write).catch((error) => {
        if (span.length > 0) requeue(s, span);
        throw error;
      }), (outcome) => {
      if (outcome === "notParked") {
        // Released or skipped by another sink meanwhile: these events are this sink's to handle.
        unpark(s);
        if (span.length > 0) requeue(s, span);
        troubles.clear(s);
        settle(s);
        return;
      }
      if (p.failure === failure) {
        p.failure = undefined;
        p.handledTo = undefined;
      }
      if (failure !== undefined) {
        hooks.onPark?.({ kind: "parked", stream: s.name, failure });
      }
      if (span.length > 0) {
        const end = span[span.length - 1].index + 1;
        p.events += Math.max(0, end - Math.max(p.next, span[0].index));
        if (end > p.next) p.next = end;
        counters.parkedEvents += span.length;
        if (end > s.writePos) s.writePos = end;
      }
      troubles.clear(s);
      release(s); // the batches that waited for these events: they are stored
      settle(s);
    });
  }

  /**
   * The next step of a parked stream that is not busy; false when the usual path applies (a
   * parked stream's buffered events are then written by `start`, a release's replayed events
   * handled).
   */
  function parkStep(s: StreamState): boolean {
    const p = s.park!;
    if (p.lost) {
      p.lost = false;
      if (p.mode !== "parked") claimGone(s, p);
    }
    if (p.starting !== undefined) begin(s, p, p.starting);
    if (p.mode === "parked") {
      if (s.writePos < p.next) {
        // Stored already (by this sink before a restart, or by another): not to be written again.
        s.writePos = p.next;
        trim(s, false);
        release(s);
      }
      if (p.failure === undefined) return false;
      const head = s.buffer.length > 0 ? s.buffer[0].index : -1;
      if (head >= 0 && head === s.writePos) return false;
      writePark(s, [], Date.now()); // the failure alone: nothing contiguous to go with it
      return true;
    }
    if (p.mode === "release" && s.writePos < p.replayEnd) {
      const head = s.buffer.length > 0 ? s.buffer[0].index : Infinity;
      if (head === s.writePos) return false;
      const upTo = Math.min(head, p.replayEnd);
      if (p.fetched < upTo) {
        fetchPage(s, p);
        return true;
      }
      // Nothing stored between the write position and upTo (a gap was parked as such).
      s.writePos = upTo;
      if (s.writePos < p.replayEnd) return false; // the head, a stored event after the gap
    }
    resolvePark(s, p);
    return true;
  }

  /** Starts applying a claimed request (the stream is not busy). */
  function begin(s: StreamState, p: ParkState, entry: ParkedStream) {
    p.starting = undefined;
    // Parked again since the claim: the pending failure write clears the request.
    if (p.failure !== undefined || entry.request === undefined) return;
    p.episode = entry.episode;
    p.mode = entry.request.action;
    if (p.mode === "release") {
      p.replayEnd = Math.max(entry.next, p.next, s.writePos);
      p.first = entry.first;
      p.fetched = entry.first;
      // Back to the first parked event: none of them was handled. New arrivals, above, wait.
      s.writePos = entry.first;
    }
  }

  function fetchPage(s: StreamState, p: ParkState) {
    const from = p.fetched;
    const limit = Math.max(maxEventsPerCall, 100);
    parkOp(s, () => io!.page(p.store, s.name, p.episode!, from, limit), (events) => {
      troubles.clear(s);
      if (events.length === 0) p.fetched = Math.max(p.fetched, p.replayEnd);
      else {
        const last = events[events.length - 1].index + 1;
        p.fetched = last;
        if (last > p.replayEnd) p.replayEnd = last; // added since the release began
        // An unreadable record parked keeps its mark: it goes to the failure policy again.
        if (!anyInvalid && events.some((e) => invalid.has(e))) anyInvalid = true;
        if (events.length < limit) p.fetched = Math.max(last, p.replayEnd);
        const merged = events.filter((e) => e.index >= s.writePos);
        for (const e of s.buffer) insertEvent(merged, e, s.writePos);
        s.buffer = merged.length > 0 ? merged : NO_EVENTS;
      }
      enqueue(s);
    });
  }

  /** Resolves a release (every replayed event handled) or a skip. */
  function resolvePark(s: StreamState, p: ParkState) {
    const expected = p.mode === "release" ? p.replayEnd : undefined;
    parkOp(s, () => io!.resolve(p.store, s.name, p.episode!, expected), (result) => {
      troubles.clear(s);
      if (result.kind === "moved") {
        p.replayEnd = result.next; // events were added meanwhile: replay them too
        enqueue(s);
        return;
      }
      if (result.kind === "lost") {
        hooks.onPark?.({ kind: "claimLost", stream: s.name });
        claimGone(s, p);
        settle(s);
        return;
      }
      if (result.kind === "resolved" && result.entry.state === "parked") {
        // A bounded skip: the events parked since it was asked stay parked, for the operator.
        counters.skipped++;
        hooks.onPark?.({ kind: "resolved", entry: { ...result.entry, state: "skipped" } });
        toParked(s, p);
        p.first = result.entry.first;
        if (result.entry.next > p.next) p.next = result.entry.next;
        p.events = result.entry.events;
        if (s.writePos < p.next) s.writePos = p.next;
        settle(s);
        return;
      }
      if (result.kind === "resolved") {
        if (result.entry.state === "released") counters.released++;
        else counters.skipped++;
        hooks.onPark?.({ kind: "resolved", entry: result.entry });
      }
      // Skipped (or resolved elsewhere): the parked events are gone, the stream carries on after.
      const next = result.kind === "resolved" ? Math.max(p.next, result.entry.next) : p.next;
      if (s.writePos < next) {
        s.writePos = next;
        trim(s, false);
        release(s);
      }
      unpark(s);
      settle(s);
    });
  }

  function markParked(store: ParkStore, entries: readonly ParkedStream[]) {
    const listed = new Set<string>();
    for (const e of entries) if (e?.state === "parked") listed.add(e.stream);
    for (const s of [...parkedSet]) {
      const p = s.park!;
      if (s.tranche !== detached || p.store !== store || listed.has(s.name)) continue;
      if (s.busy || p.mode !== "parked" || p.starting !== undefined || p.failure !== undefined) {
        continue;
      }
      unpark(s); // resolved by the member that reads it
      settle(s);
    }
    for (const e of entries) {
      if (e?.state !== "parked") continue;
      let s = streams.get(e.stream);
      if (s === undefined) {
        // In its tranche when that is read here, so that revoking the tranche reaches it.
        const t = e.tranche === undefined ? undefined : tranches.get(e.tranche);
        s = stateOf(e.stream, t ?? detached);
        s.writePos = e.next;
      }
      const p = s.park;
      if (p === undefined) {
        s.park = {
          store,
          mode: "parked",
          episode: e.episode,
          first: e.first,
          next: e.next,
          events: e.events,
          since: e.parkedAt,
          error: truncateParkError(e.error, PARKED_ERROR_BYTES),
          attempts: e.attempts,
          failure: undefined,
          handledTo: undefined,
          starting: undefined,
          replayEnd: 0,
          fetched: 0,
          lost: false,
        };
        parkedSet.add(s);
        // Events below the store's next are parked already: the catch-up happens at the next
        // step (now, unless a call is running).
        if (!s.busy) settle(s);
      } else if (p.mode === "parked" && p.store === store) {
        p.episode = e.episode;
        if (e.next > p.next) p.next = e.next;
        p.events = e.events;
      }
    }
    dispatch();
  }

  function apply(store: ParkStore, entry: ParkedStream) {
    if (entry?.state !== "parked" || entry.request === undefined || stopping) return;
    let s = streams.get(entry.stream);
    if (s?.park === undefined) {
      markParked(store, [entry]);
      s = streams.get(entry.stream)!;
    }
    const p = s.park!;
    if (p.mode !== "parked" || p.starting !== undefined) return; // being applied already
    p.starting = entry;
    enqueue(s);
    dispatch();
  }

  function applying() {
    const out = [];
    for (const s of parkedSet) {
      const p = s.park!;
      const episode = p.starting?.episode ?? p.episode;
      if ((p.mode === "parked" && p.starting === undefined) || episode === undefined) continue;
      // Progress only once a replay has begun: before that the write position is the parked
      // next, and reporting it would drop events that were never handled.
      const replaying = p.mode === "release" && p.starting === undefined;
      out.push({
        store: p.store,
        stream: s.name,
        episode,
        ...(replaying ? { handledTo: Math.max(p.first, s.writePos) } : {}),
      });
    }
    return out;
  }

  function claimLost(stream: StreamName) {
    const s = streams.get(stream);
    if (s?.park === undefined) return;
    s.park.lost = true;
    s.park.starting = undefined;
    enqueue(s);
    dispatch();
  }

  function delay(s: StreamState, attempt: number) {
    if (stopping) return;
    troubles.delay(s, opts.backoff.delay(attempt));
  }

  function fault(error: PipelineFaultError) {
    if (faulted) return;
    faulted = true;
    stop();
    hooks.onFault(error);
  }

  function stop() {
    stopping = true;
    for (const s of delayed) {
      clearTimeout(s.trouble?.retryTimer);
      if (s.trouble) s.trouble.retryTimer = undefined;
    }
    delayed.clear();
  }

  function failureOf(
    s: StreamState,
    events: readonly StreamEvent[],
    t: Trouble = troubleOf(s),
  ): StreamFailure {
    return {
      stream: s.name,
      events,
      error: t.lastError,
      attempts: t.attempts,
      since: t.failingSince,
    };
  }

  // Revocations in progress: called whenever a call on the tranche ends.
  const revoking = new Map<TrancheState, (all?: boolean) => void>();

  /**
   * The streams last read from a tranche. A scan rather than an index kept per batch:
   * revocations are rare, batches are not.
   */
  function streamsOf(t: TrancheState): StreamState[] {
    const list: StreamState[] = [];
    for (const s of streams.values()) if (s.tranche === t) list.push(s);
    return list;
  }

  function awaitedElsewhere(s: StreamState, t: TrancheState): boolean {
    if (s.wait === undefined) return false;
    if (s.wait.tranche !== t) return true;
    const waits = s.waits;
    if (waits === undefined) return false;
    for (let i = 0; i < waits.length; i += 2) if ((waits[i] as Tracker).tranche !== t) return true;
    return false;
  }

  /** Drops `t`'s batches from the ones waiting on `s`. */
  function dropWaits(s: StreamState, t: TrancheState) {
    if (s.wait === undefined) return;
    const waits = s.waits ?? [];
    const kept: Array<Tracker | number> = s.wait.tranche !== t ? [s.wait, s.waitTo] : [];
    for (let i = 0; i < waits.length; i += 2) {
      if ((waits[i] as Tracker).tranche !== t) kept.push(waits[i], waits[i + 1]);
    }
    if (kept.length === 0) {
      s.wait = undefined;
      s.waits = undefined;
      return;
    }
    s.wait = kept[0] as Tracker;
    s.waitTo = kept[1] as number;
    s.waits = kept.length > 2 ? kept.slice(2) : undefined;
  }

  /** After a call that ran on a revoked tranche: a stream whose tranche was forgotten goes too. */
  function leftBehind(s: StreamState) {
    // No longer idle either: an idle queue entry of it must not purge the stream's next state.
    s.idle = false;
    if (tranches.get(s.tranche.name) !== s.tranche && streams.get(s.name) === s) {
      streams.delete(s.name);
      parkedSet.delete(s);
    }
  }

  function revoke(name: string): Promise<void> {
    const t = tranches.get(name);
    if (t === undefined) return Promise.resolve();
    t.revoked = true;
    let busy = 0;
    for (const s of streamsOf(t)) {
      if (s.busy) busy++;
      // A stream also awaited by another tranche's batches keeps its events for that tranche
      // (one owner at a time holds only for streams that live in one tranche).
      if (awaitedElsewhere(s, t)) continue;
      s.buffer = NO_EVENTS;
      if (s.trouble?.retryTimer !== undefined) troubles.clear(s);
    }
    if (busy === 0) return Promise.resolve();
    // No call starts on the tranche any more, so the count of running ones only goes down.
    return new Promise<void>((resolve) => {
      revoking.set(t, (all = false) => {
        if (!all && --busy > 0) return;
        revoking.delete(t);
        resolve();
      });
    });
  }

  function abandon(name: string): number {
    const t = tranches.get(name);
    if (t === undefined) return 0;
    let busy = 0;
    for (const s of streamsOf(t)) if (s.busy) busy++;
    t.abort?.abort(new ImpelError("Revoked", `tranche ${name} was revoked`));
    revoking.get(t)?.(true);
    return busy;
  }

  // Who waits for a call on a revoked tranche to end (`ended`), by stream.
  const endWaiters = new Map<StreamState, Array<() => void>>();

  /** A call (or park store operation) of `s` ended: whoever waits for it through `ended` is told. */
  function callEnded(s: StreamState) {
    if (endWaiters.size === 0) return;
    const waiters = endWaiters.get(s);
    if (waiters === undefined) return;
    endWaiters.delete(s);
    for (const w of waiters) w();
  }

  function ended(name: string): Promise<void> {
    const t = tranches.get(name);
    if (t === undefined) return Promise.resolve();
    const running: Promise<void>[] = [];
    for (const s of streamsOf(t)) {
      if (!s.busy) continue;
      running.push(
        new Promise<void>((resolve) => {
          const waiters = endWaiters.get(s);
          if (waiters) waiters.push(resolve);
          else endWaiters.set(s, [resolve]);
        }),
      );
    }
    return Promise.all(running).then(() => {});
  }

  function forget(name: string) {
    const t = tranches.get(name);
    if (t === undefined) return;
    const unqueued: StreamState[] = [];
    for (let i = t.head; i < t.queue.length; i++) {
      const tracker = t.queue[i];
      if (tracker.pending > 0) uncompleted--;
      counters.revokedBatches++;
      // Streams queued under this batch lose their place with it: queued again below if another
      // tranche's batch still waits on them.
      const ready = tracker.ready;
      if (ready !== undefined) {
        for (let j = tracker.readyHead; j < ready.length; j++) {
          ready[j].queued = false;
          unqueued.push(ready[j]);
        }
      }
      tracker.ready = undefined;
    }
    const kept: StreamState[] = [];
    for (const s of streams.values()) {
      if (s.tranche !== t) {
        // Read from another tranche since: only this tranche's waits go.
        if (s.wait !== undefined) dropWaits(s, t);
      } else if (awaitedElsewhere(s, t)) {
        dropWaits(s, t);
        s.tranche = s.wait!.tranche;
        kept.push(s);
      } else if (s.busy) {
        // A call abandoned after the revocation timed out still runs: the state stays, reset,
        // so that a new period of the tranche waits for that call instead of starting another.
        troubles.clear(s);
        unpark(s); // a new owner of the tranche reads the park store again
        s.wait = undefined;
        s.waits = undefined;
        s.buffer = NO_EVENTS;
        s.writePos = -1;
      } else {
        troubles.clear(s);
        unpark(s);
        s.wait = undefined;
        s.waits = undefined;
        s.idle = false;
        streams.delete(s.name);
      }
    }
    for (let i = buckets.length - 1; i >= 0; i--) {
      if (buckets[i].tranche === t) buckets.splice(i, 1);
    }
    readAhead -= t.readAhead;
    revoking.delete(t);
    tranches.delete(name);
    for (const s of kept) settle(s);
    for (const s of unqueued) {
      if (streams.get(s.name) === s && !s.busy && !s.tranche.revoked) settle(s);
    }
    progressed = true;
    dispatch();
  }

  function checkStuck() {
    const policy = opts.failure;
    if (policy.kind !== "fault" || policy.maxStuckMs === undefined || stopping) return;
    const limit = policy.maxStuckMs;
    // The check scans every stream: a quarter of the limit between scans bounds both its cost
    // (about 17 ms per million streams) and how late a fault comes.
    const at = Date.now();
    if (at - lastStuckCheck < limit / 4) return;
    lastStuckCheck = at;
    const over = snapshot().stuck.filter((s) => s.ageMs >= limit);
    if (over.length === 0) return;
    const now = Date.now();
    fault(
      new PipelineFaultError(
        `${over.length} stream(s) without progress for ${limit} ms or more`,
        over.map((s) => ({
          stream: s.stream,
          events: streams.get(s.stream)?.buffer ?? NO_EVENTS,
          error: new ImpelError("Stuck", `no progress for ${Math.round(s.ageMs)} ms`),
          attempts: s.attempts,
          since: now - s.ageMs,
        })),
      ),
    );
  }

  function snapshot(): SchedulerSnapshot {
    const now = Date.now();
    const stuck: StreamStatus[] = [];
    const listed = new Set<StreamState>();
    const stuckSince = (s: StreamState, since: number, attempts: number) => {
      if (since > 0 && now - since >= opts.stuckAfterMs && !listed.has(s)) {
        listed.add(s);
        stuck.push({ stream: s.name, ageMs: now - since, attempts });
      }
    };
    for (const s of stalled) stuckSince(s, troubleOf(s).stalledSince, troubleOf(s).stalls);
    for (const s of gapped) stuckSince(s, troubleOf(s).gapSince, 0);
    const states = {} as Record<StreamStateName, StreamStateTotals>;
    for (const name of STREAM_STATES) states[name] = { streams: 0, events: 0, bytes: 0 };
    let bufferedEvents = 0;
    const busy: StreamStatus[] = [];
    // A scan rather than sets kept per call: snapshots are rare, handler calls are not.
    for (const s of streams.values()) {
      const attempts = s.trouble?.attempts ?? 0;
      if (s.busy) {
        const status = { stream: s.name, ageMs: now - s.startedAt, attempts: attempts + 1 };
        busy.push(status);
        if (status.ageMs >= opts.stuckAfterMs && !listed.has(s)) {
          listed.add(s);
          stuck.push(status);
        }
      }
      const buf = s.buffer;
      if (buf.length === 0 && !s.busy) continue;
      bufferedEvents += buf.length;
      const state: StreamStateName = listed.has(s)
        ? "stuck"
        : attempts > 0
        ? "failing"
        : s.busy
        ? "active"
        : s.trouble?.retryTimer === undefined && (s.writePos < 0 || buf[0].index === s.writePos)
        ? "ready"
        : "buffered";
      const totals = states[state];
      totals.streams++;
      totals.events += buf.length;
      for (let i = 0; i < buf.length; i++) totals.bytes += buf[i].size || 0;
    }
    const byAge = (a: StreamStatus, b: StreamStatus) => b.ageMs - a.ageMs;
    const parked: ParkedStatus[] = [];
    let parkedEvents = 0;
    for (const s of parkedSet) {
      const p = s.park!;
      parkedEvents += p.events;
      parked.push({
        stream: s.name,
        events: p.events,
        ageMs: Math.max(0, now - p.since),
        attempts: p.attempts,
        error: p.error,
        state: p.mode === "release" ? "releasing" : p.mode === "skip" ? "skipping" : "parked",
      });
    }
    parked.sort(byAge);
    // The oldest park store failure of a stream still known (a dropped stream's is forgotten).
    let storeTrouble: { since: number; error: unknown } | undefined;
    for (const [t, trouble] of storeTroubles) {
      if (streams.get(t.name) !== t) storeTroubles.delete(t);
      else if (storeTrouble === undefined || trouble.since < storeTrouble.since) {
        storeTrouble = trouble;
      }
    }
    return {
      streams: streams.size,
      bufferedEvents,
      states,
      busy: busy.sort(byAge),
      failing: [...failing].map((s) => {
        const t = troubleOf(s);
        return {
          stream: s.name,
          ageMs: now - t.failingSince,
          attempts: t.attempts,
          error: t.lastError,
        };
      }).sort(byAge),
      stuck: stuck.sort(byAge),
      uncompletedBatches: uncompleted,
      parked: {
        streams: parked.length,
        events: parkedEvents,
        oldestMs: parked[0]?.ageMs ?? 0,
        oldest: parked.slice(0, 20),
        ...(storeTrouble === undefined ? {} : { storeFailing: { ...storeTrouble } }),
      },
    };
  }

  return {
    ingest,
    get uncompleted() {
      return uncompleted;
    },
    get readAhead() {
      return readAhead;
    },
    get active() {
      return active + parkOps;
    },
    tranches,
    counters,
    latency,
    stop,
    abortHandlers(reason) {
      handlerAbort.abort(reason);
    },
    snapshot,
    checkStuck,
    fault,
    revoke,
    abandon,
    ended,
    forget,
    markParked,
    apply,
    applying,
    claimLost,
  };
}

function checkBatch(batch: Batch) {
  if (batch === null || typeof batch !== "object") {
    throw new ImpelError("InvalidBatch", `a batch must be an object, got ${String(batch)}`);
  }
  if (typeof batch.tranche !== "string" || batch.tranche.length === 0) {
    throw new ImpelError(
      "InvalidBatch",
      `batch.tranche must be a non-empty string, got ${JSON.stringify(batch.tranche)}`,
    );
  }
  if (!Array.isArray(batch.items)) {
    throw new ImpelError(
      "InvalidBatch",
      `batch.items of tranche ${batch.tranche} must be an array`,
    );
  }
  if (typeof batch.position !== "bigint") {
    throw new ImpelError(
      "InvalidBatch",
      `batch.position of tranche ${batch.tranche} must be a bigint, got ${typeof batch.position}`,
    );
  }
  const items = batch.items;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    const index = item?.event?.index;
    if (typeof item?.stream !== "string" || !Number.isInteger(index) || index < 0) {
      throw new ImpelError(
        "InvalidBatch",
        `batch item ${i} of tranche ${batch.tranche} needs a string stream and an event with a non-negative integer index`,
      );
    }
  }
  if (typeof batch.isTail !== "boolean") {
    throw new ImpelError(
      "InvalidBatch",
      `batch.isTail of tranche ${batch.tranche} must be a boolean`,
    );
  }
  if (batch.commit !== undefined && typeof batch.commit !== "function") {
    throw new ImpelError(
      "InvalidBatch",
      `batch.commit of tranche ${batch.tranche} must be a function`,
    );
  }
}
