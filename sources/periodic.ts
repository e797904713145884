/**
 * A source over something that cannot say what changed since a position (a table without a
 * change feed, an API listing): it re-crawls it every `intervalMs` and emits each item as an event
 * of its stream, carrying a hash of its content, and only when that hash differs from the one the
 * stream had at the last crawl, so that unchanged items are not handled again. Propulsion's
 * periodic source, on the paged-tranche reader of `core/reader.ts` (announcement, tail rule,
 * retries of a failed crawl, `problems()`).
 *
 * - Each tranche is crawled on its own (default one tranche, `"0"`). A crawl is one page; the
 *   position is the time the crawl started (ms since the epoch), committed once every changed
 *   item of the crawl is handled. Crawls of a tranche start `intervalMs` apart (start to start;
 *   one that ends, and is handed on, later than that is followed at once by the next). At start a
 *   stored checkpoint says when the last crawl started: the first crawl comes `intervalMs` after
 *   it, or at once if that time has passed.
 * - An event's `index` counts the changes of its stream seen in this run (0 for the first crawl
 *   that sees it), `type` is the item's (default `"Crawled"`), `meta` is `{ contentHash }`, and
 *   `id` is `{stream}@{tranche}/{crawl start}` (the crawl's position), unique per emission: content
 *   that goes back to an earlier version is a new event with a new id.
 * - The hashes live in memory: after a restart the first crawl emits every item once more
 *   (at least once). An item that is no longer crawled keeps only its stream's next index (its
 *   name and one number, for as long as the source runs); if it comes back it is emitted again,
 *   with the next index, so that the scheduler does not take it for a duplicate.
 * - A crawl that fails is retried with backoff; an item that is not valid (not an object, a bad
 *   stream name or type, listed twice) or whose data cannot be hashed (a `BigInt`, a cycle) is in
 *   the crawl's data, which a retry would not change: it fails the source with a
 *   {@linkcode PeriodicItemError}.
 * - A crawl is handed on in batches of `maxBatchItems` (default 1000); only the last batch of a
 *   crawl moves the checkpoint.
 *
 * @module
 */
import type { BatchItem, ObservableSource, Position } from "../core/batch.ts";
import type { CheckpointStore } from "../core/checkpoints.ts";
import { checkInteger, checkNumber, describe, InvalidArgumentError } from "../core/errors.ts";
import { errorText, type RetryOptions } from "../core/failure.ts";
import { utf8Length } from "../core/event.ts";
import { pagedSource, type ReadPage } from "../core/reader.ts";
import { parseStreamName, type StreamName } from "../core/streamName.ts";

/**
 * One item found by a crawl: the stream it is an event of, and its content.
 *
 * @example
 * ```ts
 * import type { PeriodicItem } from "@impel/impel/sources/periodic";
 * const item: PeriodicItem = { stream: "Product-42", data: { name: "Lamp", price: 30 } };
 * ```
 */
export interface PeriodicItem {
  /** The stream, `{category}-{id}`. */
  readonly stream: StreamName;
  /** The content; what is hashed (as JSON) unless `hash` is given. */
  readonly data: unknown;
  /** The event type (default `"Crawled"`). */
  readonly type?: string;
}

/**
 * A crawl listed an item that is not valid, or whose data cannot be hashed: the crawl's own data,
 * which retrying would not change, so the source fails with it. An {@linkcode InvalidArgumentError}
 * whose `field` is `crawl({tranche}) of {source}`.
 *
 * @example
 * ```ts
 * import { PeriodicItemError } from "@impel/impel/sources/periodic";
 * const e = new PeriodicItemError("crawl(0) of prices", "listed Price-1 twice in one crawl");
 * console.log(e.code, e.field); // "InvalidArgument" "crawl(0) of prices"
 * ```
 */
export class PeriodicItemError extends InvalidArgumentError {
  /** Creates the error; `cause` is the error the item caused (the hash's), if any. */
  constructor(field: string, problem: string, cause?: unknown) {
    super(field, problem);
    if (cause !== undefined) this.cause = cause;
  }
}

