/**
 * Deterministic waits for tests and orchestration: resolve when everything read so far has been
 * handled, optionally once every tranche is at its tail.
 *
 * @module
 */
import { ImpelError, InvalidArgumentError } from "./errors.ts";

/**
 * Options of {@linkcode Monitor.awaitCompletion}.
 *
 * @example
 * ```ts
 * import { type AwaitCompletionOptions, run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * const sink = streamsSink({ handler: () => {} });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }), sink, { signal: ac.signal });
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * // Caught up with everything appended so far, or a Timeout error after 5 s.
 * const caughtUp: AwaitCompletionOptions = { tail: true, timeoutMs: 5_000 };
 * await sink.monitor.awaitCompletion(caughtUp);
 * ac.abort();
 * await running;
 * ```
 *
 * @category Pipeline
 */
export interface AwaitCompletionOptions {
  /** Also wait until the latest batch of every tranche seen so far reached the tail. */
  readonly tail?: boolean;
  /** Reject with a `Timeout` error after this long (default: wait as long as it takes). */
  readonly timeoutMs?: number;
}

/**
 * Waits on a running sink.
 *
 * @example
 * ```ts ignore
 * await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
 * ```
 *
 * @category Pipeline
 */
export interface Monitor {
  /**
   * Resolves once every batch ingested so far is complete (and, with `tail`, every tranche's
   * latest batch is at its tail) and the condition has held across a macrotask with nothing new
   * arriving, so that batches an in-process source has already produced are seen first. Rejects
   * if the pipeline faults or stops first, or on timeout.
   */
  awaitCompletion(options?: AwaitCompletionOptions): Promise<void>;
}

/** What the monitor observes. */
export interface MonitorProbe {
  /** Whether all ingested batches are complete (and, with `tail`, all tranches at the tail). */
  isComplete(tail: boolean): boolean;
  /** A counter that changes whenever a batch is ingested. */
  ingested(): number;
}

/** The monitor plus the calls the sink makes into it. */
export interface MonitorControl {
  /** The user-facing monitor. */
  readonly monitor: Monitor;
  /** Re-evaluates the waiters; call after ingestion or progress. */
  check(): void;
  /** On stop or fault: resolves the waiters whose condition holds, rejects the others and any later call. */
  close(error: Error): void;
}

interface Waiter {
  readonly tail: boolean;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
  timer?: ReturnType<typeof setTimeout>;
}

/**
 * Creates a monitor over `probe`.
 *
 * @example
 * ```ts
 * import { createMonitor } from "./monitor.ts";
 * const control = createMonitor({ isComplete: () => true, ingested: () => 0 });
 * await control.monitor.awaitCompletion();
 * ```
 *
 * @category Pipeline
 */
export function createMonitor(probe: MonitorProbe): MonitorControl {
  const waiters = new Set<Waiter>();
  let settle: ReturnType<typeof setTimeout> | undefined;
  let closed: Error | undefined;

  function settled(seen: number) {
    settle = undefined;
    if (probe.ingested() !== seen) return check();
    for (const w of waiters) {
      if (probe.isComplete(w.tail)) {
        waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  }

  function check() {
    if (settle !== undefined || waiters.size === 0) return;
    for (const w of waiters) {
      if (probe.isComplete(w.tail)) {
        const seen = probe.ingested();
        settle = setTimeout(() => settled(seen), 0);
        return;
      }
    }
  }

  return {
    monitor: {
      awaitCompletion(options = {}) {
        if (closed) return Promise.reject(closed);
        const { timeoutMs } = options;
        if (timeoutMs !== undefined && (typeof timeoutMs !== "number" || !(timeoutMs >= 0))) {
          return Promise.reject(
            new InvalidArgumentError(
              "timeoutMs",
              `must be a number >= 0, got ${String(timeoutMs)}`,
            ),
          );
        }
        return new Promise<void>((resolve, reject) => {
          const w: Waiter = { tail: options.tail ?? false, resolve, reject };
          if (options.timeoutMs !== undefined) {
            w.timer = setTimeout(() => {
              waiters.delete(w);
              reject(
                new ImpelError(
                  "Timeout",
                  `awaitCompletion timed out after ${options.timeoutMs} ms`,
                ),
              );
            }, options.timeoutMs);
          }
          waiters.add(w);
          check();
        });
      },
    },
    check,
    close(error) {
      closed ??= error;
      clearTimeout(settle);
      settle = undefined;
      // Nothing more can arrive: a waiter whose condition holds now is satisfied.
      for (const w of waiters) {
        clearTimeout(w.timer);
        if (probe.isComplete(w.tail)) w.resolve();
        else w.reject(error);
      }
      waiters.clear();
    },
  };
}
