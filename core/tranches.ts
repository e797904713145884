/**
 * The plumbing shared by sources that read several tranches concurrently into one stream of
 * batches: backpressure, stopping, and failing as a whole.
 *
 * @module
 */
import type { Batch } from "./batch.ts";

/** What a {@linkcode trancheStream} driver and the readers it spawns work with. */
export interface TrancheContext {
  /** Aborts when the consumer cancels, the caller's signal aborts, or any reader fails. */
  readonly signal: AbortSignal;
  /**
   * Hands a batch to the consumer, resolving once it is queued; waits while the consumer is
   * behind. Once `signal` has aborted it drops the batch and resolves at once, so readers check
   * `signal.aborted` after awaiting it.
   */
  enqueue(batch: Batch): Promise<void>;
  /**
   * Starts a concurrent reader (e.g. one per tranche, including tranches found later). If it
   * rejects, the stream errors with that error and `signal` aborts. The result resolves when the
   * reader has ended, whether or not it failed, for clean-up that must wait for the readers.
   */
  spawn(reader: () => Promise<void>): Promise<void>;
}

/** Options of {@linkcode trancheStream}. */
export interface TrancheStreamOptions {
  /** Aborting stops the readers; the stream closes once they have ended. */
  readonly signal?: AbortSignal;
}

/**
 * Creates a stream of batches fed by `run` and the readers it spawns. The stream holds one batch
 * (`highWaterMark` 1) and readers wait in {@linkcode TrancheContext.enqueue} while it is full, so
 * nothing is read far ahead of the consumer. It closes when `run` and every spawned reader have
 * ended. The first rejection, of `run` or of a reader, errors the stream with that error and
 * stops the other readers; cancelling the stream or aborting `options.signal` stops them too.
 *
 * @example
 * ```ts
 * import { trancheStream } from "./tranches.ts";
 * const stream = trancheStream(({ signal, enqueue, spawn }) => {
 *   for (const tranche of ["a", "b"]) {
 *     spawn(async () => {
 *       for (let position = 1n; position <= 3n && !signal.aborted; position++) {
 *         await enqueue({ tranche, items: [], position, isTail: position === 3n });
 *       }
 *     });
 *   }
 * });
 * for await (const batch of stream) console.log(batch.tranche, batch.position);
 * ```
 */
export function trancheStream(
  run: (context: TrancheContext) => Promise<void> | void,
  options: TrancheStreamOptions = {},
): ReadableStream<Batch> {
  const stop = new AbortController();
  const caller = options.signal;
  const onCallerAbort = () => stop.abort();
  let controller!: ReadableStreamDefaultController<Batch>;
  // Readers waiting for room in the stream's queue; pull() lets the longest-waiting one through.
  const waiting: Array<() => void> = [];
  let running = 0;
  let failed = false;

  stop.signal.addEventListener("abort", () => {
    caller?.removeEventListener("abort", onCallerAbort);
    for (const release of waiting.splice(0)) release();
  }, { once: true });
  caller?.addEventListener("abort", onCallerAbort, { once: true });
  if (caller?.aborted) stop.abort();

  const fail = (error: unknown) => {
    if (failed) return;
    failed = true;
    // An errored stream is not cancelled, so the other readers are stopped here.
    stop.abort(error);
    controller.error(error); // a no-op if the consumer cancelled first
  };
  const ended = () => {
    if (--running > 0 || failed) return;
    caller?.removeEventListener("abort", onCallerAbort);
    try {
      controller.close();
    } catch {
      // the consumer cancelled the stream, which closed it already
    }
  };
  const context: TrancheContext = {
    signal: stop.signal,
    async enqueue(batch) {
      while ((controller.desiredSize ?? 0) <= 0 && !stop.signal.aborted) {
        await new Promise<void>((resolve) => waiting.push(resolve));
      }
      if (!stop.signal.aborted) controller.enqueue(batch);
    },
    spawn(reader) {
      running++;
      let result: Promise<void>;
      try {
        result = reader();
      } catch (error) {
        result = Promise.reject(error);
      }
      return result.then(ended, (error) => {
        fail(error);
        ended();
      });
    },
  };

  return new ReadableStream<Batch>({
    start(c) {
      controller = c;
      context.spawn(async () => await run(context));
    },
    pull() {
      waiting.shift()?.();
    },
    cancel() {
      stop.abort();
    },
  }, { highWaterMark: 1 });
}

/**
 * The one abortable sleep: resolves `true` after `ms`, or `false` at once when `signal` aborts
 * (before or during the wait), so the caller can tell a full wait from a stop.
 *
 * @example
 * ```ts
 * import { sleep } from "./tranches.ts";
 * const stop = new AbortController();
 * stop.abort();
 * console.log(await sleep(60_000, stop.signal)); // false, at once
 * console.log(await sleep(1)); // true
 * ```
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const done = (full: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", stopped);
      resolve(full);
    };
    const stopped = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal?.addEventListener("abort", stopped, { once: true });
  });
}
