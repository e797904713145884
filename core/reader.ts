/**
 * The one paged-tranche reader under every polling source (feed, MessageDB, DynamoDB, periodic).
 * A source supplies `readPage(tranche, position)` (and `readTranches()` when tranches come and
 * go); the reader owns everything else:
 *
 * - the start policy: resume from the checkpoint, or from the start, or from the tail
 *   (`startFrom`, `whenNoCheckpoint`), loading the checkpoint with retry; given `readTail`, a
 *   checkpoint beyond the tail is refused with {@linkcode CheckpointPastTailError} (or warned
 *   about with `checkpointPastTail: "warn"`), since reading from it would skip what is written
 *   next. The tail start applies to the tranches there are when the source starts (`tranches`
 *   and the first successful `readTranches`); a tranche found later was made after the start, so
 *   without a checkpoint (or with `startFrom: "tail"`) it is read from its beginning, not from
 *   its tail, which would skip what was written to it before it was found;
 * - the announcement: each tranche's first batch, sent before its first read, is empty, not at
 *   the tail and without `commit`, at the start position (at the tail, with `commit`, when
 *   starting from the tail). It makes the tranche known to the sink, so that waiting for every
 *   tranche's tail also waits for a tranche whose first read is slow. The stream of batches is
 *   the only way the source talks to the sink: the sink never calls back into a source to ask
 *   which tranches it has, so a source can be anything that yields batches;
 * - the tail rule: a batch is sent for a page with items, or one that moves the position, or
 *   one whose tail flag differs from the last one sent (so "at the tail" is said once, and idle
 *   polls do not churn the pipeline);
 * - pages split into batches of at most `maxBatchItems` items when the page gives per-item
 *   positions, each batch checkpointing right after its last item (so that a slow handler
 *   completes, and commits, a small batch long before a whole page);
 * - an optional one-page prefetch while catching up, the tail sleep, and the wake-up that cuts it
 *   short (a NOTIFY, any signal);
 * - retries with backoff ({@linkcode retrying}) of reads and checkpoint loads that fail in a
 *   retriable way (and of parts of a read, through the `retry` of {@linkcode ReadContext}); a
 *   tranche whose reads keep failing shows in `problems()`, `"degraded"` from the first failure
 *   and `"failing"` after a minute, with `since` the time of the first failure of the run of
 *   failures (reset only by a success);
 * - isolation: a failure that is not retried fails the source, unless `isTrancheFailure` says it
 *   is the tranche's own (damaged data of that tranche): then only that tranche stops, shown in
 *   `problems()` as failing, and the others carry on.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, BatchItem, ObservableSource, Position, SourceProblem } from "./batch.ts";
import type { CheckpointKey, CheckpointStore } from "./checkpoints.ts";
import { checkInteger, checkNumber, describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import { type Backoff, backoff, errorText, type RetryOptions } from "./failure.ts";
import { sleep, trancheStream } from "./tranches.ts";

/**
 * One page read from a tranche.
 *
 * @example
 * ```ts
 * import type { Page } from "./reader.ts";
 * const page: Page = { items: [], next: 10n, isTail: true };
 * console.log(page.next, page.isTail); // 10n true
 * ```
 */
export interface Page {
  /** The items read, in order. */
  readonly items: readonly BatchItem[];
  /** The position to resume from after these items (the checkpoint once they are handled). */
  readonly next: Position;
  /** True when the read reached the end of what is currently available. */
  readonly isTail: boolean;
  /**
   * Optional, one per item: the position to resume from right after that item. With them the
   * reader can hand a page on as several smaller batches (`maxBatchItems`).
   */
  readonly positions?: readonly Position[];
  /**
   * Optional, for a page at the tail: when to read again (ms since the epoch), instead of after
   * `tailSleepMs`. A time already past reads again at once; a wake-up still cuts the wait short.
   * The periodic source uses it to crawl `intervalMs` after the start of the last crawl.
   */
  readonly readAgainAt?: number;
}

