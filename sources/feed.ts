/**
 * A generic tranche-based source over any paged API: give it `readPage(tranche, position)` and it
 * reads every tranche concurrently from its checkpoint, sleeps at the tail, retries failed reads
 * with backoff, and commits through a checkpoint store. It is the public face of the one
 * paged-tranche reader (`core/reader.ts`) that the MessageDB, DynamoDB and periodic sources are
 * adapters over, so a new source supplies `readPage` (and `readTranches` when its tranches come
 * and go) rather than another loop.
 *
 * - Each tranche's first batch, sent before its first read, is empty, not at the tail and without
 *   `commit`: it makes the tranche known to the sink, so that waiting for every tranche's tail
 *   also waits for one whose first read is slow. The batches are the only channel from a source
 *   to the sink (the sink never asks a source for its tranches), so this is how it learns of them.
 * - A batch is sent for a page with items, a page that moves the position, or a change of the
 *   tail flag: "at the tail" is said once, not on every idle poll.
 * - Given per-item `positions`, a page is handed on as batches of at most `maxBatchItems` items.
 * - With `readTail`, `startFrom: "tail"` and `whenNoCheckpoint: "tail"` become available, and a
 *   checkpoint beyond the tail is refused at start ({@linkcode CheckpointPastTailError}).
 *
 * @module
 */
import type { ObservableSource } from "../core/batch.ts";
import { pagedSource, type PagedSourceOptions } from "../core/reader.ts";

export {
  CheckpointPastTailError,
  type Page,
  type ReadContext,
  type ReadPage,
  retrying,
  type RetryingOptions,
  type StartFrom,
} from "../core/reader.ts";

/**
 * Options of {@linkcode feedSource}.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * import { feedSource, type FeedSourceOptions } from "@impel/impel/sources/feed";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * const options: FeedSourceOptions = {
 *   name: "log",
 *   tranches: ["all"],
 *   readPage: (_tranche, position) => {
 *     const from = Number(position ?? 0n);
 *     const items = store.readLog(from, from + 100);
 *     const next = from + items.length;
 *     return Promise.resolve({ items, next: BigInt(next), isTail: next === store.head });
 *   },
 *   checkpoints: memoryCheckpoints(),
 *   group: "billing",
 *   startFrom: "checkpoint",
 *   tailSleepMs: 5_000,
 *   retry: { initialDelayMs: 250, maxDelayMs: 60_000 },
 *   // Cuts the tail sleep short as soon as something is appended.
 *   wakeup: (_tranche, signal) =>
 *     new Promise((resolve) => {
 *       const unsubscribe = store.subscribe(() => resolve());
 *       signal.addEventListener("abort", unsubscribe);
 *     }),
 * };
 * const source = feedSource(options);
 * await source.cancel();
 * ```
 */
export type FeedSourceOptions = PagedSourceOptions;

/**
 * Creates a source that reads every tranche through `readPage` (the options are those of the
 * paged reader, `core/reader.ts`). Reads of one tranche are
 * sequential; tranches are read concurrently, and all wait while the consumer is behind.
 * Failed reads are logged and retried with backoff, so a server restart only delays the source.
 *
 * @example
 * ```ts
 * import { feedSource } from "@impel/impel/sources/feed";
 * const source = feedSource({
 *   name: "numbers",
 *   tranches: ["0"],
 *   readPage: (_tranche, position) => {
 *     const from = Number(position ?? 0n);
 *     const items = from < 3 ? [{ stream: "Number-1", event: { index: from, type: "N", data: from, meta: null, id: `${from}`, time: new Date(), size: 1 } }] : [];
 *     return Promise.resolve({ items, next: BigInt(from + items.length), isTail: from + items.length >= 3 });
 *   },
 * });
 * await source.cancel();
 * ```
 */
export function feedSource(options: FeedSourceOptions): ObservableSource {
  return pagedSource(options);
}
