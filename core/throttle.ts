/**
 * A gate between a source and its sink that limits the rate of items (events per second) and can
 * be paused: a `TransformStream` of batches, so the one reader loop of the source stays as it is
 * and simply waits (backpressure) while the gate holds a batch back. Used by replays.
 *
 * The rate is kept over the whole run, not per batch: a batch of `n` items is let through once
 * `rate × (time running)` covers every item let through so far plus these `n`, so the items let
 * through after `t` seconds never exceed `rate × t`. Time spent paused does not count.
 *
 * @module
 */
import type { Batch } from "./batch.ts";
import { InvalidArgumentError } from "./errors.ts";
import { sleep } from "./tranches.ts";

/**
 * Options of {@linkcode throttle}.
 *
 * @example
 * ```ts
 * import { throttle, type ThrottleOptions } from "@impel/impel/replay/messagedb";
 * const options: ThrottleOptions = { rate: 500 }; // at most 500 items a second
 * const gate = throttle(options);
 * console.log(gate.paused); // false
 * ```
 *
 * @category Pipeline
 */
export interface ThrottleOptions {
  /** Items per second let through (omit: no limit, only pausing). */
  readonly rate?: number;
  /** Aborting it lets every held batch go (the pipeline is stopping anyway). */
  readonly signal?: AbortSignal;
}

/**
 * A rate-limiting, pausable gate for batches: pipe a source through `transform`.
 *
 * @example
 * ```ts
 * import { throttle } from "@impel/impel/replay/messagedb";
 * const gate = throttle({ rate: 1000 });
 * gate.pause();
 * console.log(gate.paused, gate.passed); // true 0
 * gate.resume();
 * ```
 *
 * @category Pipeline
 */
export interface Throttle {
  /** The gate: batches in, the same batches out, at the rate and never while paused. */
  readonly transform: TransformStream<Batch, Batch>;
  /** Holds every later batch back until {@linkcode Throttle.resume}. */
  pause(): void;
  /** Lets batches through again. */
  resume(): void;
  /** True while paused. */
  readonly paused: boolean;
  /**
   * Resolves at once when not paused, else on {@linkcode Throttle.resume} or when the signal
   * aborts: for work past the gate (batches already let through) that must wait for a pause too.
   */
  whilePaused(): Promise<void>;
  /** Items let through so far. */
  readonly passed: number;
}

/**
 * Makes a {@linkcode Throttle}: at most `rate` items a second, and a pause.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { throttle } from "@impel/impel/replay/messagedb";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const gate = throttle({ rate: 100 });
 * const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }).pipeThrough(gate.transform), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion();
 * ac.abort();
 * await running;
 * console.log(gate.passed); // 1
 * ```
 *
 * @category Pipeline
 */
export function throttle(options: ThrottleOptions = {}): Throttle {
  const { rate, signal } = options;
  if (rate !== undefined && (typeof rate !== "number" || !(rate > 0) || !Number.isFinite(rate))) {
    throw new InvalidArgumentError("rate", `must be a positive number of items per second`);
  }
  let passed = 0;
  let started: number | undefined;
  let pausedAt: number | undefined;
  let pausedMs = 0;
  let resumed: (() => void) | undefined;
  let resumedAt = Promise.resolve();
  // One controller for the sleeps, so that resume() and the signal cut a wait short.
  let wake = new AbortController();
  const running = () => performance.now() - started! - pausedMs;
  // Batches read ahead wait in front of the gate (as many as the sink reads ahead by default),
  // so that the reader is not held back batch by batch; none wait behind it, so a pause holds
  // back everything not yet let through.
  const ahead = { highWaterMark: 16 };
  const transform = new TransformStream<Batch, Batch>(
    {
      transform(batch, controller) {
        started ??= performance.now();
        const n = batch.items.length;
        // Neither paused nor limited: straight through, without a promise per batch.
        if (pausedAt === undefined && (rate === undefined || n === 0)) {
          passed += n;
          controller.enqueue(batch);
          return;
        }
        return gated(batch, n, controller);
      },
    },
    ahead,
    { highWaterMark: 0 },
  );
  const gated = async (
    batch: Batch,
    n: number,
    // Only what the gate calls of its controller.
    controller: { enqueue(batch: Batch): void },
  ) => {
    {
      for (;;) {
        if (signal?.aborted) break;
        if (pausedAt !== undefined) {
          await Promise.race([resumedAt, aborted(signal)]);
          continue;
        }
        if (rate === undefined || n === 0) break;
        const waitMs = ((passed + n) / rate) * 1000 - running();
        if (waitMs <= 0) break;
        await sleep(waitMs, AbortSignal.any([wake.signal, ...(signal ? [signal] : [])]));
      }
      passed += n;
      controller.enqueue(batch);
    }
  };
  return {
    transform,
    pause() {
      if (pausedAt !== undefined) return;
      pausedAt = performance.now();
      resumedAt = new Promise((resolve) => (resumed = resolve));
      wake.abort();
      wake = new AbortController();
    },
    resume() {
      if (pausedAt === undefined) return;
      // Before the first batch nothing runs yet, so nothing is owed for the pause either.
      if (started !== undefined) pausedMs += performance.now() - Math.max(pausedAt, started);
      pausedAt = undefined;
      resumed?.();
    },
    get paused() {
      return pausedAt !== undefined;
    },
    whilePaused() {
      return pausedAt === undefined
        ? Promise.resolve()
        : Promise.race([resumedAt, aborted(signal)]);
    },
    get passed() {
      return passed;
    },
  };
}

function aborted(signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return new Promise(() => {});
  return new Promise((resolve) =>
    signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })
  );
}