/**
 * What the reader gives `readPage` besides the position: `retry` runs a part of the read (one of
 * several requests it makes) with the source's retry policy, logged and shown in `problems()`
 * under the tranche like the page read itself, so that a read need not retry the whole page when
 * only one request failed.
 *
 * @example
 * ```ts
 * import type { ReadContext, ReadPage } from "./reader.ts";
 * const readPage: ReadPage = async (_tranche, position, _signal, context?: ReadContext) => {
 *   const body = async () => "body";
 *   const text = context ? await context.retry("reading the body", body) : await body();
 *   return { items: [], next: (position ?? 0n) + BigInt(text.length), isTail: true };
 * };
 * ```
 */
export interface ReadContext {
  /** Runs `fn` until it succeeds or fails in a way the source does not retry. */
  retry<T>(what: string, fn: () => Promise<T>): Promise<T>;
}

/**
 * Reads one page of `tranche` from `position` (`undefined`: from the beginning). `signal`
 * aborts when the source stops; `context` (always given by the reader) retries parts of a read.
 *
 * @example
 * ```ts
 * import type { ReadPage } from "./reader.ts";
 * const readPage: ReadPage = (_tranche, position) =>
 *   Promise.resolve({ items: [], next: position ?? 0n, isTail: true });
 * console.log((await readPage("a", 5n, new AbortController().signal)).next); // 5n
 * ```
 */
export type ReadPage = (
  tranche: string,
  position: Position | undefined,
  signal: AbortSignal,
  context?: ReadContext,
) => Promise<Page>;

/**
 * Where a reader starts: `"checkpoint"` resumes from the stored checkpoint (or per
 * `whenNoCheckpoint` without one), `"start"` reads from the beginning and `"tail"` from the current
 * end, both ignoring any checkpoint.
 *
 * @example
 * ```ts
 * import type { StartFrom } from "./reader.ts";
 * const startFrom: StartFrom = "tail";
 * ```
 */
export type StartFrom = "checkpoint" | "start" | "tail";

/**
 * Options of {@linkcode pagedSource}.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "../checkpoints/memory.ts";
 * import type { PagedSourceOptions } from "./reader.ts";
 * const options: PagedSourceOptions = {
 *   name: "numbers",
 *   tranches: ["0"],
 *   readPage: (_tranche, position) =>
 *     Promise.resolve({ items: [], next: position ?? 0n, isTail: true }),
 *   checkpoints: memoryCheckpoints(),
 *   group: "printer",
 *   tailSleepMs: 500,
 *   retry: { initialDelayMs: 100, maxDelayMs: 5_000 },
 * };
 * ```
 */
