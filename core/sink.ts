/**
 * The streams sink: the scheduler with an application handler, as a `WritableStream` of
 * batches, with read-ahead backpressure, ordered coalesced checkpointing, a monitor, stats and a
 * clean stop; and {@linkcode run}, which pipes a source into it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, ObservableSource, Position, SourceProblem } from "./batch.ts";
import type { Ownership, RevocationOutcome } from "./ownership.ts";
import { checkInteger, checkNumber, ImpelError, InvalidArgumentError } from "./errors.ts";
import { checkFailurePolicy, errorText, parkPolicies, PipelineFaultError } from "./failure.ts";
import { createMonitor, type Monitor } from "./monitor.ts";
import type { ParkStore } from "./park.ts";
import { createParking } from "./parking.ts";
import { createScheduler, type SchedulerOptions } from "./scheduler.ts";
import { withTimeout } from "./timeout.ts";
import { type CommitTrouble, type SinkStats, sinkStats, statsLogger } from "./stats.ts";
import type { Codec, TypedEvent } from "./codec.ts";
import { decodingHandler, type TypedHandler } from "./typed.ts";
import { checkLeasedSource } from "./lease.ts";

/**
 * Options of {@linkcode streamsSink}.
 *
 * @example
 * ```ts
 * import { streamsSink, type StreamsSinkOptions } from "@impel/impel";
 *
 * const options: StreamsSinkOptions = {
 *   group: "order-emails",
 *   handler: (stream, events) => console.log(stream, events.map((e) => e.type)),
 *   maxConcurrentStreams: 8,
 *   maxReadAhead: 4,
 *   commitIntervalMs: 500,
 *   stopTimeoutMs: 5_000,
 *   statsIntervalMs: 0, // a metrics exporter reads sink.stats() instead
 * };
 * const sink = streamsSink(options);
 * await sink.stop();
 * ```
 *
 * @category Pipeline
 */
export interface StreamsSinkOptions extends SchedulerOptions {
  /**
   * The consumer group: a label for logs and stats, and the key of its parked streams in a park
   * store (default `"default"`).
   */
  readonly group?: string;
  /**
   * Most batches in flight, i.e. not yet passed by their tranche's checkpoint position, before
   * the source is held back (default 16). A batch finished behind an unfinished one still counts,
   * so a stuck stream bounds memory and the work redone after a restart.
   */
  readonly maxReadAhead?: number;
  /** How often completed positions are committed (default 1000 ms); a final commit runs on stop. */
  readonly commitIntervalMs?: number;
  /** How long a stop waits for in-flight handlers before aborting their signal (default 10 s). */
  readonly stopTimeoutMs?: number;
  /** How often a stats line is logged (default 60 s; 0 turns it off). */
  readonly statsIntervalMs?: number;
}

/**
 * Options of a sink whose handler gets decoded, typed events: `codec` decodes each span first;
 * an event it cannot read fails its stream with `EventDecodeError` under the failure policy.
 *
 * @example
 * ```ts
 * import { createCodec, streamsSink } from "@impel/impel";
 * type Event = { type: "Charged"; data: { amount: number } } | { type: "Refunded"; data: {} };
 * const codec = createCodec<Event>({ Charged: {}, Refunded: {} });
 * const sink = streamsSink({
 *   codec,
 *   handler: (stream, events) => {
 *     for (const e of events) if (e.type === "Charged") console.log(stream, e.data.amount);
 *   },
 *   statsIntervalMs: 0,
 * });
 * await sink.stop();
 * ```
 *
 * @category Pipeline
 */
export interface TypedStreamsSinkOptions<E extends TypedEvent>
  extends Omit<StreamsSinkOptions, "handler"> {
  /** Decodes each event before the handler sees it. */
  readonly codec: Codec<E>;
  /** The application handler, of decoded events. */
  readonly handler: TypedHandler<E>;
}

/**
 * A running streams sink. Pipe a source into `writable` with {@linkcode run}.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
 * await sink.stop();
 * ```
 *
 * @category Pipeline
 */
