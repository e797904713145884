/**
 * A queue consumer: takes messages from one queue of a {@linkcode QueueStore} and runs a handler
 * on each, at most `concurrency` at once.
 *
 * - While a handler runs, the message's visibility is extended every third of
 *   `visibilityTimeoutMs`, so a slow handler keeps it; a consumer that dies stops extending, and
 *   the message is delivered again once its visibility lapses.
 * - A handler that resolves acks its message (acks that come while one is in flight go together
 *   in one `ackMany`); one that throws nacks it with a backoff delay by
 *   its delivery count (`retry`), recording the error, so after `maxDeliveries` the store moves
 *   it to the dead letters with that error.
 * - If the consumer loses a message (an extension finds that the visibility lapsed and it was
 *   delivered again), the handler's `signal` aborts and its result is not acked; it counts in
 *   `stats().lost`.
 * - Aborting `signal` stops taking messages; handlers in flight finish and are acked or nacked;
 *   `done` resolves after that. Each delivery is settled once at most.
 * - Store failures (a dequeue, an ack) are retried with backoff and show in `stats().problem`
 *   until a call succeeds; they never end the consumer.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { checkInteger, describe, InvalidArgumentError } from "../core/errors.ts";
import { backoff, errorText, type RetryOptions } from "../core/failure.ts";
import { createHistogram, type LatencyTotals } from "../core/histogram.ts";
import { sleep } from "../core/tranches.ts";
import {
  checkMs,
  checkQueueName,
  MAX_DEQUEUE,
  type QueueMessage,
  type QueueStore,
} from "./queue.ts";

const log = getLogger(["impel", "queues", "consumer"]);

/**
 * Options of {@linkcode queueConsumer}.
 *
 * @example
 * ```ts
 * import { memoryQueues, type QueueConsumerOptions } from "@impel/impel/queues/memory";
 * const options: QueueConsumerOptions<{ to: string }> = {
 *   store: memoryQueues(),
 *   queue: "emails",
 *   handler: (body) => console.log("send to", body.to),
 *   concurrency: 8,
 *   visibilityTimeoutMs: 30_000,
 *   retry: { initialDelayMs: 1_000, maxDelayMs: 60_000 },
 * };
 * ```
 *
 * @category Queues
 */
export interface QueueConsumerOptions<T = unknown> {
  /** Where the queue is. */
  readonly store: QueueStore;
  /** The queue's name. */
  readonly queue: string;
  /**
   * Handles one message; resolving acks it, throwing nacks it. `signal` aborts if the message was
   * lost to another consumer (its visibility lapsed), so the handler can give up early.
   */
  readonly handler: (
    body: T,
    message: QueueMessage<T>,
    context: { readonly signal: AbortSignal },
  ) => Promise<void> | void;
  /** Handlers running at once (default 1, at most 1000). */
  readonly concurrency?: number;
  /** Visibility of each delivery, ms (default 30 s); extended while its handler runs. */
  readonly visibilityTimeoutMs?: number;
  /** Delay of a failed message's next delivery by its delivery count (default 1 s doubling to 60 s); also paces store retries. */
  readonly retry?: RetryOptions;
  /** Longest wait for new messages between dequeues when idle, ms (default 1000): the fallback of LISTEN/NOTIFY. */
  readonly pollMs?: number;
  /** Aborting stops the consumer: no new messages; in-flight handlers finish. */
  readonly signal?: AbortSignal;
}

/**
 * What a consumer has done, for health and tests.
 *
 * @example
 * ```ts
 * import type { QueueConsumerStats } from "@impel/impel/queues/memory";
 * const healthy = (s: QueueConsumerStats) => s.problem === undefined;
 * const durations = { count: 0, sumMs: 0, boundsMs: [], counts: [0] };
 * console.log(healthy({ inFlight: 0, delivered: 3, acked: 3, nacked: 0, lost: 0, durations })); // true
 * ```
 *
 * @category Queues
 */