export interface PagedSourceOptions {
  /** The source's name, in logs and problems, and the checkpoint key's `source` by default. */
  readonly name: string;
  /** Tranches to read from the start (may be empty when `readTranches` finds them). */
  readonly tranches?: readonly string[];
  /**
   * Lists the tranches there are now; called at start and every `tranchesRefreshMs` (every
   * `tailSleepMs` while it finds none), so that tranches can appear while the source runs.
   */
  readonly readTranches?: (signal: AbortSignal) => Promise<readonly string[]>;
  /** How often `readTranches` is called (default 10 000 ms). */
  readonly tranchesRefreshMs?: number;
  /** Reads a page. */
  readonly readPage: ReadPage;
  /**
   * The position after the last item of a tranche now; needed to start from the tail, and the
   * source's `heads()` when given.
   */
  readonly readTail?: (tranche: string, signal: AbortSignal) => Promise<Position>;
  /** Where to load and commit checkpoints (none: start from the beginning, commit nothing). */
  readonly checkpoints?: CheckpointStore;
  /** The consumer group for checkpoints (default `"default"`). */
  readonly group?: string;
  /** The checkpoint key of a tranche (default `{ source: name, tranche, group }`). */
  readonly checkpointKey?: (tranche: string) => CheckpointKey;
  /**
   * Where to start (default `"checkpoint"`); `"tail"` needs `readTail`. A tranche that
   * `readTranches` finds after its first listing is read from its beginning with `"tail"`.
   */
  readonly startFrom?: StartFrom;
  /**
   * Where `"checkpoint"` starts when nothing is stored (default `"start"`). A tranche that
   * `readTranches` finds after its first listing starts from its beginning either way.
   */
  readonly whenNoCheckpoint?: "start" | "tail";
  /**
   * With `readTail`, what a checkpoint beyond the tail does at start: `"error"` (default) fails
   * the source with {@linkcode CheckpointPastTailError}; `"warn"` logs it and reads from it.
   */
  readonly checkpointPastTail?: "error" | "warn";
  /** Pause after a read that reached the tail (default 1000 ms). */
  readonly tailSleepMs?: number;
  /** Backoff between retries of a failed read or checkpoint load (default 100 ms doubling to 30 s). */
  readonly retry?: RetryOptions;
  /** Which failures are retried (default: all); others fail the source. */
  readonly isRetriable?: (error: unknown) => boolean;
  /**
   * Which failures that are not retried end only their tranche (a damaged tranche, such as a
   * corrupt index partition), not the source: that tranche stops being read, is logged as an
   * error and shows in `problems()` as `"failing"` with the error until the source stops, and
   * the other tranches carry on (a fault policy's `maxSourceFailureMs` can act on it). Default:
   * none; every such failure fails the source.
   */
  readonly isTrancheFailure?: (error: unknown) => boolean;
  /** Turns a failure that is not retried into the error the source fails with. */
  readonly finalError?: (error: unknown, tranche: string) => unknown;
  /**
   * Resolves early from the tail sleep when new data may be there (e.g. on a NOTIFY); called with
   * the tranche and a signal that aborts when the sleep ends anyway.
   */
  readonly wakeup?: (tranche: string, signal: AbortSignal) => Promise<void>;
  /** Read the next page while handing on the current one, when catching up (default false). */
  readonly prefetch?: boolean;
  /** Largest batch, in items, for pages that give `positions` (default: a page is a batch). */
  readonly maxBatchItems?: number;
  /** Marks every batch `gapsAreFinal` (sources that read an ordered log). */
  readonly gapsAreFinal?: boolean;
  /**
   * Acquires what reading needs for as long as it runs (a LISTEN connection): called before any
   * tranche is read; the function it returns is called once every tranche reader has ended.
   */
  readonly open?: (signal: AbortSignal) => Promise<(() => Promise<void>) | void>;
  /** Aborting stops reading and closes the stream. */
  readonly signal?: AbortSignal;
}

/**
 * A stored checkpoint lies beyond the tranche's current tail: reading from it would skip the
 * events written next, up to that position.
 *
 * @example
 * ```ts
 * import { CheckpointPastTailError } from "./reader.ts";
 * const e = new CheckpointPastTailError("messagedb", "Order", 150n, 101n);
 * console.log(e.code, e.checkpoint - e.tail); // "CheckpointPastTail" 49n
 * ```
 */
export class CheckpointPastTailError extends ImpelError {
  /** The tranche concerned. */
  readonly tranche: string;
  /** The stored checkpoint. */
  readonly checkpoint: Position;
  /** The tranche's tail when the source started. */
  readonly tail: Position;
  /** Creates the error for `tranche` of `source`. */
  constructor(source: string, tranche: string, checkpoint: Position, tail: Position) {
    super(
      "CheckpointPastTail",
      `the checkpoint of ${source}/${tranche} is ${checkpoint}, beyond the tail at ${tail}: ` +
        `reading from it would skip what is written next; reset the checkpoint ` +
        `(or pass checkpointPastTail: "warn" to read from it anyway)`,
    );
    this.tranche = tranche;
    this.checkpoint = checkpoint;
    this.tail = tail;
  }
}

/**
 * Options of {@linkcode retrying}.
 *
 * @example
 * ```ts
 * import { backoff } from "./failure.ts";
 * import type { RetryingOptions } from "./reader.ts";
 * const options: RetryingOptions = {
 *   backoff: backoff({ initialDelayMs: 10 }),
 *   signal: new AbortController().signal,
 *   isRetriable: (e) => e instanceof TypeError,
 * };
 * ```
 */