export interface StreamsSink {
  /** Where batches go. `write` resolves once the batch is accepted within the read-ahead limit. */
  readonly writable: WritableStream<Batch>;
  /** Deterministic waits. */
  readonly monitor: Monitor;
  /**
   * Stops: ends the pipe into `writable`, drains in-flight handlers within the stop timeout and
   * commits; idempotent. Resolves when stopped; a fault is reported through `done`.
   */
  stop(): Promise<void>;
  /** Resolves once stopped and flushed; rejects with the fault if the failure policy faulted. */
  readonly done: Promise<void>;
  /** Commits the completed positions now. */
  flush(): Promise<void>;
  /** A structured view for stats, metrics and health. */
  stats(): SinkStats;
  /**
   * Lets the failure policy see what the source reports (`ObservableSource.problems`), for
   * `maxSourceFailureMs`, and the monitor its heads (`ObservableSource.heads`), for an exact
   * `awaitCompletion`; {@linkcode run} calls it with the source it pipes in.
   */
  watchSource(
    problems: () => readonly SourceProblem[],
    heads?: () => Promise<ReadonlyMap<string, Position>>,
  ): void;
  /** The park stores of its failure policy (for the management API); empty without `park`. */
  readonly parkStores: readonly ParkStore[];
  /**
   * The longest it waits for calls in flight (on stop and on a revocation), ms: what a leased
   * source's `handoverMs` must cover twice ({@linkcode run} checks it).
   */
  readonly stopTimeoutMs: number;
}

/**
 * The sink was stopped before what was awaited happened.
 *
 * @example
 * ```ts
 * import { PipelineStoppedError, streamsSink } from "@impel/impel";
 *
 * const sink = streamsSink({ handler: () => {} });
 * await sink.stop();
 * await sink.monitor.awaitCompletion().catch((e) => {
 *   console.log(e instanceof PipelineStoppedError, e.code); // true PipelineStopped
 * });
 * ```
 *
 * @category Errors
 */
export class PipelineStoppedError extends ImpelError {
  /** Creates the error. */
  constructor() {
    super("PipelineStopped", "the pipeline stopped");
  }
}

/**
 * Creates a streams sink: the scheduler running `handler`, behind a `WritableStream<Batch>`.
 *
 * Checkpoints: each batch's `commit` is called with the position of the latest batch of its
 * tranche such that it and every earlier batch of that tranche are complete, every
 * `commitIntervalMs` and once more on stop. A failed commit is logged and retried on the next
 * interval; a failed final commit rejects `done`.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const seen: string[] = [];
 * const sink = streamsSink({ handler: (stream, events) => void seen.push(`${stream}@${events.length}`) });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running; // seen: ["Order-1@1"]
 * ```
 *
 * @category Pipeline
 */
export function streamsSink<E extends TypedEvent>(options: TypedStreamsSinkOptions<E>): StreamsSink;
/**
 * Creates a streams sink whose handler gets the stored events as they are.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * const sink = streamsSink({ group: "billing", handler: () => {}, statsIntervalMs: 0 });
 * await sink.stop();
 * ```
 *
 * @category Pipeline
 */
