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

/** One page read from a tranche. */
export interface Page {
  /** The items read, in order. */
  readonly items: readonly BatchItem[];
  /** The position to resume from after these items (the checkpoint once they are handled). */
  readonly next: Position;
  /** True when the read reached the end of what is currently available. */
  readonly isTail: boolean;
}

/** Reads one page of `tranche` from `position` (`undefined`: from the beginning). */
export type ReadPage = (
  tranche: string,
  position: Position | undefined,
  signal: AbortSignal,
) => Promise<Page>;

/** Options of {@linkcode feedSource}. */
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
  const stop = new AbortController();
  // Readers wait here while the stream's queue is full; pull() lets one through.
  const space: Array<() => void> = [];

  const sleep = (ms: number, tranche?: string) =>
    new Promise<void>((resolve) => {
      if (stop.signal.aborted) return resolve();
      const local = new AbortController();
      const finish = () => {
        clearTimeout(timer);
        stop.signal.removeEventListener("abort", finish);
        local.abort();
        resolve();
      };
      const timer = setTimeout(finish, ms);
      stop.signal.addEventListener("abort", finish);
      if (tranche !== undefined && options.wakeup) {
        options.wakeup(tranche, local.signal).then(finish, () => {});
      }
    });

  async function readTranche(tranche: string, controller: ReadableStreamDefaultController<Batch>) {
    const key: CheckpointKey = { source: name, tranche, group };
    const commit = checkpoints ? (p: Position) => checkpoints.commit(key, p) : undefined;
    let position = startFrom === "checkpoint" && checkpoints
      ? await checkpoints.load(key)
      : undefined;
    let failures = 0;
    let wasTail = false;
    while (!stop.signal.aborted) {
      let page: Page;
      const readStart = performance.now();
      try {
        page = await readPage(tranche, position, stop.signal);
        failures = 0;
      } catch (error) {
        if (stop.signal.aborted) return;
        failures++;
        log.warn("read of {source}/{tranche} from {position} failed (attempt {attempt}): {error}", {
          source: name,
          tranche,
          position: String(position),
          attempt: failures,
          error: errorText(error),
        });
        await sleep(retry.delay(failures));
        continue;
      }
      const readMs = performance.now() - readStart;
      checkPage(name, tranche, page); // a malformed page is a bug, not a transient failure: fail the source
      if (page.items.length > 0 || page.next !== position || page.isTail !== wasTail) {
        while ((controller.desiredSize ?? 0) <= 0 && !stop.signal.aborted) {
          await new Promise<void>((resolve) => space.push(resolve));
        }
        if (stop.signal.aborted) return;
        controller.enqueue({
          tranche,
          items: page.items,
          position: page.next,
          isTail: page.isTail,
          commit,
          readMs,
        });
      }
      position = page.next;
      wasTail = page.isTail;
      if (page.isTail) await sleep(tailSleepMs, tranche);
    }
  }

  return new ReadableStream<Batch>({
    start(controller) {
      for (const tranche of options.tranches) {
        readTranche(tranche, controller).catch((error) => {
          if (stop.signal.aborted) return;
          controller.error(error);
          // An errored stream is not cancelled: stop the other tranches' readers here.
          stop.abort(error);
          for (const release of space.splice(0)) release();
        });
      }
    },
    pull() {
      space.shift()?.();
    },
    cancel() {
      stop.abort();
      for (const release of space.splice(0)) release();
    },
  }, { highWaterMark: 1 });
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