export interface RetryingOptions {
  /** The delay before attempt `attempt + 1` (as `backoff()` of `core/failure.ts` builds it). */
  readonly backoff: { delay(attempt: number): number };
  /** Aborting ends the retries: the promise rejects with the signal's reason. */
  readonly signal: AbortSignal;
  /** Which failures are retried (default: all). */
  readonly isRetriable?: (error: unknown) => boolean;
  /** Told of each failure that will be retried, before the wait. */
  readonly onFailure?: (error: unknown, attempt: number, delayMs: number) => void;
  /** Told when an attempt succeeds after failures. */
  readonly onRecovery?: (attempts: number) => void;
}

/** A server's "not before": the `retryAfterMs` a failure carries (a parsed Retry-After), or 0. */
const retryAfterOf = (error: unknown): number => {
  const ms = (error as { retryAfterMs?: unknown } | null)?.retryAfterMs;
  return typeof ms === "number" && Number.isFinite(ms) && ms > 0 ? ms : 0;
};

/**
 * Runs `fn` until it succeeds, waiting by `backoff` between attempts, and at least the
 * `retryAfterMs` a failure carries (a server's Retry-After, already capped by who parsed it). A
 * failure that is not retriable, or any failure once `signal` has aborted, rejects at once; an
 * abort during a wait rejects with the signal's reason.
 *
 * @example
 * ```ts
 * import { backoff } from "./failure.ts";
 * import { retrying } from "./reader.ts";
 * let calls = 0;
 * const value = await retrying(
 *   () => ++calls < 3 ? Promise.reject(new TypeError("reset")) : Promise.resolve(calls),
 *   { backoff: backoff({ initialDelayMs: 1 }), signal: new AbortController().signal },
 * );
 * console.log(value); // 3
 * ```
 */
export async function retrying<T>(fn: () => Promise<T>, options: RetryingOptions): Promise<T> {
  const { signal, isRetriable = () => true } = options;
  for (let attempt = 1;; attempt++) {
    if (signal.aborted) throw signal.reason;
    try {
      const result = await fn();
      if (attempt > 1) options.onRecovery?.(attempt);
      return result;
    } catch (error) {
      if (signal.aborted || !isRetriable(error)) throw error;
      const delay = Math.max(options.backoff.delay(attempt), retryAfterOf(error));
      options.onFailure?.(error, attempt, delay);
      await sleep(delay, signal);
    }
  }
}

/** How long a tranche's reads may keep failing before it shows as failing, not degraded. */
const FAILING_AFTER_MS = 60_000;

interface Trouble {
  what: string;
  /** When the first of the failures began; kept while any of them is still being retried. */
  readonly since: number;
  attempts: number;
  error: unknown;
  /** Retried operations of the tranche that have failed and not succeeded or ended since. */
  failing: number;
}

interface Settings {
  readonly name: string;
  readonly tranches: readonly string[];
  readonly tranchesRefreshMs: number;
  readonly tailSleepMs: number;
  readonly backoff: Backoff;
  readonly group: string;
  readonly startFrom: StartFrom;
  readonly whenNoCheckpoint: "start" | "tail";
  readonly checkpointPastTail: "error" | "warn";
  readonly maxBatchItems: number;
}

/**
 * Creates a source that reads every tranche through `options.readPage`, as described in this
 * module's documentation. Reads of one tranche are sequential; tranches are read concurrently,
 * and all wait while the consumer is behind. The stream's `problems()` names the tranches whose
 * reads keep failing, and says so while `readTranches` has found nothing to read.
 *
 * @example
 * ```ts
 * import { pagedSource } from "./reader.ts";
 * const source = pagedSource({
 *   name: "empty",
 *   tranches: ["0"],
 *   readPage: (_tranche, position) =>
 *     Promise.resolve({ items: [], next: position ?? 0n, isTail: true }),
 * });
 * const reader = source.getReader();
 * console.log((await reader.read()).value?.tranche); // "0": the announcement
 * await reader.cancel();
 * ```
 */