export interface QueueConsumerStats {
  /** Handlers running now. */
  readonly inFlight: number;
  /** Deliveries taken and handed to the handler. */
  readonly delivered: number;
  /** Messages acked. */
  readonly acked: number;
  /** Messages whose handler threw, nacked for a later delivery. */
  readonly nacked: number;
  /** Deliveries this consumer lost (visibility lapsed, delivered elsewhere); never acked here. */
  readonly lost: number;
  /** How long handler calls took, every call since start (the `impel_queue_handler_duration_seconds` histogram). */
  readonly durations: LatencyTotals;
  /** A store operation failing now: what, the last error, since when (ms epoch), how often. */
  readonly problem?: {
    readonly what: string;
    readonly error: string;
    readonly since: number;
    readonly attempts: number;
  };
}

/**
 * A running consumer.
 *
 * @example
 * ```ts
 * import { memoryQueues, type QueueConsumer, queueConsumer } from "@impel/impel/queues/memory";
 * const ac = new AbortController();
 * const consumer: QueueConsumer = queueConsumer({
 *   store: memoryQueues(),
 *   queue: "emails",
 *   handler: () => {},
 *   signal: ac.signal,
 * });
 * ac.abort();
 * await consumer.done;
 * console.log(consumer.stats().inFlight); // 0
 * ```
 *
 * @category Queues
 */
export interface QueueConsumer {
  /** Resolves once the consumer has stopped (after its signal aborted) and its handlers ended. */
  readonly done: Promise<void>;
  /** Counts and the current problem. */
  stats(): QueueConsumerStats;
}

/**
 * Starts a consumer of `queue`; see this module's documentation for what it guarantees.
 *
 * @example
 * ```ts
 * import { memoryQueues, queueConsumer } from "@impel/impel/queues/memory";
 * const store = memoryQueues();
 * await store.enqueue("emails", [{ to: "ada@example.com" }, { to: "alan@example.com" }]);
 * const ac = new AbortController();
 * const sent: string[] = [];
 * const consumer = queueConsumer<{ to: string }>({
 *   store,
 *   queue: "emails",
 *   concurrency: 2,
 *   handler: (body) => {
 *     sent.push(body.to);
 *     if (sent.length === 2) ac.abort();
 *   },
 *   signal: ac.signal,
 * });
 * await consumer.done;
 * console.log(sent.sort(), consumer.stats().acked); // ["ada@example.com", "alan@example.com"] 2
 * ```
 *
 * @category Queues
 */