/**
 * Options of {@linkcode periodicSource}.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * import { type PeriodicSourceOptions, periodicSource } from "@impel/impel/sources/periodic";
 * const options: PeriodicSourceOptions = {
 *   name: "prices",
 *   crawl: () => Promise.resolve([{ stream: "Price-1", data: { eur: 3 } }]),
 *   intervalMs: 60_000,
 *   checkpoints: memoryCheckpoints(),
 *   group: "price-sync",
 * };
 * await periodicSource(options).cancel();
 * ```
 */
export interface PeriodicSourceOptions {
  /** The source's name, in logs and as the checkpoint key's `source`. */
  readonly name: string;
  /** Lists every item of `tranche` as it is now. */
  readonly crawl: (tranche: string, signal: AbortSignal) => Promise<readonly PeriodicItem[]>;
  /** The tranches, each crawled on its own (default `["0"]`). */
  readonly tranches?: readonly string[];
  /**
   * Time from the start of one crawl of a tranche to the start of the next, ms (the next starts
   * at once when a crawl and handing it on take longer).
   */
  readonly intervalMs: number;
  /** The content hash of an item (default: SHA-256 of `JSON.stringify(item.data)`, base64). */
  readonly hash?: (item: PeriodicItem) => string | Promise<string>;
  /** Where to keep when each tranche was last crawled (none: crawl at once on start). */
  readonly checkpoints?: CheckpointStore;
  /** The consumer group for checkpoints (default `"default"`). */
  readonly group?: string;
  /** Largest batch, in items (default 1000). */
  readonly maxBatchItems?: number;
  /** Backoff between retries of a failed crawl (default 100 ms doubling to 30 s). */
  readonly retry?: RetryOptions;
  /** Aborting stops crawling and closes the stream. */
  readonly signal?: AbortSignal;
}

/**
 * Creates a source that re-crawls every tranche each `intervalMs` and emits the items whose
 * content changed since the last crawl (all of them on the first), as described in the module
 * documentation. An item naming no valid stream, or twice in one crawl, or whose data cannot be
 * hashed, fails the source with a {@linkcode PeriodicItemError} (an `InvalidArgumentError`).
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { periodicSource } from "@impel/impel/sources/periodic";
 * const rows = new Map([["1", "Lamp"], ["2", "Desk"]]);
 * const source = periodicSource({
 *   name: "products",
 *   intervalMs: 1000,
 *   crawl: () =>
 *     Promise.resolve([...rows].map(([id, name]) => ({ stream: `Product-${id}`, data: { name } }))),
 * });
 * const sink = streamsSink({ handler: (stream, events) => console.log(stream, events[0].data) });
 * const stop = new AbortController();
 * const running = run(source, sink, { signal: stop.signal });
 * await sink.monitor.awaitCompletion({ tail: true }); // Product-1 { name: "Lamp" }, Product-2 ...
 * stop.abort();
 * await running;
 * ```
 */