export function pagedSource(options: PagedSourceOptions): ObservableSource {
  const settings = checkOptions(options);
  const { name, checkpoints, readPage, readTail, wakeup } = options;
  // Log lines name a tranche {source}/{group}/{tranche}: with leases that is the lease lines'
  // {scope}/{unit} and `impel leases list`'s SCOPE and UNIT, one name for a slot everywhere.
  const log = getLogger(["impel", "source", name]);
  const isRetriable = options.isRetriable ?? (() => true);
  const finalError = options.finalError ?? ((error: unknown) => error);
  const keyOf = options.checkpointKey ??
    ((tranche: string) => ({ source: name, tranche, group: settings.group }));
  const gapsAreFinal = options.gapsAreFinal === true ? { gapsAreFinal: true } : {};
  const troubles = new Map<string, Trouble>();
  // Tranches stopped by a failure of their own (isTrancheFailure), with it and since when.
  const stopped = new Map<string, { error: unknown; since: number }>();
  let nothingToRead: number | undefined;

  /**
   * `fn` retried per the source's policy; failures are logged and shown as problems. Several
   * operations of one tranche may fail at once (the event reads of one page): the tranche's
   * trouble lasts, with the `since` of the first failure, until none of them is failing.
   */
  const retry = async <T>(
    tranche: string,
    what: string,
    signal: AbortSignal,
    fn: () => Promise<T>,
  ): Promise<T> => {
    let failed = false;
    try {
      return await retrying(fn, {
        backoff: settings.backoff,
        signal,
        isRetriable,
        onFailure(error, attempt, delay) {
          let trouble = troubles.get(tranche);
          if (trouble === undefined) {
            trouble = { what, since: Date.now(), attempts: 0, error, failing: 0 };
            troubles.set(tranche, trouble);
          }
          if (!failed) trouble.failing++;
          failed = true;
          trouble.what = what;
          trouble.attempts = attempt;
          trouble.error = error;
          log.warn(
            "{what} of {source}/{group}/{tranche} failed (attempt {attempt}), retrying in {delay} ms: {error}",
            {
              what,
              source: name,
              group: settings.group,
              tranche,
              attempt,
              delay: Math.round(delay),
              error: errorText(error),
            },
          );
        },
        onRecovery(attempts) {
          log.info("{what} of {source}/{group}/{tranche} succeeded after {attempts} attempts", {
            what,
            source: name,
            group: settings.group,
            tranche,
            attempts,
          });
        },
      });
    } finally {
      // Succeeded, or ended (stopped, or failed for good, which fails the source or the read).
      const trouble = failed ? troubles.get(tranche) : undefined;
      if (trouble !== undefined && --trouble.failing <= 0) troubles.delete(tranche);
    }
  };

  /**
   * The tail sleep: `tailSleepMs` (or until `until`, ms since the epoch), or until the wake-up
   * resolves, or until stopped.
   */
  const tailSleep = async (tranche: string, signal: AbortSignal, until?: number) => {
    if (signal.aborted) return;
    const ms = until === undefined ? settings.tailSleepMs : Math.max(0, until - Date.now());
    if (ms === 0) return;
    // Ends the sleep early; aborted once the sleep is over, which the wake-up is told of too.
    const early = new AbortController();
    const end = () => early.abort();
    signal.addEventListener("abort", end, { once: true });
    if (wakeup) {
      // A wakeup that throws, synchronously or not, only loses the early wake: the timer stays.
      Promise.resolve().then(() => wakeup(tranche, early.signal)).then(end, () => {});
    }
    await sleep(ms, early.signal);
    signal.removeEventListener("abort", end);
    end();
  };

  /**
   * Where `tranche` starts. A tranche `found` after the first listing was made after the source
   * started: a tail start would skip what was written to it before it was found, so it starts
   * from its beginning where the policy says tail.
   */
  async function start(tranche: string, key: CheckpointKey, signal: AbortSignal, found: boolean) {
    let how: StartFrom = settings.startFrom === "tail" && found ? "start" : settings.startFrom;
    if (how === "checkpoint") {
      const stored = checkpoints
        ? await retry(tranche, "loading the checkpoint", signal, () => checkpoints.load(key))
        : undefined;
      if (stored !== undefined) {
        if (readTail) {
          const tail = await retry(
            tranche,
            "reading the tail",
            signal,
            () => readTail(tranche, signal),
          );
          if (stored > tail) {
            const error = new CheckpointPastTailError(name, tranche, stored, tail);
            if (settings.checkpointPastTail === "error") throw error;
            log.warn("{message}; reading from it as checkpointPastTail says", {
              message: error.message,
            });
          }
        }
        return { position: stored as Position | undefined, how };
      }
      how = found ? "start" : settings.whenNoCheckpoint;
    }
    if (how === "start") return { position: undefined, how };
    const tail = await retry(tranche, "reading the tail", signal, () => readTail!(tranche, signal));
    return { position: tail as Position | undefined, how };
  }

  async function readTranche(
    tranche: string,
    signal: AbortSignal,
    enqueue: (batch: Batch) => Promise<void>,
    found: boolean,
  ): Promise<void> {
    try {
      await readFrom(tranche, signal, enqueue, found);
    } catch (error) {
      if (signal.aborted) return; // stopping: whatever was in flight does not matter
      if (options.isTrancheFailure?.(error) === true) {
        stopped.set(tranche, { error, since: Date.now() });
        log.error(
          "{source}/{group}/{tranche} stopped reading, the other tranches carry on: {error}",
          { source: name, group: settings.group, tranche, error: errorText(error) },
        );
        return;
      }
      throw finalError(error, tranche);
    }
  }

  async function readFrom(
    tranche: string,
    signal: AbortSignal,
    enqueue: (batch: Batch) => Promise<void>,
    found: boolean,
  ): Promise<void> {
    const key = keyOf(tranche);
    const commit = checkpoints ? (p: Position) => checkpoints.commit(key, p) : undefined;
    let { position, how } = await start(tranche, key, signal, found);
    log.info("reading {source}/{group}/{tranche} from {position} ({how}{found})", {
      source: name,
      group: settings.group,
      tranche,
      position: position === undefined ? "the start" : String(position),
      how,
      found: found ? ", found after the source started" : "",
    });
    const context: ReadContext = {
      retry: (what, fn) => retry(tranche, what, signal, fn),
    };
    let wasTail = how === "tail";
    if (wasTail) {
      // Starting at the tail, that position is committed straight away.
      await enqueue({
        tranche,
        items: [],
        position: position!,
        isTail: true,
        commit,
        ...gapsAreFinal,
      });
      await tailSleep(tranche, signal);
    } else {
      // Make the tranche known to the sink before its first read returns. Nothing to commit yet.
      await enqueue({
        tranche,
        items: [],
        position: position ?? 0n,
        isTail: false,
        ...gapsAreFinal,
      });
    }
    const read = (from: Position | undefined) => {
      const started = performance.now();
      const pending = retry(
        tranche,
        `read from ${from ?? "the start"}`,
        signal,
        () => readPage(tranche, from, signal, context),
      ).then((page) => ({
        page,
        readMs: performance.now() - started,
      }));
      pending.catch(() => {}); // awaited below; an abandoned prefetch must not be unhandled
      return pending;
    };
    let next = signal.aborted ? undefined : read(position);
    while (next !== undefined && !signal.aborted) {
      const { page, readMs } = await next;
      checkPage(name, tranche, page); // a malformed page is a bug, not a transient failure
      const ahead = options.prefetch === true && !page.isTail;
      // Catching up, the next page is read while this one is handed on (one page ahead, no more).
      next = ahead ? read(page.next) : undefined;
      const moved = page.items.length > 0 || page.next !== position || page.isTail !== wasTail;
      if (moved) await emit(tranche, page, readMs, commit, enqueue);
      if (signal.aborted) return;
      position = page.next;
      wasTail = page.isTail;
      if (page.isTail) {
        await tailSleep(tranche, signal, page.readAgainAt);
        if (signal.aborted) return;
      }
      next ??= read(position);
    }
  }

  /** Hands a page on: whole, or in batches of `maxBatchItems` when it gives per-item positions. */
  async function emit(
    tranche: string,
    page: Page,
    readMs: number,
    commit: ((position: Position) => Promise<void>) | undefined,
    enqueue: (batch: Batch) => Promise<void>,
  ): Promise<void> {
    const { items, positions } = page;
    const max = settings.maxBatchItems;
    if (items.length <= max || positions === undefined) {
      return enqueue({
        tranche,
        items,
        position: page.next,
        isTail: page.isTail,
        commit,
        readMs,
        ...gapsAreFinal,
      });
    }
    for (let from = 0; from < items.length; from += max) {
      const to = Math.min(items.length, from + max);
      const last = to === items.length;
      await enqueue({
        tranche,
        items: items.slice(from, to),
        // The last batch takes the page's position, which may lie beyond its last item.
        position: last ? page.next : positions[to - 1],
        isTail: last && page.isTail,
        commit,
        // One read, counted once.
        ...(from === 0 ? { readMs } : {}),
        ...gapsAreFinal,
      });
    }
  }

  const launched = new Set<string>();
  const stream = trancheStream(async ({ signal, enqueue, spawn }) => {
    const close = await options.open?.(signal);
    const started = new Map<string, Promise<void>>();
    // Tranches launched after the first listing are new since the start (see start()).
    let listed = false;
    const launch = (tranche: string) => {
      if (started.has(tranche)) return;
      const found = listed;
      launched.add(tranche);
      started.set(tranche, spawn(() => readTranche(tranche, signal, enqueue, found)));
    };
    try {
      settings.tranches.forEach(launch);
      const list = options.readTranches;
      while (list !== undefined && !signal.aborted) {
        let found: readonly string[];
        try {
          found = await retry("*", "listing the tranches", signal, () => list(signal));
        } catch (error) {
          if (signal.aborted) break;
          throw finalError(error, "*");
        }
        checkTranches(`readTranches() of ${name}`, found, true).forEach(launch);
        listed = true;
        nothingToRead = started.size > 0 ? undefined : nothingToRead ?? Date.now();
        // Until a tranche exists, look as often as a reader at the tail would.
        await sleep(started.size === 0 ? settings.tailSleepMs : settings.tranchesRefreshMs, signal);
      }
    } finally {
      await Promise.all(started.values());
      await close?.().catch((error) =>
        log.warn("closing {source} failed: {error}", { source: name, error: errorText(error) })
      );
    }
  }, { signal: options.signal });

  const problems = (): readonly SourceProblem[] => {
    const now = Date.now();
    const out: SourceProblem[] = [];
    for (const [tranche, t] of troubles) {
      const failing = now - t.since >= FAILING_AFTER_MS;
      out.push({
        severity: failing ? "failing" : "degraded",
        reason: `${t.what} of ${name}/${tranche} failing (${t.attempts} attempts): ${
          errorText(t.error)
        }`,
        since: t.since,
        ...(tranche === "*" ? {} : { tranche }),
      });
    }
    for (const [tranche, { error, since }] of stopped) {
      out.push({
        severity: "failing",
        reason: `${name}/${tranche} stopped reading: ${errorText(error)}`,
        since,
        tranche,
      });
    }
    if (nothingToRead !== undefined) {
      out.push({
        severity: "degraded",
        reason: `${name} has no tranches to read yet`,
        since: nothingToRead,
      });
    }
    return out;
  };
  // Every tranche there is now (listed afresh, so that one made since is waited for too).
  const heads = async (): Promise<ReadonlyMap<string, Position>> => {
    const signal = options.signal ?? new AbortController().signal;
    const names = new Set([...settings.tranches, ...launched]);
    if (options.readTranches) { for (const t of await options.readTranches(signal)) names.add(t); }
    const positions = new Map<string, Position>();
    for (const tranche of names) positions.set(tranche, await readTail!(tranche, signal));
    return positions;
  };
  return Object.assign(stream, {
    problems,
    ...(readTail === undefined ? {} : { heads }),
    ...(options.group === undefined ? {} : { group: options.group }),
    sourceName: name,
  });
}

