/**
 * Deterministic waits for tests and orchestration: resolve when everything read so far has been
 * handled, optionally once every tranche is at its tail.
 *
 * @module
 */
import type { Position } from "./batch.ts";
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
  /**
   * Also wait until the latest batch of every tranche seen so far reached the tail; with a
   * source that knows its heads (MessageDB), until every tranche it reads has handled everything
   * up to the head it has when this is called, which makes the wait exact for I/O sources. With
   * a source that shares its tranches among members (leases, Kafka), that is the tranches this
   * member holds at the call; one revoked meanwhile is no longer waited for.
   */
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
   * if the pipeline faults or stops first, if the source cannot tell its heads, or on timeout.
   */
  awaitCompletion(options?: AwaitCompletionOptions): Promise<void>;
}

/** What the monitor observes. */
export interface MonitorProbe {
  /** Whether all ingested batches are complete (and, with `tail`, all tranches at the tail). */
  isComplete(tail: boolean): boolean;
  /** A counter that changes whenever a batch is ingested. */
  ingested(): number;
  /** The position up to which a tranche's batches are complete. */
  completed?(tranche: string): Position | undefined;
  /** Whether a tranche was revoked and let go (a wait for its head no longer applies here). */
  gone?(tranche: string): boolean;
}

/** The monitor plus the calls the sink makes into it. */
export interface MonitorControl {
  /** The user-facing monitor. */
  readonly monitor: Monitor;
  /** Re-evaluates the waiters; call after ingestion or progress. */
  check(): void;
  /** Where the source's tranches will be once caught up (the source's `heads`), if it knows. */
  watchHeads(heads: () => Promise<ReadonlyMap<string, Position>>): void;
  /** On stop or fault: resolves the waiters whose condition holds, rejects the others and any later call. */
  close(error: Error): void;
}

interface Waiter {
  readonly tail: boolean;
  /** The heads to reach, once read; `null` while they are being read. */
  heads?: ReadonlyMap<string, Position> | null;
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
  let heads: (() => Promise<ReadonlyMap<string, Position>>) | undefined;

  function holds(w: Waiter): boolean {
    if (w.heads === null || !probe.isComplete(w.tail)) return false;
    if (w.heads === undefined) return true;
    for (const [tranche, head] of w.heads) {
      if (probe.gone?.(tranche)) continue;
      const done = probe.completed?.(tranche);
      if (done === undefined || done < head) return false;
    }
    return true;
  }

  function settled(seen: number) {
    settle = undefined;
    if (probe.ingested() !== seen) return check();
    for (const w of waiters) {
      if (holds(w)) {
        waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  }

  function check() {
    if (settle !== undefined || waiters.size === 0) return;
    for (const w of waiters) {
      if (holds(w)) {
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
          if (w.tail && heads !== undefined) {
            w.heads = null;
            heads().then(
              (positions) => {
                if (!waiters.has(w)) return;
                w.heads = positions;
                check();
              },
              (error) => {
                if (!waiters.delete(w)) return;
                clearTimeout(w.timer);
                reject(
                  new ImpelError(
                    "HeadUnknown",
                    `awaitCompletion: the source could not tell its heads: ${
                      error instanceof Error ? error.message : String(error)
                    }`,
                    { cause: error },
                  ),
                );
              },
            );
          }
          check();
        });
      },
    },
    check,
    watchHeads(fn) {
      heads = fn;
    },
    close(error) {
      closed ??= error;
      clearTimeout(settle);
      settle = undefined;
      // Nothing more can arrive: a waiter whose condition holds now is satisfied.
      for (const w of waiters) {
        clearTimeout(w.timer);
        if (holds(w)) w.resolve();
        else w.reject(error);
      }
      waiters.clear();
    },
  };
}