export function streamsSink(options: StreamsSinkOptions): StreamsSink;
export function streamsSink(
  given: StreamsSinkOptions | TypedStreamsSinkOptions<TypedEvent>,
): StreamsSink {
  if (given === null || typeof given !== "object") {
    throw new InvalidArgumentError("options", "must be an object with a handler");
  }
  const options: StreamsSinkOptions = "codec" in given && given.codec !== undefined
    ? { ...given, handler: decodingHandler(given.codec, given.handler) }
    : given as StreamsSinkOptions;
  const group = options.group ?? "default";
  const maxReadAhead = checkInteger("maxReadAhead", options.maxReadAhead ?? 16, 1);
  const commitIntervalMs = checkNumber("commitIntervalMs", options.commitIntervalMs ?? 1000, 1);
  const stopTimeoutMs = checkNumber("stopTimeoutMs", options.stopTimeoutMs ?? 10_000, 0);
  const statsIntervalMs = checkNumber("statsIntervalMs", options.statsIntervalMs ?? 60_000, 0);
  const log = getLogger(["impel", "sink"]);
  const parks = parkPolicies(checkFailurePolicy(options.failure ?? { kind: "retry" }));
  const parking = parks.length > 0
    ? createParking(group, parks, options.failure ?? { kind: "retry" })
    : undefined;
  // Aborted on stop: ends a park store read that waits for the store to come back.
  const stopSignal = new AbortController();

  let releaseWrite: (() => void) | undefined;
  let releaseClose: (() => void) | undefined;
  let idle: (() => void) | undefined;
  let faultError: PipelineFaultError | undefined;
  let stopping: Promise<void> | undefined;

  const scheduler = createScheduler(options, {
    onProgress() {
      if (releaseWrite && (scheduler.readAhead < maxReadAhead || stopping)) {
        const release = releaseWrite;
        releaseWrite = undefined;
        release();
      }
      if (releaseClose && scheduler.uncompleted === 0) releaseClose();
      if (idle && scheduler.active === 0) idle();
      control.check();
    },
    onFault(error) {
      faultError = error;
      log.error("{group}: {error}", { group, error: error.message });
      stop();
    },
    onHandlerError(f, unreadable) {
      const what = unreadable
        ? "{group}: a record of {stream} could not be read (attempt {attempts}): {error}"
        : "{group}: handler for {stream} failed (attempt {attempts}): {error}";
      log.warn(what, { group, stream: f.stream, attempts: f.attempts, error: errorText(f.error) });
      if (f.error instanceof Error && f.error.stack && log.isEnabledFor("debug")) {
        log.debug("{group}: {stream} failed at {stack}", {
          group,
          stream: f.stream,
          stack: f.error.stack,
        });
      }
    },
    onGapSkipped(gap) {
      log.warn("{group}: skipped a permanent gap: {error}", { group, error: gap.message });
    },
    parking: parking?.io,
    onPark(event) {
      if (event.kind === "parked") {
        log.error("{group}: parked {stream} after {attempts} attempts: {error}", {
          group,
          stream: event.stream,
          attempts: event.failure.attempts,
          error: event.failure.error,
        });
      } else if (event.kind === "storeFailed") {
        log.warn(
          "{group}: park store failed for {stream} (attempt {attempts}), will retry: {error}",
          {
            group,
            stream: event.stream,
            attempts: event.attempts,
            error: errorText(event.error),
          },
        );
      } else if (event.kind === "resolved") {
        const r = event.entry.resolution;
        log.warn("{group}: {stream} {state} ({events} events), as asked by {by}{reason}", {
          group,
          stream: event.entry.stream,
          state: event.entry.state,
          events: r?.events,
          by: r?.by,
          reason: r?.reason === undefined ? "" : `: ${r.reason}`,
        });
      } else {
        log.warn("{group}: lost the claim on {stream}; it is parked again here", {
          group,
          stream: event.stream,
        });
      }
    },
  });
  parking?.start(scheduler);

  const control = createMonitor({
    isComplete: (tail) => {
      if (scheduler.uncompleted > 0) return false;
      if (!tail) return true;
      // Nothing read yet is not "complete"; everything let go to other members is.
      if (scheduler.tranches.size === 0) return letGo.size > 0;
      for (const t of scheduler.tranches.values()) if (!t.isTail) return false;
      return true;
    },
    ingested: () => scheduler.counters.batches,
    completed: (tranche) => scheduler.tranches.get(tranche)?.completed,
    gone: (tranche) => letGo.has(tranche) && !scheduler.tranches.has(tranche),
  });

  // Per tranche: the last position committed, and the commit in flight (commits of one
  // tranche never overlap, so they land in order).
  const committed = new Map<string, Position>();
  const inFlight = new Map<string, Promise<void>>();
  const commitTrouble = new Map<string, CommitTrouble>();

  function commitTranche(name: string): Promise<void> {
    const running = inFlight.get(name);
    // After the commit in flight, whether it failed or not: a failed one must not cancel this.
    if (running) return running.then(() => commitTranche(name), () => commitTranche(name));
    const t = scheduler.tranches.get(name);
    if (
      !t || t.completed === undefined || t.commit === undefined ||
      committed.get(name) === t.completed
    ) {
      return Promise.resolve();
    }
    const position = t.completed;
    const commit = t.commit;
    // A commit that throws synchronously is a failed commit like any other, not a crash.
    const p = new Promise<void>((resolve) => resolve(commit(position))).then(
      () => {
        committed.set(name, position);
        commitTrouble.delete(name);
      },
      (error) => {
        const trouble = commitTrouble.get(name);
        if (trouble) {
          trouble.failures++;
          trouble.error = error;
        } else commitTrouble.set(name, { failures: 1, since: Date.now(), error });
        throw error;
      },
    ).finally(() => inFlight.delete(name));
    inFlight.set(name, p);
    return p;
  }

  // Revocations in progress by tranche: batches of a new ownership wait for them.
  const revocations = new Map<string, { ownership: Ownership; done: Promise<void> }>();

  /**
   * Lets go of a revoked tranche: nothing new starts, in-flight calls end (or are abandoned after
   * stopTimeoutMs), what was complete is committed once more, then the tranche is forgotten and
   * the source is told.
   */
  // Tranches revoked and let go (names only, as many as the source has).
  const letGo = new Set<string>();
  function revokeTranche(
    name: string,
    ownership: Ownership,
    release: (outcome: RevocationOutcome) => void,
  ) {
    const done = (async () => {
      let abandoned = 0;
      let settled: Promise<void> | undefined;
      try {
        await withTimeout(scheduler.revoke(name), stopTimeoutMs, `calls on revoked ${name}`);
      } catch {
        abandoned = scheduler.abandon(name);
        // Asked before `forget`, which drops the tranche: the source may hold on to its claim
        // (a lease) until these calls have really ended.
        if (abandoned > 0) settled = scheduler.ended(name);
        log.warn(
          "{group}: {abandoned} calls on revoked tranche {tranche} still running after {ms} ms; aborted their signal",
          {
            group,
            abandoned,
            tranche: name,
            ms: stopTimeoutMs,
          },
        );
      }
      let commitError: unknown;
      try {
        await withTimeout(
          commitTranche(name),
          stopTimeoutMs,
          `the final commit of revoked ${name}`,
        );
      } catch (error) {
        commitError = error;
        log.warn("{group}: final commit of revoked tranche {tranche} failed: {error}", {
          group,
          tranche: name,
          error: errorText(error),
        });
      }
      const position = committed.get(name);
      scheduler.forget(name);
      // Another member has it now: a wait for its head is no longer this sink's to satisfy.
      letGo.add(name);
      control.check();
      committed.delete(name);
      commitTrouble.delete(name);
      revocations.delete(name);
      release({
        committed: position,
        abandoned,
        ...(settled === undefined ? {} : { settled }),
        ...(commitError === undefined ? {} : { commitError }),
      });
    })();
    revocations.set(name, { ownership, done });
  }

  function accept(batch: Batch): Promise<void> | undefined {
    if (stopping) return;
    const ownership = batch?.ownership;
    const held = ownership !== undefined && !ownership.signal.aborted &&
      scheduler.tranches.get(batch.tranche)?.ownership !== ownership;
    try {
      scheduler.ingest(batch);
    } catch (error) {
      stop(error);
      throw error;
    }
    if (held) {
      const release = ownership.hold();
      ownership.signal.addEventListener(
        "abort",
        () => revokeTranche(batch.tranche, ownership, release),
        { once: true },
      );
    }
    control.check();
    // Ingesting can fault the sink at once (a permanent gap under a fault policy): stopped, it
    // never releases a write again, so this one must not wait.
    if (stopping || scheduler.readAhead < maxReadAhead) return;
    return new Promise<void>((resolve) => (releaseWrite = resolve));
  }

  /** Commits every tranche's completed position; a tranche being revoked commits on its own. */
  function flush(): Promise<void> {
    const names = [...scheduler.tranches.keys()].filter((name) => !revocations.has(name));
    return Promise.all(names.map(commitTranche)).then(() => {});
  }

  const failure = options.failure;
  const maxCommitFailureMs = failure?.kind === "fault" ? failure.maxCommitFailureMs : undefined;
  function checkCommits() {
    if (maxCommitFailureMs === undefined) return;
    const now = Date.now();
    for (const [tranche, trouble] of commitTrouble) {
      if (now - trouble.since < maxCommitFailureMs) continue;
      scheduler.fault(
        new PipelineFaultError(
          `checkpoint commits of tranche ${tranche} have failed for ${now - trouble.since} ms ` +
            `(${trouble.failures} attempts): ${errorText(trouble.error)}`,
          [],
          trouble.error,
        ),
      );
      return;
    }
  }

  const maxSourceFailureMs = failure?.kind === "fault" ? failure.maxSourceFailureMs : undefined;
  let sourceProblems: (() => readonly SourceProblem[]) | undefined;
  function checkSource() {
    if (maxSourceFailureMs === undefined || sourceProblems === undefined) return;
    let problems: readonly SourceProblem[];
    try {
      problems = sourceProblems();
    } catch {
      return; // a source whose report throws is health's to show, not a reason to fault
    }
    const now = Date.now();
    for (const p of Array.isArray(problems) ? problems : []) {
      if (p?.severity !== "failing" || !(now - p.since >= maxSourceFailureMs)) continue;
      scheduler.fault(
        new PipelineFaultError(
          `the source has been failing for ${now - p.since} ms: ${p.reason}`,
          [],
        ),
      );
      return;
    }
  }

  const commitTimer = setInterval(() => {
    scheduler.checkStuck();
    checkCommits();
    checkSource();
    for (const name of scheduler.tranches.keys()) {
      if (inFlight.has(name)) continue;
      commitTranche(name).catch((error) =>
        log.warn("{group}: checkpoint commit for tranche {tranche} failed, will retry: {error}", {
          group,
          tranche: name,
          error: errorText(error),
        })
      );
    }
  }, commitIntervalMs);

  const stats = () =>
    sinkStats(
      group,
      scheduler,
      committed,
      commitTrouble,
      maxReadAhead,
      parking?.trouble(),
      parking?.unclaimed(),
    );
  const logStats = statsLogger(group, stats, () => {
    scheduler.latency.ok.reset();
    scheduler.latency.failed.reset();
  });
  const statsTimer = statsIntervalMs > 0 ? setInterval(logStats, statsIntervalMs) : undefined;

  function drained(): Promise<void> {
    if (scheduler.active === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        idle = undefined;
        log.warn("{group}: {active} handlers still running after {ms} ms; aborting their signal", {
          group,
          active: scheduler.active,
          ms: stopTimeoutMs,
        });
        scheduler.abortHandlers(
          new ImpelError("StopTimeout", `stop timed out after ${stopTimeoutMs} ms`),
        );
        resolve();
      }, stopTimeoutMs);
      idle = () => {
        idle = undefined;
        clearTimeout(timer);
        resolve();
      };
    });
  }

  let settleDone!: (error?: unknown) => void;
  const done = new Promise<void>((resolve, reject) => {
    settleDone = (error) => error === undefined ? resolve() : reject(error);
  });
  done.catch(() => {}); // observed through run() or by the caller; never an unhandled rejection

  function stop(reason?: unknown): Promise<void> {
    if (stopping) return stopping;
    scheduler.stop();
    stopSignal.abort();
    // Tears down a pipe into this sink when the stop comes from inside (a fault, a bad batch,
    // a direct call); a no-op when the pipe is already closing or aborting.
    writableController?.error(faultError ?? reason ?? new PipelineStoppedError());
    releaseWrite?.();
    releaseWrite = undefined;
    releaseClose?.();
    stopping = (async () => {
      await drained();
      // Claims given up with their progress, so that the next sink resumes a release at once;
      // a store that hangs must not turn a stop into a stall (a claim also lapses on its own).
      if (parking !== undefined) {
        await withTimeout(parking.stop(), stopTimeoutMs, "giving up the park claims").catch(
          (error) => log.warn("{group}: {error}", { group, error: errorText(error) }),
        );
      }
      // Revocations under way finish first (each bounded by stopTimeoutMs): their final commit
      // is theirs to make, and the stop's flush must not commit for a tranche let go of.
      await Promise.all([...revocations.values()].map((r) => r.done));
      clearInterval(commitTimer);
      clearInterval(statsTimer);
      try {
        // A checkpoint store that hangs must not turn a stop into a stall.
        await withTimeout(flush(), stopTimeoutMs, "the final checkpoint commit", "CommitTimeout");
      } finally {
        if (statsIntervalMs > 0) logStats();
        control.close(faultError ?? new PipelineStoppedError());
      }
    })().then(() => settleDone(faultError), (error) => settleDone(faultError ?? error));
    return stopping;
  }

  /**
   * A tranche newly owned may hold streams that another sink of the group parked since this one
   * started: the parked streams are read again before its first batch.
   */
  function reloaded(batch: Batch): Promise<void> | undefined {
    const ownership = batch?.ownership;
    if (parking === undefined || ownership === undefined || ownership.signal.aborted) return;
    if (scheduler.tranches.get(batch.tranche)?.ownership === ownership) return;
    return parking.load(stopSignal.signal);
  }

  let writableController: WritableStreamDefaultController | undefined;
  const writable = new WritableStream<Batch>({
    start(controller) {
      writableController = controller;
      // Nothing is handled before the parked streams are known: their events go to the store.
      return parking?.load(stopSignal.signal);
    },
    write(batch) {
      // A new owner's batches wait until the previous owner's calls on the tranche have ended.
      const revoking = revocations.get(batch?.tranche);
      if (revoking !== undefined && batch.ownership !== revoking.ownership) {
        return revoking.done.then(() => reloaded(batch)).then(() => accept(batch));
      }
      const reload = reloaded(batch);
      return reload === undefined ? accept(batch) : reload.then(() => accept(batch));
    },
    async close() {
      if (!stopping && scheduler.uncompleted > 0) {
        await new Promise<void>((resolve) => (releaseClose = resolve));
        releaseClose = undefined;
      }
      await stop();
    },
    abort() {
      return stop();
    },
  });

  const sink: StreamsSink = {
    writable,
    monitor: control.monitor,
    stop: () => stop(),
    done,
    flush,
    stats,
    watchSource(problems, heads) {
      if (typeof problems === "function") sourceProblems = problems;
      if (typeof heads === "function") control.watchHeads(heads);
    },
    parkStores: parking?.stores ?? [],
    stopTimeoutMs,
  };
  if (options.group === undefined) defaultGroup.add(sink);
  return sink;
}