function checkOptions(options: PagedSourceOptions): Settings {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with name, tranches and readPage");
  }
  const { name } = options;
  if (typeof name !== "string" || name.length === 0) {
    throw new InvalidArgumentError("name", `must be a non-empty string, got ${describe(name)}`);
  }
  if (options.readTranches !== undefined && typeof options.readTranches !== "function") {
    throw new InvalidArgumentError("readTranches", "must be a function");
  }
  const discover = options.readTranches !== undefined;
  const tranches = options.tranches === undefined && discover
    ? []
    : checkTranches("tranches", options.tranches, discover);
  if (typeof options.readPage !== "function") {
    throw new InvalidArgumentError("readPage", "must be a function");
  }
  const tailSleepMs = checkNumber("tailSleepMs", options.tailSleepMs ?? 1000, 0);
  const retry = backoff(options.retry);
  const startFrom = options.startFrom ?? "checkpoint";
  const starts = options.readTail === undefined
    ? ["checkpoint", "start"]
    : ["checkpoint", "start", "tail"];
  if (!starts.includes(startFrom)) {
    throw new InvalidArgumentError(
      "startFrom",
      `must be ${starts.map((s) => `"${s}"`).join(" or ")}, got ${describe(startFrom)}`,
    );
  }
  const whenNoCheckpoint = options.whenNoCheckpoint ?? "start";
  const whens = starts.slice(1);
  if (!whens.includes(whenNoCheckpoint)) {
    throw new InvalidArgumentError(
      "whenNoCheckpoint",
      `must be ${whens.map((s) => `"${s}"`).join(" or ")}, got ${describe(whenNoCheckpoint)}`,
    );
  }
  const checkpointPastTail = options.checkpointPastTail ?? "error";
  if (checkpointPastTail !== "error" && checkpointPastTail !== "warn") {
    throw new InvalidArgumentError(
      "checkpointPastTail",
      `must be "error" or "warn", got ${describe(checkpointPastTail)}`,
    );
  }
  for (
    const f of [
      "readTail",
      "isRetriable",
      "isTrancheFailure",
      "finalError",
      "wakeup",
      "open",
      "checkpointKey",
    ] as const
  ) {
    if (options[f] !== undefined && typeof options[f] !== "function") {
      throw new InvalidArgumentError(f, "must be a function");
    }
  }
  return {
    name,
    tranches,
    tranchesRefreshMs: checkNumber("tranchesRefreshMs", options.tranchesRefreshMs ?? 10_000, 1),
    tailSleepMs,
    backoff: retry,
    group: options.group ?? "default",
    startFrom,
    whenNoCheckpoint,
    checkpointPastTail,
    maxBatchItems: options.maxBatchItems === undefined
      ? Infinity
      : checkInteger("maxBatchItems", options.maxBatchItems, 1),
  };
}

