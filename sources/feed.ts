/**
 * A generic tranche-based source over any paged API: give it `readPage(tranche, position)` and it
 * reads every tranche concurrently from its checkpoint, sleeps at the tail, retries failed reads
 * with backoff, and commits through a checkpoint store.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, BatchItem, Position } from "../core/batch.ts";
import type { CheckpointKey, CheckpointStore } from "../core/checkpoints.ts";
import { checkNumber, describe, InvalidArgumentError } from "../core/errors.ts";
import { backoff, errorText, type RetryOptions } from "../core/failure.ts";
import { type TrancheContext, trancheStream } from "../core/tranches.ts";

/**
 * One page read from a tranche.
 *
 * @example
 * ```ts
 * import type { Page } from "@impel/impel/sources/feed";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }, { type: "Paid", data: {} }], 0);
 *
 * // Pages of the store's log; a position is the log index of the next entry.
 * function readLogPage(position: bigint | undefined): Promise<Page> {
 *   const from = Number(position ?? 0n);
 *   const items = store.readLog(from, from + 100);
 *   const next = from + items.length;
 *   return Promise.resolve({ items, next: BigInt(next), isTail: next === store.head });
 * }
 * const page = await readLogPage(undefined);
 * console.log(page.items.length, page.next, page.isTail); // 2 2n true
 * ```
 */
export interface Page {
  /** The items read, in order. */
  readonly items: readonly BatchItem[];
  /** The position to resume from after these items (the checkpoint once they are handled). */
  readonly next: Position;
  /** True when the read reached the end of what is currently available. */
  readonly isTail: boolean;
}

/**
 * Reads one page of `tranche` from `position` (`undefined`: from the beginning).
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { feedSource, type ReadPage } from "@impel/impel/sources/feed";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * await store.append("Invoice-1", [{ type: "Raised", data: {} }], 0);
 *
 * // One tranche per category, each scanning the store's log and keeping its own entries.
 * const readPage: ReadPage = (tranche, position, _signal) => {
 *   const from = Number(position ?? 0n);
 *   const entries = store.readLog(from, from + 100);
 *   const next = from + entries.length;
 *   const items = entries.filter((e) => e.category === tranche);
 *   return Promise.resolve({ items, next: BigInt(next), isTail: next === store.head });
 * };
 * const source = feedSource({ name: "log", tranches: ["Order", "Invoice"], readPage });
 * const seen: string[] = [];
 * const sink = streamsSink({ handler: (stream) => void seen.push(stream) });
 * const ac = new AbortController();
 * const running = run(source, sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * console.log(seen.sort()); // ["Invoice-1", "Order-1"]
 * ```
 */
export type ReadPage = (
  tranche: string,
  position: Position | undefined,
  signal: AbortSignal,
) => Promise<Page>;

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
export interface FeedSourceOptions {
  /** The source's name in checkpoint keys and logs. */
  readonly name: string;
  /** The tranches to read, each independently. */
  readonly tranches: readonly string[];
  /** Reads a page. */
  readonly readPage: ReadPage;
  /** Where to load and commit checkpoints (none: start from the beginning, commit nothing). */
  readonly checkpoints?: CheckpointStore;
  /** The consumer group for checkpoints (default `"default"`). */
  readonly group?: string;
  /** `"checkpoint"` (default) resumes from the checkpoint; `"start"` ignores it. */
  readonly startFrom?: "checkpoint" | "start";
  /** Pause after a read that reached the tail (default 1000 ms). */
  readonly tailSleepMs?: number;
  /** Backoff between retries of a failed read (default 100 ms doubling to 30 s). */
  readonly retry?: RetryOptions;
  /**
   * Resolves early from the tail sleep when new data may be there (e.g. on a NOTIFY); called with
   * the tranche and a signal that aborts when the sleep ends anyway.
   */
  readonly wakeup?: (tranche: string, signal: AbortSignal) => Promise<void>;
}