// Sinks whose group was left to the default: run() only warns when their source names a group.
const defaultGroup = new WeakSet<object>();

/**
 * Options of {@linkcode run}.
 *
 * @example
 * ```ts
 * import { run, type RunOptions, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * // Run for a tenth of a second, then stop cleanly (drain, commit, resolve).
 * const options: RunOptions = { signal: AbortSignal.timeout(100) };
 * await run(memorySource({ store }), streamsSink({ handler: () => {} }), options);
 * ```
 *
 * @category Pipeline
 */
export interface RunOptions {
  /** Aborting it stops the pipeline cleanly: stop reading, drain, commit, resolve. */
  readonly signal?: AbortSignal;
}

/**
 * Pipes `source` into `sink` and resolves when the pipeline has stopped cleanly: the signal was
 * aborted, or the source ended and everything it produced was handled. Rejects with the fault
 * if the failure policy faulted, or with the source's error if reading failed (after draining
 * and committing what was completed either way).
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * const ac = new AbortController();
 * const running = run(memorySource({ store: createMemoryStore() }), streamsSink({ handler: () => {} }), {
 *   signal: ac.signal,
 * });
 * ac.abort();
 * await running;
 * ```
 *
 * @category Pipeline
 */
export async function run(
  source: ReadableStream<Batch>,
  sink: Pick<StreamsSink, "writable" | "stop" | "done"> & Partial<Pick<StreamsSink, "watchSource">>,
  options: RunOptions = {},
): Promise<void> {
  if (typeof source?.getReader !== "function") {
    throw new InvalidArgumentError("source", "must be a ReadableStream of batches");
  }
  if (!(sink?.writable instanceof WritableStream) || typeof sink.stop !== "function") {
    throw new InvalidArgumentError("sink", "must be a streams sink (from streamsSink())");
  }
  const stopTimeoutMs = (sink as Partial<StreamsSink>).stopTimeoutMs;
  if (typeof stopTimeoutMs === "number") {
    try {
      // The source was told a stop timeout for its lease timing; this is the sink's real one.
      checkLeasedSource(source, stopTimeoutMs);
    } catch (error) {
      await source.cancel(error).catch(() => {});
      await sink.stop();
      throw error;
    }
  }
  const { problems, heads, group } = source as ObservableSource;
  const sinkGroup = (sink as Partial<StreamsSink>).stats?.().group;
  if (group !== undefined && sinkGroup !== undefined && group !== sinkGroup) {
    // Checkpoints under one group and parked streams and logs under another.
    const what = `has group "${sinkGroup}" but the source reads as group "${group}": ` +
      "give both the same group, or wire them with pipeline()";
    if (!defaultGroup.has(sink)) {
      // Refused before it ran: leave nothing running (a source may hold connections).
      const error = new InvalidArgumentError("sink", what);
      await source.cancel(error).catch(() => {});
      await sink.stop();
      throw error;
    }
    getLogger(["impel", "sink"]).warn("the sink {what} (the sink's was the default)", { what });
  }
  if (typeof problems === "function" || typeof heads === "function") {
    sink.watchSource?.(
      typeof problems === "function" ? () => problems.call(source) : () => [],
      typeof heads === "function" ? () => heads.call(source) : undefined,
    );
  }
  const { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError("signal", "must be an AbortSignal");
  }
  // A pump of our own rather than pipeTo: pipeTo waits for a pending write before it reacts to
  // an abort or to the source failing, and a write waits while the read-ahead is full.
  const reader = source.getReader();
  const writer = sink.writable.getWriter();
  const onAbort = () => {
    reader.cancel(signal?.reason).catch(() => {});
    void sink.stop();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  let sourceError: { error: unknown } | undefined;
  let sinkError: unknown;
  // A sink that stops itself (a fault, a bad batch) errors its stream: stop reading then.
  writer.closed.catch((error) => {
    sinkError ??= error;
    reader.cancel(error).catch(() => {});
  });
  // A source that fails while a write waits for room must not wait behind it: its stream's
  // closed promise tells without another read, so the sink stops and releases the write.
  reader.closed.catch((error) => {
    sourceError ??= { error };
    void sink.stop();
  });
  try {
    if (signal?.aborted) onAbort();
    while (!signal?.aborted) {
      // Spelled through the reader so it type-checks under Bun's types too (they lack the DOM's name).
      let result: Awaited<ReturnType<typeof reader.read>>;
      try {
        result = await reader.read();
      } catch (error) {
        sourceError ??= { error };
        break;
      }
      if (result.done) {
        if (!signal?.aborted) await writer.close().catch(() => {}); // drains; a fault shows in done
        break;
      }
      try {
        await writer.write(result.value);
      } catch (error) {
        sinkError = error;
        reader.cancel(error).catch(() => {});
        break;
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  await sink.stop(); // already stopped unless the source failed
  await sink.done;
  if (sourceError) throw sourceError.error;
  if (sinkError !== undefined && !(sinkError instanceof PipelineStoppedError)) throw sinkError;
}