/** Checks a list of tranche names: an array of distinct non-empty strings (non-empty unless `mayBeEmpty`). */
function checkTranches(field: string, tranches: unknown, mayBeEmpty: boolean): readonly string[] {
  if (!Array.isArray(tranches) || (tranches.length === 0 && !mayBeEmpty)) {
    throw new InvalidArgumentError(field, "must be a non-empty array of tranche names");
  }
  for (const t of tranches) {
    if (typeof t !== "string" || t.length === 0) {
      throw new InvalidArgumentError(field, `must hold non-empty strings, got ${describe(t)}`);
    }
  }
  if (field === "tranches" && new Set(tranches).size !== tranches.length) {
    throw new InvalidArgumentError(field, "must not repeat a tranche");
  }
  return tranches;
}

function checkPage(source: string, tranche: string, page: Page) {
  if (
    page === null || typeof page !== "object" || !Array.isArray(page.items) ||
    typeof page.next !== "bigint" || typeof page.isTail !== "boolean" ||
    (page.readAgainAt !== undefined && !Number.isFinite(page.readAgainAt)) ||
    (page.positions !== undefined &&
      (!Array.isArray(page.positions) || page.positions.length !== page.items.length))
  ) {
    throw new InvalidArgumentError(
      `readPage(${tranche}) of ${source}`,
      "must resolve to { items: array, next: bigint, isTail: boolean, positions?: one bigint per item, readAgainAt?: number }",
    );
  }
}