export function periodicSource(options: PeriodicSourceOptions): ObservableSource {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with name, crawl and intervalMs");
  }
  const { name, crawl } = options;
  if (typeof crawl !== "function") throw new InvalidArgumentError("crawl", "must be a function");
  const intervalMs = checkNumber("intervalMs", options.intervalMs, 1);
  const hash = options.hash ?? sha256OfData;
  if (typeof hash !== "function") throw new InvalidArgumentError("hash", "must be a function");
  // Per tranche, per stream: the last content hash seen (undefined once the item is no longer
  // crawled) and the stream's next index, kept after the item vanishes so that, if it comes
  // back, its event is not below the write position the scheduler holds for the stream.
  const known = new Map<string, Map<StreamName, { hash: string | undefined; next: number }>>();

  const readPage: ReadPage = async (tranche, position, signal) => {
    const last = position ?? 0n;
    const now = Date.now();
    if (position !== undefined && now < Number(last) + intervalMs) {
      // Not due yet (after a restart): the first crawl is intervalMs after the stored one.
      return { items: [], next: last, isTail: true, readAgainAt: Number(last) + intervalMs };
    }
    const started = BigInt(now) > last ? BigInt(now) : last + 1n;
    const field = `crawl(${tranche}) of ${name}`;
    const found = await crawl(tranche, signal);
    if (!Array.isArray(found)) throw new PeriodicItemError(field, "must resolve to an array");
    // Items are checked before anything is computed from them.
    const streams = new Set<StreamName>();
    for (const item of found) {
      const stream = checkItem(field, item);
      if (streams.has(stream)) {
        throw new PeriodicItemError(field, `listed ${stream} twice in one crawl`);
      }
      streams.add(stream);
    }
    const hashes = await Promise.all(found.map(async (item) => {
      try {
        const h = await hash(item);
        if (typeof h !== "string") {
          throw new TypeError(`hash returned ${describe(h)}, not a string`);
        }
        return h;
      } catch (error) {
        throw new PeriodicItemError(
          field,
          `listed ${item.stream} with data that cannot be hashed: ${errorText(error)}`,
          error,
        );
      }
    }));
    const state = known.get(tranche) ?? new Map();
    const changes: Array<[StreamName, { hash: string | undefined; next: number }]> = [];
    const items: BatchItem[] = [];
    const time = new Date(now);
    found.forEach((item, k) => {
      const stream = item.stream;
      const contentHash = hashes[k];
      const seen = state.get(stream);
      if (seen?.hash === contentHash) return;
      const index = seen?.next ?? 0;
      changes.push([stream, { hash: contentHash, next: index + 1 }]);
      const type = item.type ?? "Crawled";
      const data = item.data ?? null;
      let size: number;
      try {
        size = utf8Length(type) + utf8Length(JSON.stringify(data) ?? "");
      } catch (error) {
        throw new PeriodicItemError(
          field,
          `listed ${stream} with data that is not JSON: ${errorText(error)}`,
          error,
        );
      }
      items.push({
        stream,
        event: {
          index,
          type,
          data,
          meta: { contentHash },
          id: `${stream}@${tranche}/${started}`,
          time,
          size,
        },
      });
    });
    // Nothing is kept of a crawl that failed; a vanished item keeps its next index only.
    for (const [stream, entry] of changes) state.set(stream, entry);
    for (const [stream, entry] of state) {
      if (!streams.has(stream) && entry.hash !== undefined) {
        state.set(stream, { hash: undefined, next: entry.next });
      }
    }
    known.set(tranche, state);
    // Cut into batches, only the last moves the checkpoint: a restart crawls again anyway.
    const positions: Position[] = new Array(items.length).fill(last);
    // The next crawl starts intervalMs after this one started, however long handing it on takes.
    return {
      items,
      positions,
      next: started,
      isTail: true,
      readAgainAt: Number(started) + intervalMs,
    };
  };

  return pagedSource({
    name,
    tranches: options.tranches ?? ["0"],
    readPage,
    checkpoints: options.checkpoints,
    group: options.group,
    tailSleepMs: intervalMs,
    retry: options.retry,
    // A crawl that fails is retried; bad items are in the crawled data, and fail the source.
    isRetriable: (error) => !(error instanceof InvalidArgumentError),
    maxBatchItems: checkInteger("maxBatchItems", options.maxBatchItems ?? 1000, 1),
    signal: options.signal,
  });
}

function checkItem(field: string, item: PeriodicItem): StreamName {
  if (item === null || typeof item !== "object") {
    throw new PeriodicItemError(
      field,
      `must list { stream, data } items, got ${describe(item)}`,
    );
  }
  try {
    parseStreamName(item.stream);
  } catch (error) {
    throw new PeriodicItemError(field, `listed an item with a bad stream name: ${error}`, error);
  }
  if (item.type !== undefined && (typeof item.type !== "string" || item.type.length === 0)) {
    throw new PeriodicItemError(field, `listed ${item.stream} with type ${describe(item.type)}`);
  }
  return item.stream;
}

async function sha256OfData(item: PeriodicItem): Promise<string> {
  const bytes = new TextEncoder().encode(JSON.stringify(item.data ?? null));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  let text = "";
  for (const b of digest) text += String.fromCharCode(b);
  return btoa(text);
}