export function queueConsumer<T = unknown>(options: QueueConsumerOptions<T>): QueueConsumer {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError(
      "options",
      `must be { store, queue, handler, ... }, got ${describe(options)}`,
    );
  }
  const { store, handler } = options;
  if (store === null || typeof store !== "object" || typeof store.dequeue !== "function") {
    throw new InvalidArgumentError("store", "must be a QueueStore (postgresQueues, memoryQueues)");
  }
  const queue = checkQueueName(options.queue);
  if (typeof handler !== "function") {
    throw new InvalidArgumentError("handler", `must be a function, got ${describe(handler)}`);
  }
  const concurrency = checkInteger("concurrency", options.concurrency ?? 1, 1, MAX_DEQUEUE);
  const visibilityMs = checkMs("visibilityTimeoutMs", options.visibilityTimeoutMs ?? 30_000, 3);
  const pollMs = checkMs("pollMs", options.pollMs ?? 1000, 1);
  const delays = backoff({ initialDelayMs: 1_000, maxDelayMs: 60_000, ...options.retry });
  const signal = options.signal ?? new AbortController().signal;
  if (!(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError("signal", `must be an AbortSignal, got ${describe(signal)}`);
  }

  let delivered = 0, acked = 0, nacked = 0, lost = 0;
  // One call per message: cheap next to the store round trips around it.
  const durations = createHistogram();
  let problem: QueueConsumerStats["problem"];
  const running = new Set<Promise<void>>();
  let slotFreed: (() => void) | undefined;

  const failed = (what: string, error: unknown) => {
    const text = errorText(error);
    problem = problem?.what === what
      ? { ...problem, error: text, attempts: problem.attempts + 1 }
      : { what, error: text, since: Date.now(), attempts: 1 };
    log.warn("queue {queue}: {what} failed ({attempts}): {message}", {
      queue,
      what,
      attempts: problem.attempts,
      message: text,
    });
    return problem.attempts;
  };
  const recovered = (what: string) => {
    if (problem?.what === what) problem = undefined;
  };

  const handle = async (message: QueueMessage<T>) => {
    const lostIt = new AbortController();
    // Extend a third of the way in, so one failed or slow extension still leaves time.
    const timer = setInterval(async () => {
      try {
        if (!(await store.extend(message, visibilityMs))) lostIt.abort();
        else recovered("extend");
      } catch (error) {
        failed("extend", error);
      }
    }, Math.floor(visibilityMs / 3));
    let error: unknown;
    let ok = true;
    delivered++;
    const started = performance.now();
    try {
      await handler(message.body, message, { signal: lostIt.signal });
    } catch (e) {
      ok = false;
      error = e;
    } finally {
      clearInterval(timer);
      durations.record(performance.now() - started);
    }
    if (lostIt.signal.aborted) {
      lost++;
      return;
    }
    try {
      const settled = ok ? await ack(message) : await store.nack(message, {
        delayMs: Math.round(delays.delay(message.deliveries)),
        error: errorText(error),
      });
      recovered(ok ? "ack" : "nack");
      if (!settled) lost++;
      else if (ok) acked++;
      else nacked++;
    } catch (e) {
      // The message is delivered again after its visibility: at least once, never lost.
      failed(ok ? "ack" : "nack", e);
    }
  };

  // Acks are grouped: one ackMany in flight at a time, taking every ack that came meanwhile, so
  // a lone ack goes at once and a busy consumer pays one round trip for many.
  let pending: { message: QueueMessage; done: PromiseWithResolvers<boolean> }[] = [];
  let flushing = false;
  const ack = (message: QueueMessage): Promise<boolean> => {
    const done = Promise.withResolvers<boolean>();
    pending.push({ message, done });
    if (!flushing) {
      flushing = true;
      // Alone, it goes at once; with others in flight, after the handlers ending in this turn.
      if (running.size > 1) setTimeout(flush, 0);
      else void flush();
    }
    return done.promise;
  };
  const flush = async () => {
    while (pending.length > 0) {
      const batch = pending.slice(0, MAX_DEQUEUE);
      pending = pending.slice(batch.length);
      try {
        const results = await store.ackMany(batch.map((p) => p.message));
        batch.forEach((p, i) => p.done.resolve(results[i] === true));
      } catch (error) {
        for (const p of batch) p.done.reject(error);
      }
    }
    flushing = false;
  };

  const start = (message: QueueMessage<T>) => {
    const task: Promise<void> = handle(message).finally(() => {
      running.delete(task);
      slotFreed?.();
    });
    running.add(task);
  };

  const loop = async () => {
    while (!signal.aborted) {
      // Refill once half the slots are free (or all are), not slot by slot: fewer, fuller dequeues.
      if (running.size > 0 && concurrency - running.size < Math.ceil(concurrency / 2)) {
        const stopped = new AbortController();
        await new Promise<void>((resolve) => {
          slotFreed = resolve;
          signal.addEventListener("abort", () => resolve(), { once: true, signal: stopped.signal });
        });
        stopped.abort(); // removes the abort listener
        slotFreed = undefined;
        continue;
      }
      let got: QueueMessage[];
      try {
        got = await store.dequeue(queue, {
          visibilityTimeoutMs: visibilityMs,
          max: concurrency - running.size,
        });
        recovered("dequeue");
      } catch (error) {
        await sleep(delays.delay(failed("dequeue", error)), signal);
        continue;
      }
      if (got.length === 0) {
        try {
          await store.wait(queue, pollMs, signal);
        } catch (error) {
          await sleep(delays.delay(failed("wait", error)), signal);
        }
        continue;
      }
      for (const m of got) start(m as QueueMessage<T>);
    }
    while (running.size > 0) await Promise.all([...running]);
  };

  const done = loop();
  return {
    done,
    stats: () => ({
      inFlight: running.size,
      delivered,
      acked,
      nacked,
      lost,
      durations: durations.totals(),
      ...(problem === undefined ? {} : { problem }),
    }),
  };
}
