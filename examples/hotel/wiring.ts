/**
 * The pieces a hotel host (the demo, the integration tests) needs from a backend: the store the
 * services write to, the GroupCheckout feed the reactor reads, a way to wait until the reactor
 * has caught up, and cleanup. This module holds the contract and the in-memory backend; the
 * PostgreSQL ones (PGlite, MessageDB) are in `postgres.ts` so that only hosts using them load
 * their drivers.
 *
 * @module
 */
import type { Batch } from "../../core/batch.ts";
import type { StreamsSink } from "../../core/sink.ts";
import type { EventStore } from "../../core/store.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { GROUP_CHECKOUT } from "./groupCheckout.ts";
import { REACTOR_GROUP } from "./reactor.ts";

/** A store plus the feed and waits the hotel reactor needs. */
export interface HotelBackend {
  /** A label for output, e.g. `memory` or `messagedb (postgres://…)`. */
  readonly name: string;
  /** Where GuestStay and GroupCheckout streams live. */
  readonly store: EventStore;
  /** A fresh feed of the GroupCheckout category for the reactor, from its checkpoint. */
  source(signal: AbortSignal): ReadableStream<Batch>;
  /**
   * Resolves once the reactor behind `sink` has handled every GroupCheckout event written so
   * far, including those it wrote itself; rejects after `timeoutMs`.
   */
  settle(sink: StreamsSink, timeoutMs?: number): Promise<void>;
  /** Releases connections and files. */
  close(): Promise<void>;
}

/**
 * The in-process backend: a memory store and source. Appends reach the source synchronously,
 * so the sink's monitor alone tells when the reactor has caught up: no polling, no sleeps.
 *
 * @example
 * ```ts
 * import { memoryBackend } from "./wiring.ts";
 * const backend = memoryBackend();
 * await backend.close();
 * ```
 */
export function memoryBackend(): HotelBackend {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  return {
    name: "memory",
    store,
    source: () =>
      memorySource({ store, checkpoints, group: REACTOR_GROUP, categories: [GROUP_CHECKOUT] }),
    settle: (sink, timeoutMs = 30_000) => sink.monitor.awaitCompletion({ tail: true, timeoutMs }),
    close: () => Promise.resolve(),
  };
}