/**
 * Creates a source that reads every tranche through `readPage`. Reads of one tranche are
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
export function feedSource(options: FeedSourceOptions): ReadableStream<Batch> {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with name, tranches and readPage");
  }
  const { name, readPage, checkpoints } = options;
  if (typeof name !== "string" || name.length === 0) {
    throw new InvalidArgumentError("name", `must be a non-empty string, got ${describe(name)}`);
  }
  if (!Array.isArray(options.tranches) || options.tranches.length === 0) {
    throw new InvalidArgumentError("tranches", "must be a non-empty array of tranche names");
  }
  for (const t of options.tranches) {
    if (typeof t !== "string" || t.length === 0) {
      throw new InvalidArgumentError("tranches", `must hold non-empty strings, got ${describe(t)}`);
    }
  }
  if (new Set(options.tranches).size !== options.tranches.length) {
    throw new InvalidArgumentError("tranches", "must not repeat a tranche");
  }
  if (typeof readPage !== "function") {
    throw new InvalidArgumentError("readPage", "must be a function");
  }
  const tailSleepMs = checkNumber("tailSleepMs", options.tailSleepMs ?? 1000, 0);
  const retry = backoff(options.retry);
  const group = options.group ?? "default";
  const startFrom = options.startFrom ?? "checkpoint";
  if (startFrom !== "checkpoint" && startFrom !== "start") {
    throw new InvalidArgumentError(
      "startFrom",
      `must be "checkpoint" or "start", got ${describe(startFrom)}`,
    );
  }
  const log = getLogger(["impel", "source", name]);

  const sleep = (ms: number, signal: AbortSignal, tranche?: string) =>
    new Promise<void>((resolve) => {
      if (signal.aborted) return resolve();
      const local = new AbortController();
      const finish = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", finish);
        local.abort();
        resolve();
      };
      const timer = setTimeout(finish, ms);
      signal.addEventListener("abort", finish);
      if (tranche !== undefined && options.wakeup) {
        const wakeup = options.wakeup;
        // A wakeup that throws, synchronously or not, only loses the early wake: the timer stays.
        Promise.resolve().then(() => wakeup(tranche, local.signal)).then(finish, () => {});
      }
    });

  async function readTranche(tranche: string, { signal, enqueue }: TrancheContext) {
    const key: CheckpointKey = { source: name, tranche, group };
    const commit = checkpoints ? (p: Position) => checkpoints.commit(key, p) : undefined;
    let failures = 0;
    // Transient failures (a server restarting) only delay the tranche: logged, retried with backoff.
    const failed = async (what: string, error: unknown) => {
      failures++;
      log.warn("{what} of {source}/{tranche} failed (attempt {attempt}): {error}", {
        what,
        source: name,
        tranche,
        attempt: failures,
        error: errorText(error),
      });
      await sleep(retry.delay(failures), signal);
    };
    let position: Position | undefined;
    while (startFrom === "checkpoint" && checkpoints && !signal.aborted) {
      try {
        position = await checkpoints.load(key);
        failures = 0;
        break;
      } catch (error) {
        if (!signal.aborted) await failed("loading the checkpoint", error);
      }
    }
    // Make the tranche known to the sink before its first read returns, so that waiting for
    // every tranche to reach its tail includes the slow ones. Nothing to commit yet.
    await enqueue({ tranche, items: [], position: position ?? 0n, isTail: false });
    let wasTail = false;
    while (!signal.aborted) {
      let page: Page;
      const readStart = performance.now();
      try {
        page = await readPage(tranche, position, signal);
        failures = 0;
      } catch (error) {
        if (!signal.aborted) await failed(`read from ${position}`, error);
        continue;
      }
      const readMs = performance.now() - readStart;
      checkPage(name, tranche, page); // a malformed page is a bug, not a transient failure: fail the source
      if (page.items.length > 0 || page.next !== position || page.isTail !== wasTail) {
        await enqueue({
          tranche,
          items: page.items,
          position: page.next,
          isTail: page.isTail,
          commit,
          readMs,
        });
        if (signal.aborted) return;
      }
      position = page.next;
      wasTail = page.isTail;
      if (page.isTail) await sleep(tailSleepMs, signal, tranche);
    }
  }

  return trancheStream((context) => {
    for (const tranche of options.tranches) context.spawn(() => readTranche(tranche, context));
  });
}

function checkPage(source: string, tranche: string, page: Page) {
  if (
    page === null || typeof page !== "object" || !Array.isArray(page.items) ||
    typeof page.next !== "bigint" || typeof page.isTail !== "boolean"
  ) {
    throw new InvalidArgumentError(
      `readPage(${tranche}) of ${source}`,
      "must resolve to { items: array, next: bigint, isTail: boolean }",
    );
  }
}
