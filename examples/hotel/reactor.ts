/**
 * The group checkout reactor: a process manager driven by the GroupCheckout category.
 *
 * Whenever a group's stream has new events, the handler loads the group's state (its to-do
 * list), transfers every stay still pending to the group, records the outcomes on the group's
 * stream, and repeats until nothing is pending. It then reports the group's version as the next
 * index: the events it wrote itself are below it, so the scheduler drops them instead of calling
 * the handler for them again. Only the state matters, not which events triggered the call, so
 * redelivered or batched events are handled the same way (the reactor is idempotent: every
 * transfer and record is a decision on current state).
 *
 * @module
 */
import type { Batch, ObservableSource } from "../../core/batch.ts";
import type { Handler } from "../../core/scheduler.ts";
import { run, type StreamsSink, streamsSink, type StreamsSinkOptions } from "../../core/sink.ts";
import { idOf } from "../../core/streamName.ts";
import type { ImpelMetrics } from "../../observability/metrics.ts";
import { type GroupCheckoutService, type MergeOutcome, nextAction } from "./groupCheckout.ts";
import type { GuestStayService } from "./guestStay.ts";

/** The consumer group the reactor's checkpoints are kept under. */
export const REACTOR_GROUP = "GroupCheckoutReactor";

/** Counts of what the reactor did, for progress reports. */
export interface ReactorCounters {
  /** Stays transferred to a group. */
  merged: number;
  /** Stays that could not be transferred. */
  failed: number;
  /** Handler calls that found nothing to do. */
  idle: number;
}

/** What the handler needs. */
export interface GroupCheckoutHandlerOptions {
  /** Stays, to transfer. */
  readonly stays: GuestStayService;
  /** Groups, to read and record outcomes. */
  readonly groups: GroupCheckoutService;
  /** Transfers in flight at once per group (default 4). */
  readonly maxConcurrentTransfers?: number;
  /** The clock stamped on transfers (default: now). */
  readonly now?: () => string;
  /** Incremented as the reactor works. */
  readonly counters?: ReactorCounters;
}

/** Runs `fn` over `items` with at most `limit` calls in flight, keeping the order of results. */
async function mapLimit<T, U>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<U>,
): Promise<U[]> {
  const out = new Array<U>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * The handler for GroupCheckout streams.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { groupCheckoutService } from "./groupCheckout.ts";
 * import { guestStayService } from "./guestStay.ts";
 * import { groupCheckoutHandler } from "./reactor.ts";
 * const store = createMemoryStore();
 * const handler = groupCheckoutHandler({ stays: guestStayService(store), groups: groupCheckoutService(store) });
 * ```
 */
export function groupCheckoutHandler(options: GroupCheckoutHandlerOptions): Handler {
  const { stays, groups, counters } = options;
  const limit = options.maxConcurrentTransfers ?? 4;
  const now = options.now ?? (() => new Date().toISOString());
  return async (stream) => {
    const groupId = idOf(stream);
    let { state, version } = await groups.read(groupId);
    if (counters && nextAction(state).kind !== "merge") counters.idle++;
    for (let action = nextAction(state); action.kind === "merge"; action = nextAction(state)) {
      const outcomes = await mapLimit(
        action.stayIds,
        limit,
        async (stayId): Promise<MergeOutcome> => ({
          stayId,
          result: await stays.transferToGroup(stayId, groupId, now()),
        }),
      );
      // Stays selected meanwhile show up as pending in the new state, and the loop takes them
      // on: the version reported below must never pass a selection that has not been handled.
      const before = state;
      ({ state, version } = await groups.recordMerges(groupId, outcomes));
      if (counters) {
        // Counted from the recorded outcomes, so a retried call does not count a stay twice.
        counters.merged += state.merged.length - before.merged.length;
        counters.failed += state.failed.length - before.failed.length;
      }
    }
    return version;
  };
}

/** Options of {@linkcode startReactor}. */
export interface ReactorOptions extends GroupCheckoutHandlerOptions {
  /** Batches of the GroupCheckout category, from the store the services write to. */
  readonly source: ReadableStream<Batch>;
  /** Scheduler and sink settings (the handler is the reactor's). */
  readonly sink?: Omit<StreamsSinkOptions, "handler">;
  /** Registers the reactor there (metrics, health, the status page), its source observed. */
  readonly metrics?: ImpelMetrics;
}

/** A running reactor. */
export interface Reactor {
  /** The sink: monitor, stats. */
  readonly sink: StreamsSink;
  /** Resolves once the reactor has stopped (rejects on a fault). */
  readonly running: Promise<void>;
  /** Stops reading, lets in-flight handlers finish, commits checkpoints. */
  stop(): Promise<void>;
}

/**
 * Runs the reactor over `source` until stopped.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "../../checkpoints/memory.ts";
 * import { createMemoryStore, memorySource } from "../../sources/memory.ts";
 * import { GROUP_CHECKOUT, groupCheckoutService } from "./groupCheckout.ts";
 * import { guestStayService } from "./guestStay.ts";
 * import { REACTOR_GROUP, startReactor } from "./reactor.ts";
 * const store = createMemoryStore();
 * const reactor = startReactor({
 *   stays: guestStayService(store),
 *   groups: groupCheckoutService(store),
 *   source: memorySource({ store, checkpoints: memoryCheckpoints(), group: REACTOR_GROUP, categories: [GROUP_CHECKOUT] }),
 * });
 * await reactor.sink.monitor.awaitCompletion({ tail: true });
 * await reactor.stop();
 * ```
 */
export function startReactor(options: ReactorOptions): Reactor {
  const observable = options.source as ObservableSource;
  // The source's consumer group, so that checkpoints, logs and parked streams agree.
  const group = observable.group ?? REACTOR_GROUP;
  const sink = streamsSink({
    group,
    maxConcurrentStreams: 16,
    statsIntervalMs: 0,
    ...options.sink,
    handler: groupCheckoutHandler(options),
  });
  const controller = new AbortController();
  const pipeline = options.metrics?.addPipeline({
    group,
    source: observable.sourceName ?? "hotel",
    sink,
  });
  const source = pipeline ? pipeline.observe(observable) : options.source;
  const running = run(source, sink, { signal: controller.signal });
  running.catch(() => {}); // observed through `running` or `stop`
  return {
    sink,
    running,
    stop() {
      controller.abort();
      return running;
    },
  };
}
